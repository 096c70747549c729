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
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg
from psycopg import sql

from alembic_common.core import locking
from alembic_common.core.events import Applied, RolledBack
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


class Column(NamedTuple):
    name: str
    type: str
    not_null: bool
    has_default: bool


class Shape(NamedTuple):
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
    """Give a table made elsewhere (or by an older release) the extra columns we write. A
    default is set after the column is added, so the rows already there keep NULL (not
    known) rather than the adopting role or anything else that was never true of them."""
    table = qualified(schema, TABLE)
    for name, ddl in EXTRAS.items():
        if name not in present:
            kind, _, default = ddl.partition(" DEFAULT ")
            column = sql.Identifier(name)
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(table, column, sql.SQL(kind))
            )
            if default:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                        table, column, sql.SQL(default)
                    )
                )


def ensure(
    conn: psycopg.Connection[Any],
    service: str,
    schema: str,
    *,
    exists: bool,
    columns: set[str],
    owner: str | None,
) -> None:
    """Before the first step: make the history table, or give one made elsewhere our extra
    columns and, unclaimed, claim it for ``service`` (as the state read found it)."""
    if not exists:
        create(conn, service, schema)
        return
    add_extras(conn, schema, columns)
    if owner is None:
        claim(conn, service, schema)


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


class Guard(NamedTuple):
    """The lock a step must still hold when it records itself (None: nothing to check)."""

    service: str
    pid: int


# The lock session is alive and still holds the run lock: its owner key cannot be had.
# (A session's advisory locks go the moment it dies, so a new holder can never meet a
# step that passed this check; see locking.py.) Should it be had, it is this step's
# transaction's until it rolls back.
_HELD = "NOT pg_catalog.pg_try_advisory_xact_lock({}, {})"


def _lock_lost(guard: Guard, version: int) -> LockLostError:
    return LockLostError(
        f"{guard.service}: the migration lock was lost during version {version} (its session "
        f"ended: a timeout, a restart or pg_terminate_backend); version {version} was rolled back",
        service=guard.service,
        version=version,
    )


def _driver(ctx: MigrationContext) -> psycopg.Connection[Any]:
    """The psycopg connection under an online migration context's SQLAlchemy one."""
    assert ctx.connection is not None
    raw = ctx.connection.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


def _dml_kind(construct: Any, schema: str) -> str | None:
    """insert, update or delete when ``construct`` writes Alembic's version table."""
    from sqlalchemy import Delete, Insert, Update

    table = getattr(construct, "table", None)
    name, where = getattr(table, "name", None), getattr(table, "schema", None)
    if name != ALEMBIC_TABLE or where not in (None, schema):
        return None
    kinds = ((Insert, "insert"), (Update, "update"), (Delete, "delete"))
    return next((kind for cls, kind in kinds if isinstance(construct, cls)), None)


def version_sql(kind: str, table: str, old: str | None, new: str | None) -> str:
    """Alembic's version-table statement for one step of a linear history, as text."""
    old, new = (r.replace("'", "''") if r else r for r in (old, new))
    if kind == "insert":
        return f"INSERT INTO {table} (version_num) VALUES ('{new}')"
    if kind == "delete":
        return f"DELETE FROM {table} WHERE version_num = '{old}'"
    return f"UPDATE {table} SET version_num = '{new}' WHERE version_num = '{old}'"


def create_version_table(conn: psycopg.Connection[Any], schema: str) -> None:
    """Alembic's own ``alembic_version`` table, as Alembic makes it."""
    conn.execute(sql.SQL(_CREATE_ALEMBIC).format(table=qualified(schema, ALEMBIC_TABLE)))


def step_write(
    conn: psycopg.Connection[Any],
    table: str,
    version: int,
    *,
    up: bool,
    description: str,
    duration_ms: int | str,
    checksum: str | None,
    held: str = "",
) -> str:
    """A step's ``schema_migrations`` write as literal SQL (``held``: a lock check it must
    pass, see ``Guard``; ``duration_ms``: a number, or an SQL expression of one): the row
    in, going up; out, going down."""
    if not up:
        return f"DELETE FROM {table} WHERE version = {version}" + (f" AND {held}" if held else "")
    values = (
        str(version),
        sql.Literal(description).as_string(conn),
        str(duration_ms),
        sql.Literal(checksum).as_string(conn),
    )
    return (
        f"INSERT INTO {table} (version, description, duration_ms, checksum) SELECT "
        + ", ".join(values)
        + (f" WHERE {held}" if held else "")
    )


@dataclass
class _Write:
    """One step's history write: SQL text with literal values, which may hold several
    statements (the step lock, the write, the version schemas' rebuild)."""

    version: int
    duration_ms: int
    text: str
    counted: int  # which statement of ``text`` is the history write, from 0
    changed: int | None = None  # the rows it changed, once sent


@dataclass
class _Ride:
    """A history write waiting for Alembic's version-table statement of its step, which
    it takes over: the same statement, as literal SQL, sent with the write."""

    write: _Write
    conn: psycopg.Connection[Any]
    kind: str  # what Alembic sends for the step: insert, update or delete
    version_sql: str


class _Rows(NamedTuple):
    """What Alembic reads of its version-table statement's result."""

    rowcount: int


class Recorder:
    """Alembic's ``on_version_apply`` hook: it mirrors each step into ``schema_migrations``.

    The history write rides on Alembic's own version-table statement: once a step's body
    has run (``ready``), its write is composed, and when Alembic sends the step's
    ``alembic_version`` write (``version_write``), both go as literal SQL in one round
    trip, in the step's transaction. The hook then checks that exactly one history row
    changed. Without a guard the write is plain; with one, the step key is taken first
    and the write happens only while the lock session still holds the run lock. A write
    that could not ride (offline, or a version statement other than a linear step's) is
    sent by the hook itself.

    ``on_step`` receives one event per step (``Applied`` or ``RolledBack``, with its
    duration);
    ``views`` gives the SQL that rebuilds the version schemas for the version a step
    leaves (see releases.py), run in the step's transaction after its history row.
    """

    def __init__(
        self,
        schema: str,
        *,
        guard: Guard | None = None,
        descriptions: Mapping[int, str],
        checksums: Mapping[int, str] | None = None,
        on_step: Callable[[Applied | RolledBack], None] | None = None,
        views: Callable[[int | None], str | None] | None = None,
        finish: Callable[[], str | None] | None = None,
    ) -> None:
        self.schema, self.guard, self.descriptions = schema, guard, descriptions
        self.checksums, self.on_step, self.views = checksums or {}, on_step, views
        self.finish = finish
        self.table = qualified(schema, TABLE)
        self.pending: _Ride | None = None
        self.mark = time.perf_counter()
        self._parts = self._statements()

    def _statements(self) -> tuple[str, str]:
        """The fixed parts of every step's write: the statement before it (the step lock)
        and the lock check that ends it."""
        lock, held = "", ""
        if self.guard is not None:
            key = locking.step_key(self.guard.service)
            lock = f"SELECT pg_catalog.pg_advisory_xact_lock({key[0]}, {key[1]});\n"
            held = _HELD.format(*locking.owner_key(self.guard.pid))
        return lock, held

    def _compose(self, step: MigrationInfo, context: psycopg.Connection[Any]) -> _Write:
        (revision,) = step.up_revision_ids
        version = int(revision)
        duration_ms = round((time.perf_counter() - self.mark) * 1000)
        lock, held = self._parts
        write = step_write(
            context,
            self.table.as_string(),
            version,
            up=step.is_upgrade,
            description=self.descriptions.get(version, f"revision {revision}"),
            duration_ms=duration_ms,
            checksum=self.checksums.get(version),
            held=held,
        )
        text = lock + write
        rebuild = self.views(left_at(step)) if self.views is not None else None
        if rebuild is not None:
            text += ";\n" + rebuild
        ended = self.finish() if self.finish is not None else None
        if ended is not None:
            text += ";\n" + ended  # a step that committed in parts is whole now
        return _Write(version, duration_ms, text, 1 if lock else 0)

    def ready(self, step: MigrationInfo, ctx: MigrationContext) -> None:
        """A step's body has run: compose its history write, to travel with Alembic's
        version-table statement, which comes next."""
        self.pending = None
        if ctx.as_sql or ctx.connection is None or step.is_stamp or len(step.down_revision_ids) > 1:
            return  # offline, a stamp or a merge (not a linear step): the hook writes
        raw = _driver(ctx)
        (above,), below = step.up_revision_ids, step.down_revision_ids
        old, new = (below[0] if below else None), above
        if not step.is_upgrade:
            old, new = new, old
        kind = "insert" if old is None else "delete" if new is None else "update"
        table = qualified(ctx.version_table_schema or self.schema, ctx.version_table)
        statement = version_sql(kind, table.as_string(raw), old, new)
        self.pending = _Ride(self._compose(step, raw), raw, kind, statement)

    def version_write(self, construct: Any) -> _Rows | None:
        """Alembic sends ``construct``: when it is the pending step's version-table write,
        send it, as literal SQL, with the history write in one round trip and give Alembic
        its row count; otherwise None, and Alembic sends its statement itself."""
        ride = self.pending
        if ride is None or ride.write.changed is not None:
            return None
        if _dml_kind(construct, self.schema) != ride.kind:
            return None
        cursor = ride.conn.execute(f"{ride.version_sql};\n{ride.write.text}")
        ride.write.changed = cursor.set_result(1 + ride.write.counted).rowcount
        return _Rows(cursor.set_result(0).rowcount)

    def _render_plan(self, ctx: MigrationContext, step: MigrationInfo, versions: list[int]) -> None:
        """Offline mode: the history writes of ``versions`` and the version schemas'
        rebuild, as SQL in the plan."""
        for version in versions if step.is_upgrade else versions[::-1]:
            described = self.descriptions.get(version, f"revision {version:04d}")
            _render(
                ctx, self.schema, version, described if step.is_upgrade else "", step.is_upgrade
            )
        rebuild = self.views(left_at(step)) if self.views is not None else None
        if rebuild is not None:
            from sqlalchemy import text

            ctx.execute(text(rebuild.replace(":", "\\:")))

    def _stamp(self, ctx: MigrationContext, step: MigrationInfo) -> None:
        """``alembic stamp``: each version it marks applied gets its row, each it marks
        not applied loses it, so both tables still agree. The rows have no duration and
        no checksum: nothing of theirs ran."""
        upper, lower = step.up_revision_ids, step.down_revision_ids
        if len(upper) != 1 or len(lower) > 1:
            return  # not a move along one line of history
        top, bottom = int(upper[0]), int(lower[0]) if lower else 0
        if ctx.as_sql:
            versions = [v for v in sorted(self.descriptions) if bottom < v <= top]
            self._render_plan(ctx, step, versions)
            return
        self.settle(ctx, left_at(step), top)

    def settle(self, ctx: MigrationContext, at: int | None, version: int) -> None:
        """Make the history hold exactly the versions up to ``at`` (where a stamp, or the
        ``alembic_version`` a ``stamp --purge`` left, puts the database): add those that
        are missing, remove any above. ``version`` names the stamp if the lock was lost."""
        conn = _driver(ctx)
        lock, held = self._parts
        if self.guard is not None:  # the same step key and lock check as a step's write
            found = conn.execute(f"{lock}SELECT {held}").set_result(1).fetchone()
            if not (found and found[0]):
                raise _lock_lost(self.guard, version)
        kept = [v for v in sorted(self.descriptions) if at is not None and v <= at]
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE %s::pg_catalog.int4 IS NULL OR version > %s").format(
                self.table
            ),
            [at, at],
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (version, description) SELECT * FROM ROWS FROM"
                " (pg_catalog.unnest(%s::pg_catalog.int4[]),"
                " pg_catalog.unnest(%s::pg_catalog.text[]))"
                " ON CONFLICT (version) DO NOTHING"
            ).format(self.table),
            [kept, [self.descriptions[v] for v in kept]],
        )
        rebuild = self.views(at) if self.views is not None else None
        if rebuild is not None:
            conn.execute(rebuild)

    def __call__(
        self, *, ctx: MigrationContext, step: MigrationInfo, heads: set[str], **_: Any
    ) -> None:
        if step.is_stamp:
            self.pending = None
            self._stamp(ctx, step)
            self.mark = time.perf_counter()
            return
        (revision,) = step.up_revision_ids
        version = int(revision)
        ride, self.pending = self.pending, None
        write = ride.write if ride is not None else None
        if ctx.as_sql:
            self._render_plan(ctx, step, [version])
            duration_ms = round((time.perf_counter() - self.mark) * 1000)
        else:
            raw = _driver(ctx)
            if write is None or write.version != version or write.changed is None:
                write = self._compose(step, raw)  # it could not ride: send it now
                write.changed = raw.execute(write.text).set_result(write.counted).rowcount
            if write.changed != 1:
                if self.guard is not None:
                    raise _lock_lost(self.guard, version)
                raise StateError(
                    f"schema_migrations disagrees with alembic_version at version {version}: "
                    f"expected to change 1 row, changed {write.changed}; run 'status' to see both",
                    version=version,
                )
            duration_ms = write.duration_ms
        if self.on_step is not None:
            made = Applied if step.is_upgrade else RolledBack
            self.on_step(made(version=version, duration_ms=duration_ms))
        self.mark = time.perf_counter()


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
