"""A step that commits in parts, stopped part-way: recorded, shown, finished or undone.

Most steps are one transaction: they apply whole or not at all. A step that calls the
safe helpers (a batched backfill, a constraint validated in its own transaction, an
index built CONCURRENTLY) commits what it did so far at each of them. Each such commit
also writes one row here, in the same transaction, so the row is exactly as durable as
the part: ``_migrate_in_progress(version, direction, parts, started_at, updated_at)``.
The step's final transaction, which records the version, drops the table (at most one
step is ever part-way: one run at a time holds the lock, and a run starts no other step
while one is), so a database that is not part-way looks exactly like one that never was.

A step stopped part-way lies between two versions, whichever way it was going. ``up``
finishes it; ``down`` undoes it. When the run goes the other way than the stopped one,
``turn`` first moves the recorded version across the step, in one transaction, so the
step is run again in the run's own direction from where it stands: every part of such a
step is written to be repeated, from any state its other direction leaves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from alembic_common.online.backfill import (
    PROGRESS_TABLE as BACKFILL_TABLE,  # stale once its step ends
)

TABLE = "_migrate_in_progress"

_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    version INTEGER PRIMARY KEY,
    direction TEXT NOT NULL CHECK (direction IN ('up', 'down')),
    parts INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
)"""


class InProgress(NamedTuple):
    """A step that committed some of its parts and not its version."""

    version: int
    direction: str  # the way it was going: 'up' or 'down'
    parts: int  # parts committed by the last run that worked on it
    started_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "direction": self.direction,
            "parts": self.parts,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    def describe(self) -> str:
        """One sentence on where the step stands and how to finish or undo it."""
        if self.direction == "up":
            going, ways = (
                "applying",
                "'up' finishes it from where it stopped, 'down' undoes what it did",
            )
        else:
            going, ways = "undoing", "'down' finishes undoing it, 'up' applies it again"
        return (
            f"version {self.version} stopped part-way while {going} it: {self.parts} of its "
            f"parts had committed and stay; {ways}"
        )


def _table(schema: str, name: str = TABLE) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def read_sql(schema: str) -> sql.Composed:
    """The part-way step, if any (for a snapshot that has checked the table exists)."""
    return sql.SQL(
        "SELECT version, direction, parts, started_at, updated_at FROM {} ORDER BY version"
    ).format(_table(schema))


def read(conn: psycopg.Connection[Any], schema: str) -> InProgress | None:
    """The step recorded part-way in ``schema``, or None."""
    name = f"{sql.Identifier(schema).as_string(conn)}.{TABLE}"
    found = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL", [name]).fetchone()
    if not (found and found[0]):
        return None
    try:
        row = conn.execute(read_sql(schema)).fetchone()
    except psycopg.errors.UndefinedTable:  # its step finished meanwhile: not part-way
        if not conn.autocommit:
            conn.rollback()
        return None
    return InProgress(*row) if row else None


def mark_sql(schema: str, version: int, direction: str, first: bool) -> str:
    """SQL recording one more committed part of ``version`` (literal, for ``op.execute``)."""
    table = _table(schema).as_string(None)
    parts = "1" if first else f"{table}.parts + 1"
    return (
        _CREATE.format(table=table) + f";\nINSERT INTO {table} (version, direction, parts) VALUES"
        f" ({int(version)}, '{'up' if direction == 'up' else 'down'}', 1)"
        f" ON CONFLICT (version) DO UPDATE SET direction = EXCLUDED.direction,"
        f" parts = {parts}, updated_at = pg_catalog.now()"
    )


def finish_sql(schema: str) -> str:
    """SQL run in a part-way step's final transaction: it is part-way no more, and no
    backfill progress of it may be resumed by a later run."""
    return (
        f"DROP TABLE IF EXISTS {_table(schema).as_string(None)};\n"
        f"DROP TABLE IF EXISTS {_table(schema, BACKFILL_TABLE).as_string(None)}"
    )


def turn_sql(
    schema: str, step: InProgress, below: str | None, above: str, description: str
) -> list[sql.Composed]:
    """Statements that move the recorded version across a part-way step, for a run going
    the other way: ``below`` and ``above`` are the revisions on either side of it."""
    from alembic_common.core.history import ALEMBIC_TABLE
    from alembic_common.core.history import TABLE as HISTORY

    versions = _table(schema, ALEMBIC_TABLE)
    history = _table(schema, HISTORY)
    progress = _table(schema)
    moves: list[sql.Composed] = []
    if step.direction == "up":  # recorded below it; the run undoes it from above
        moves.append(
            sql.SQL("INSERT INTO {} (version, description) VALUES ({}, {})").format(
                history, sql.Literal(step.version), sql.Literal(description)
            )
        )
        moves.append(_move(versions, below, above))
        turned = "down"
    else:  # recorded above it; the run applies it again from below
        moves.append(
            sql.SQL("DELETE FROM {} WHERE version = {}").format(history, sql.Literal(step.version))
        )
        moves.append(_move(versions, above, below))
        turned = "up"
    moves.append(sql.SQL("DROP TABLE IF EXISTS {}").format(_table(schema, BACKFILL_TABLE)))
    moves.append(
        sql.SQL("UPDATE {} SET direction = {}, updated_at = pg_catalog.now()").format(
            progress, sql.Literal(turned)
        )
    )
    return moves


def _move(table: sql.Composed, old: str | None, new: str | None) -> sql.Composed:
    if old is None:
        return sql.SQL("INSERT INTO {} (version_num) VALUES ({})").format(table, sql.Literal(new))
    if new is None:
        return sql.SQL("DELETE FROM {} WHERE version_num = {}").format(table, sql.Literal(old))
    return sql.SQL("UPDATE {} SET version_num = {} WHERE version_num = {}").format(
        table, sql.Literal(new), sql.Literal(old)
    )
