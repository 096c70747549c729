"""The platform's history table, ``schema_migrations``: its shape, its owner and each step's row.

Alembic keeps only the current head in ``alembic_version``; this module keeps the
per-version history beside it, written by Alembic's ``on_version_apply`` hook inside
each step's own transaction, so a migration and its row commit or roll back together.

Both tables live in one configured schema (``public`` unless the service's
``alembic.ini`` says ``version_table_schema``) and are always named with it, never found
through the ``search_path``. The table's comment records which service owns the
database, so a run for another service is refused before it changes anything.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from alembic_common import locking
from alembic_common.errors import LockLostError, StateError

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext, MigrationInfo

TABLE = "schema_migrations"
ALEMBIC_TABLE = "alembic_version"
# Tables the toolkit owns; autogenerate and schema comparisons leave them alone.
OWN_TABLES = frozenset({TABLE, ALEMBIC_TABLE})
# The seed's three columns exactly, plus welcome extras; a legacy table gets the extras.
EXTRAS = {
    "duration_ms": "INTEGER",
    "applied_by": "TEXT DEFAULT current_user",
    "checksum": "TEXT",  # of what the step ran (see checksums.py); NULL: not verified
}
_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    duration_ms INTEGER,
    applied_by TEXT DEFAULT current_user,
    checksum TEXT
)"""
_CREATE_ALEMBIC = (
    "CREATE TABLE {table} (version_num VARCHAR(32) NOT NULL,"
    " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)
# Column -> the types it may have. A table that does not fit is refused, never patched.
_REQUIRED = {
    "version": ("integer",),
    "description": ("text", "character varying"),
    "applied_at": ("timestamp without time zone", "timestamp with time zone"),
}
_EXTRA_TYPES = {
    "duration_ms": ("integer", "bigint"),
    "applied_by": ("text", "character varying"),
    "checksum": ("text", "character varying"),
}
_OWNER = re.compile(r"^migrate: history of the ([a-z][a-z0-9_]*) service$")


def qualified(schema: str, table: str) -> sql.Composed:
    """``"schema"."table"``, quoted: version tables are never looked up through search_path."""
    return sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(table)])


def regclass_name(schema: str, table: str) -> str:
    """The same name as text for ``to_regclass``."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))


def owner_comment(service: str) -> str:
    return f"migrate: history of the {service} service"


def owner_of(comment: str | None) -> str | None:
    """The service a table comment names as the owner (None: unclaimed)."""
    match = _OWNER.match(comment or "")
    return match.group(1) if match else None


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    has_default: bool


@dataclass(frozen=True)
class Shape:
    """The columns and primary key of an existing ``schema_migrations``."""

    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]


def shape_problem(shape: Shape) -> str | None:
    """Why an existing ``schema_migrations`` cannot be used as it is (None: it can)."""
    by_name = {c.name: c for c in shape.columns}
    missing = [name for name in _REQUIRED if name not in by_name]
    if missing:
        return f"schema_migrations has no {' or '.join(missing)} column"
    for name, types in {**_REQUIRED, **_EXTRA_TYPES}.items():
        column = by_name.get(name)
        if column is not None and column.type.split("(")[0] not in types:
            return f"schema_migrations.{name} is {column.type}, not {' or '.join(types)}"
    if shape.primary_key != ("version",):
        return "schema_migrations has no primary key on version"
    unfillable = [
        c.name
        for c in shape.columns
        if c.not_null and not c.has_default and c.name not in ("version", "description")
    ]
    if unfillable:
        return (
            f"schema_migrations has NOT NULL column(s) without a default that this toolkit "
            f"cannot fill: {', '.join(unfillable)}"
        )
    return None


def create_sql(schema: str) -> str:
    """The CREATE statement of ``schema_migrations``, as text (offline plans)."""
    return _CREATE.format(table=regclass_name(schema, TABLE))


def create(conn: psycopg.Connection[Any], service: str, schema: str) -> None:
    """Create ``schema_migrations`` (claimed by ``service``) if it does not exist."""
    table = qualified(schema, TABLE)
    conn.execute(sql.SQL(_CREATE).format(table=table))
    claim(conn, service, schema)


def claim(conn: psycopg.Connection[Any], service: str, schema: str) -> None:
    """Record ``service`` as the owner of the database's history."""
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            qualified(schema, TABLE), sql.Literal(owner_comment(service))
        )
    )


def add_extras(conn: psycopg.Connection[Any], schema: str, present: set[str]) -> None:
    """Give a table made elsewhere (or by an older release) the extra columns we write."""
    for name, ddl in EXTRAS.items():
        if name not in present:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    qualified(schema, TABLE), sql.Identifier(name), sql.SQL(ddl)
                )
            )


def accept(conn: psycopg.Connection[Any], schema: str, sums: Mapping[int, str]) -> None:
    """Record that changed steps are accepted as they are now (their new checksums)."""
    with conn.transaction():
        for version, checksum in sums.items():
            conn.execute(
                sql.SQL("UPDATE {} SET checksum = %s WHERE version = %s").format(
                    qualified(schema, TABLE)
                ),
                [checksum, version],
            )


def stamp(
    conn: psycopg.Connection[Any], service: str, schema: str, shape: Shape, revision: str
) -> None:
    """Adopt a legacy history in one transaction: extras, owner, and ``alembic_version``.

    Nothing is run again and no row is rewritten; the caller has checked the shape.
    """
    with conn.transaction():
        add_extras(conn, schema, {c.name for c in shape.columns})
        claim(conn, service, schema)
        conn.execute(sql.SQL(_CREATE_ALEMBIC).format(table=qualified(schema, ALEMBIC_TABLE)))
        conn.execute(
            sql.SQL("INSERT INTO {} (version_num) VALUES (%s)").format(
                qualified(schema, ALEMBIC_TABLE)
            ),
            [revision],
        )


# --- the bridge: one row per step, in the step's own transaction -------------------------


@dataclass(frozen=True)
class Guard:
    """The lock a step must still hold when it records itself (None: nothing to check)."""

    service: str
    pid: int


_HELD = sql.SQL(
    """EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
       WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.pid = %(pid)s
         AND l.classid = %(classid)s::pg_catalog.oid AND l.objid = %(objid)s::pg_catalog.oid
         AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                           WHERE d.datname = pg_catalog.current_database()))"""
)


def _write(
    raw: psycopg.Connection[Any],
    statement: sql.Composed,
    params: dict[str, Any],
    guard: Guard | None,
) -> int:
    """Run one history write on the step's connection; return the rows it changed.

    With a guard, the step key is taken first and the write only happens while the lock
    session still holds the run lock: both travel in one round trip (a pipeline).
    """
    if guard is None:
        return raw.execute(statement, params).rowcount
    key = locking.step_key(guard.service)
    with raw.pipeline():
        raw.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s, %s)", key)
        cursor = raw.execute(
            statement, {**params, "pid": guard.pid, **locking.lock_oids(guard.service)}
        )
    return cursor.rowcount


def _lock_lost(guard: Guard, version: int) -> LockLostError:
    return LockLostError(
        f"{guard.service}: the migration lock was lost during version {version} (its session "
        f"ended: a timeout, a restart or pg_terminate_backend); version {version} was rolled back",
        service=guard.service,
        version=version,
    )


Recorder = Callable[..., None]


def make_recorder(
    schema: str,
    *,
    guard: Guard | None = None,
    descriptions: Mapping[int, str],
    checksums: Mapping[int, str] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    views: Callable[[int | None], str | None] | None = None,
) -> Recorder:
    """An ``on_version_apply`` hook that mirrors each step into ``schema_migrations``.

    ``on_step`` receives one small event per step (version, direction, duration);
    ``views`` gives the SQL that rebuilds the version schemas for the version a step
    leaves (see releases.py), run in the step's transaction after its history row.
    """
    table = qualified(schema, TABLE)
    held = sql.Composed([sql.SQL(" WHERE "), _HELD]) if guard else sql.Composed([])
    insert = (
        sql.SQL(
            "INSERT INTO {} (version, description, duration_ms, checksum)"
            " SELECT %(version)s, %(description)s, %(duration_ms)s, %(checksum)s"
        ).format(table)
        + held
    )
    delete = sql.SQL("DELETE FROM {} WHERE version = %(version)s").format(table) + (
        sql.Composed([sql.SQL(" AND "), _HELD]) if guard else sql.Composed([])
    )
    mark = [time.perf_counter()]

    def record(*, ctx: MigrationContext, step: MigrationInfo, heads: set[str], **_: Any) -> None:
        duration_ms = round((time.perf_counter() - mark[0]) * 1000)
        (revision,) = step.up_revision_ids
        version = int(revision)
        upgrade = step.is_upgrade
        description = descriptions.get(version, f"revision {revision}") if upgrade else ""
        if ctx.as_sql:
            _render(ctx, schema, version, description, upgrade)
        else:
            assert ctx.connection is not None
            raw = ctx.connection.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            params = {
                "version": version,
                "description": description,
                "duration_ms": duration_ms,
                "checksum": (checksums or {}).get(version),
            }
            changed = _write(raw, insert if upgrade else delete, params, guard)
            if changed != 1:
                if guard is not None:
                    raise _lock_lost(guard, version)
                raise StateError(
                    f"schema_migrations disagrees with alembic_version at version {version}: "
                    f"expected to change 1 row, changed {changed}; run 'status' to see both",
                    version=version,
                )
        rebuild = views(left_at(step)) if views is not None else None
        if rebuild is not None:
            if ctx.as_sql:
                from sqlalchemy import text

                ctx.execute(text(rebuild.replace(":", "\\:")))
            else:
                assert ctx.connection is not None
                driver = ctx.connection.connection.driver_connection
                assert isinstance(driver, psycopg.Connection)
                driver.execute(rebuild)
        if on_step is not None:
            action = "applied" if upgrade else "rolled_back"
            on_step({"action": action, "version": version, "duration_ms": duration_ms})
        mark[0] = time.perf_counter()

    return record


def left_at(step: MigrationInfo) -> int | None:
    """The version a step leaves the database at."""
    if step.is_upgrade:
        (revision,) = step.up_revision_ids
        return int(revision)
    below = step.down_revision_ids
    return int(below[0]) if below else None


def _render(ctx: MigrationContext, schema: str, version: int, description: str, up: bool) -> None:
    """Offline mode: show the history write in the plan, with literal values."""
    from sqlalchemy import text

    name = f"{schema}.{TABLE}" if re.fullmatch(r"[a-z_][a-z0-9_]*", schema) else None
    name = name or '"' + schema.replace('"', '""') + f'".{TABLE}'
    if up:
        statement = text(
            f"INSERT INTO {name} (version, description) VALUES (:version, :description)"
        ).bindparams(version=version, description=description)
    else:
        statement = text(f"DELETE FROM {name} WHERE version = :version").bindparams(version=version)
    ctx.execute(statement)
