"""What a database holds (read with plain psycopg) and what that means against the code.

``read`` is the only query; ``assess`` is a pure function, so every decision about
pending, unknown, legacy, foreign and inconsistent states is made in one place and
tested as data. Both version tables are read in the service's configured schema, by
their qualified names, with ``pg_catalog`` functions only: a hostile ``search_path``
cannot make a database look migrated.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from alembic_common.core.history import (
    ALEMBIC_TABLE,
    TABLE,
    Column,
    Shape,
    owner_of,
    qualified,
    regclass_name,
    shape_problem,
)
from alembic_common.errors import StateError
from alembic_common.online import partial
from alembic_common.online.partial import InProgress

# A revision id as this toolkit writes it: four or more ASCII digits.
REVISION = re.compile(r"[0-9]{4,}")

# to_regclass looks names up in the newest catalog, which may be ahead of the snapshot the
# other reads use (a table another runner created a moment ago, its columns not yet
# visible): a table counts only when its pg_class row is visible in that same snapshot.
# A fresh backend pays for every catalog a query plans on, so the probe touches each once:
# pg_class for the three tables, pg_description for the comment, pg_attribute for the
# history's columns, each marked when it is one of the primary key's (pg_index: its key
# columns, not those it only INCLUDEs).
_PROBE = """
SELECT COALESCE(pg_catalog.to_regclass({alembic}) = ANY (found.oids), false),
       COALESCE(pg_catalog.to_regclass({history}) = ANY (found.oids), false),
       (SELECT d.description FROM pg_catalog.pg_description d
         WHERE d.objoid = pg_catalog.to_regclass({history}) AND d.objsubid = 0
           AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass),
       (SELECT pg_catalog.array_agg(pg_catalog.json_build_array(
                   a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                   a.attnotnull, a.atthasdef,
                   COALESCE(a.attnum = ANY ((i.indkey::pg_catalog.int2[])[0:i.indnkeyatts - 1]), false))
                   ORDER BY a.attnum)
          FROM pg_catalog.pg_attribute a
          LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
         WHERE a.attrelid = pg_catalog.to_regclass({history})
           AND a.attnum > 0 AND NOT a.attisdropped),
       COALESCE(pg_catalog.to_regclass({partial}) = ANY (found.oids), false)
  FROM (SELECT pg_catalog.array_agg(c.oid) AS oids
          FROM pg_catalog.pg_class c
         WHERE c.oid = ANY (ARRAY[pg_catalog.to_regclass({alembic}),
                                  pg_catalog.to_regclass({history}),
                                  pg_catalog.to_regclass({partial})])) AS found
"""


class Recorded(NamedTuple):
    """One ``schema_migrations`` row (a tuple: a history holds thousands of them)."""

    version: int
    description: str
    applied_at: datetime | None
    checksum: str | None = None  # of what the step ran, when it was recorded


class DbState(NamedTuple):
    """The two version tables as found."""

    alembic_table: bool
    history_table: bool
    heads: tuple[str, ...]
    recorded: dict[int, Recorded]
    owner: str | None  # the service the history table's comment names
    shape: Shape | None  # the history table's columns, when it exists
    in_progress: InProgress | None = None  # a step stopped part-way (partial.py)


def read(conn: psycopg.Connection[Any], schema: str = "public") -> DbState:
    """Read ``alembic_version`` and ``schema_migrations`` without taking any lock of note."""
    try:
        return _read(conn, schema)
    except psycopg.errors.InsufficientPrivilege as exc:
        if not conn.autocommit:
            conn.rollback()
        user = conn.info.user
        raise StateError(
            f"the role {user!r} may not read the version tables in schema {schema!r} "
            f"({str(exc).splitlines()[0]}); grant it SELECT on {schema}.alembic_version "
            f"and {schema}.schema_migrations"
        ) from None


def _read(conn: psycopg.Connection[Any], schema: str) -> DbState:
    names = {
        "alembic": regclass_name(schema, ALEMBIC_TABLE),
        "history": regclass_name(schema, TABLE),
        "partial": regclass_name(schema, partial.TABLE),
    }
    # One snapshot for both tables: a step committing between two reads would otherwise
    # show alembic_version at one version and schema_migrations at the next. Its BEGIN
    # travels with the catalog probe and its COMMIT with the reads of both tables: two
    # round trips for the whole state (a fleet's look makes one per target).
    snapshot = conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
    try:
        return _read_tables(conn, schema, names, snapshot)
    finally:
        if snapshot and conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("COMMIT")


def _read_tables(
    conn: psycopg.Connection[Any], schema: str, names: dict[str, str], snapshot: bool
) -> DbState:
    probe = sql.SQL(_PROBE).format(**{k: sql.Literal(v) for k, v in names.items()})
    if snapshot:
        # search_path again, for the transaction: a pooled connection (another service's
        # database, read through PgBouncer) has no session setting of ours.
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET LOCAL search_path TO pg_catalog;\n"
        probe = sql.Composed([sql.SQL(begin), probe])
    row = conn.execute(probe).set_result(-1).fetchone()
    assert row is not None
    alembic_table, history_table, comment, columns, part_way = row
    shape = None
    history_read: sql.Composable | None = None
    if history_table:
        columns = columns or ()
        key = tuple(name for name, *_, in_key in columns if in_key)
        shape = Shape(tuple(Column(*c[:4]) for c in columns), key)
        if shape_problem(shape) is None:
            checksum = "checksum" if "checksum" in {c.name for c in shape.columns} else "NULL"
            history_read = sql.SQL(
                "SELECT version, description, applied_at, {} FROM {} ORDER BY version"
            ).format(sql.SQL(checksum), qualified(schema, TABLE))
    alembic_read = (
        sql.SQL("SELECT version_num::text FROM {}").format(qualified(schema, ALEMBIC_TABLE))
        if alembic_table
        else None
    )
    reads = [r for r in (alembic_read, history_read) if r is not None]
    heads: tuple[str, ...] = ()
    recorded: dict[int, Recorded] = {}
    if reads:
        ending = [sql.SQL("COMMIT")] if snapshot and not part_way else []
        cursor = conn.execute(sql.SQL(";\n").join([*reads, *ending]))
        if alembic_read is not None:
            heads = tuple(str(r[0]) for r in cursor.set_result(0).fetchall())
        if history_read is not None:
            rows = cursor.set_result(len(reads) - 1).fetchall()  # a history runs to thousands
            recorded = {r[0]: Recorded(r[0], r[1] or "", r[2], r[3]) for r in rows}
    in_progress = None
    if part_way:
        # The step's last transaction may drop the table between the look and the read (names
        # resolve against the newest catalog, whatever the snapshot): then nothing is part-way.
        conn.execute("SAVEPOINT migrate_part_way")
        try:
            found = conn.execute(partial.read_sql(schema)).fetchone()
        except psycopg.errors.UndefinedTable:
            conn.execute("ROLLBACK TO SAVEPOINT migrate_part_way")
            found = None
        else:
            conn.execute("RELEASE SAVEPOINT migrate_part_way")
        in_progress = InProgress(*found) if found else None
    if not conn.autocommit:
        conn.rollback()
    return DbState(
        alembic_table, history_table, heads, recorded, owner_of(comment), shape, in_progress
    )


class Assessment(NamedTuple):
    """The database's state read against the versions this code knows."""

    current: int | None
    head: int | None
    applied: list[int]
    pending: list[int]
    unknown: list[int]
    legacy: bool
    problem: str | None
    owner: str | None = None  # who the history says owns the database (None: unclaimed)

    @property
    def ahead(self) -> bool:
        return bool(self.unknown)

    @property
    def consistent(self) -> bool:
        return self.problem is None


def _shown(value: str) -> str:
    """A value read from the database, safe to put in one line."""
    text = value if len(value) <= 40 else value[:37] + "..."
    return repr(text)


def _current(heads: tuple[str, ...], disk: list[int]) -> tuple[int | None, str | None]:
    """The version ``alembic_version`` names, or why it names none this code can use."""
    if not heads:
        return None, None
    if len(heads) > 1:
        listed = ", ".join(_shown(h) for h in heads[:5])
        return None, f"alembic_version holds {len(heads)} rows ({listed}); it must hold one"
    head = heads[0]
    canonical = REVISION.fullmatch(head) is not None and head == f"{int(head):04d}"
    if canonical and (int(head) in disk or int(head) > max(disk, default=0)):
        return int(head), None
    known = f"{disk[0]:04d}..{disk[-1]:04d}" if disk else "none"
    return None, (
        f"alembic_version holds {_shown(head)}, which is not a revision of this service "
        f"(its revisions are {known})"
    )


def _gap(disk: list[int], recorded: set[int]) -> list[int]:
    top = max(recorded, default=0)
    return [v for v in disk if v <= top and v not in recorded]


def assess(
    disk: list[int],
    state: DbState,
    service: str | None = None,
    descriptions: dict[int, str] | None = None,
) -> Assessment:
    """Compare the database's two tables with each other and with the versions on disk.

    ``service`` and ``descriptions`` (the code's, by version) let it tell a database that
    belongs to another service from one that is simply behind.
    """
    head = max(disk) if disk else None
    recorded = set(state.recorded)
    problem = shape_problem(state.shape) if state.shape is not None else None
    legacy = not state.alembic_table and bool(recorded)
    current, head_problem = _current(state.heads, disk)
    problem = problem or head_problem
    if state.alembic_table and not state.heads and recorded and problem is None:
        problem = "alembic_version is empty but schema_migrations has rows"
    if legacy:
        current = max(recorded)
    known = set(disk)
    unknown = sorted((recorded | ({current} if current is not None else set())) - known)
    if legacy and problem is None and not unknown and _gap(disk, recorded):
        problem = (
            f"the legacy schema_migrations skips version(s) {_gap(disk, recorded)} below "
            f"{max(recorded)}; refusing to adopt a history with holes"
        )
    if problem is None and not legacy and not unknown:
        expected = {v for v in disk if current is not None and v <= current}
        if recorded != expected:
            missing, extra = sorted(expected - recorded), sorted(recorded - expected)
            problem = f"alembic_version is at {current} but schema_migrations " + ", ".join(
                part
                for part in (
                    f"lacks {missing}" if missing else "",
                    f"also has {extra}" if extra else "",
                )
                if part
            )
    if service is not None:
        problem = _foreign(service, state, legacy, descriptions or {}) or problem
    if legacy or problem:
        applied = sorted(recorded & known)
    else:
        applied = [v for v in disk if current is not None and v <= current]
    if legacy:
        pending = [v for v in disk if v not in recorded]
    else:
        pending = [v for v in disk if current is None or v > current]
    return Assessment(current, head, applied, pending, unknown, legacy, problem, state.owner)


def _foreign(
    service: str, state: DbState, legacy: bool, descriptions: dict[int, str]
) -> str | None:
    """Why this database is another service's, if it is (None: it is ours or unclaimed)."""
    if state.owner is not None:
        if state.owner == service:
            return None
        return (
            f"this database belongs to the {state.owner} service, not {service}; "
            f"give {service} its own database ({service.upper()}_DATABASE_URL)"
        )
    if legacy or not state.recorded or not descriptions:
        return None
    # Unclaimed history written by an older release of this toolkit: its descriptions
    # are the docstrings of the service that wrote it.
    if any(descriptions.get(v) == r.description for v, r in state.recorded.items()):
        return None
    first = min(state.recorded)
    return (
        f"this database's history is not {service}'s (version {first} is "
        f"{_shown(state.recorded[first].description)}); is it another service's database?"
    )


def mismatched(state: DbState, descriptions: dict[int, str]) -> list[int]:
    """Applied versions whose recorded description differs from the code's docstring."""
    return sorted(
        v
        for v, r in state.recorded.items()
        if v in descriptions and " ".join(r.description.split()) != descriptions[v]
    )


def refuse(service: str, found: Assessment) -> None:
    """Stop when the database is ahead of the code, another service's, or its tables disagree."""
    if found.unknown:
        raise StateError(
            f"{service}: the database is at version {max(found.unknown)} but this code knows "
            f"only up to {found.head}; unknown versions {found.unknown}. Deploy the newer release "
            "(or roll back with it) instead",
            service=service,
            version=max(found.unknown),
        )
    if found.problem:
        raise StateError(f"{service}: {found.problem}; nothing was changed", service=service)
