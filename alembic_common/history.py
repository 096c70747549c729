"""The platform's history table, ``schema_migrations``: one row per applied migration.

Alembic keeps only the current head in ``alembic_version``; this module keeps the
per-version history beside it, written by Alembic's ``on_version_apply`` hook inside
each step's own transaction, so a migration and its row commit or roll back together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alembic_common.errors import StateError

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext, MigrationInfo
    from sqlalchemy import Connection

TABLE = "schema_migrations"
# The seed's three columns exactly, plus two that are welcome extras.
CREATE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    duration_ms INTEGER,
    applied_by TEXT DEFAULT current_user
)"""
EXTRA_COLUMNS = {"duration_ms": "INTEGER", "applied_by": "TEXT DEFAULT current_user"}
# Tables the toolkit owns; autogenerate must never propose to drop them.
OWN_TABLES = frozenset({TABLE, "alembic_version"})

Recorder = Callable[..., None]


def _table() -> Any:
    from sqlalchemy import Column, Integer, MetaData, Table, Text

    return Table(
        TABLE,
        MetaData(),
        Column("version", Integer, primary_key=True),
        Column("description", Text, nullable=False),
        Column("duration_ms", Integer),
    )


def ensure_table(conn: Connection) -> None:
    """Create ``schema_migrations`` if missing; add our extra columns to a legacy one."""
    from sqlalchemy import text

    conn.exec_driver_sql(CREATE)
    present = set(
        conn.execute(
            text(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t)"
                " AND attnum > 0 AND NOT attisdropped"
            ),
            {"t": TABLE},
        ).scalars()
    )
    for name, ddl in EXTRA_COLUMNS.items():
        if name not in present:
            conn.exec_driver_sql(f"ALTER TABLE {TABLE} ADD COLUMN {name} {ddl}")


def _run(ctx: MigrationContext, statement: Any, expect: int | None) -> None:
    """Execute on the step's connection, or render it in offline mode; check the row count."""
    if ctx.as_sql:
        ctx.execute(statement)
        return
    assert ctx.connection is not None
    result = ctx.connection.execute(statement.execution_options(preserve_rowcount=True))
    if expect is not None and result.rowcount != expect:
        raise StateError(
            f"schema_migrations disagrees with alembic_version: expected to change {expect} row, "
            f"changed {result.rowcount}; run 'status' to see both"
        )


def make_recorder(on_step: Callable[[dict[str, Any]], None] | None = None) -> Recorder:
    """An ``on_version_apply`` hook that mirrors each step into ``schema_migrations``.

    ``on_step`` receives a small event dict per step (version, direction, duration).
    """
    from sqlalchemy.dialects.postgresql import insert

    from alembic_common.services import describe, version_of

    table = _table()
    mark = [time.perf_counter()]

    def record(*, ctx: MigrationContext, step: MigrationInfo, heads: set[str], **_: Any) -> None:
        now = time.perf_counter()
        duration_ms = round((now - mark[0]) * 1000)
        if step.is_stamp:
            keep = {
                version_of(rev.revision): describe(rev)
                for rev in step.revision_map.iterate_revisions(tuple(heads), "base")
            }
            for version, description in sorted(keep.items()):
                stmt = insert(table).values(version=version, description=description)
                _run(ctx, stmt.on_conflict_do_nothing(index_elements=["version"]), None)
            _run(ctx, table.delete().where(table.c.version.not_in(list(keep))), None)
            event = {"action": "stamp", "versions": sorted(keep)}
        elif step.is_upgrade:
            (revision,) = step.up_revision_ids
            version = version_of(revision)
            values: dict[str, Any] = {"description": describe(step.up_revision)}
            if not ctx.as_sql:  # a plan has no duration to record
                values["duration_ms"] = duration_ms
            _run(ctx, insert(table).values(version=version, **values), 1)
            event = {"action": "applied", "version": version, "duration_ms": duration_ms}
        else:
            (revision,) = step.up_revision_ids
            version = version_of(revision)
            _run(ctx, table.delete().where(table.c.version == version), 1)
            event = {"action": "rolled_back", "version": version, "duration_ms": duration_ms}
        if on_step is not None:
            on_step(event)
        mark[0] = time.perf_counter()

    return record
