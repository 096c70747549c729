"""Batched, resumable data migrations for big tables (call ``backfill`` from ``upgrade()``).

Each batch is one statement that updates a key range *and* records how far it got, so
the batch and its progress commit together: a run killed mid-way resumes at the next
key on the following ``up``, never redoing or skipping a row. Batch sizes adapt to a
target time per batch, so no writer waits on a row lock for longer than about that.
Progress goes to the run's callback (the CLI's progress line and ``--events``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alembic_common.ddl import SET_BACKFILL

PROGRESS_TABLE = "_migrate_backfill"
CREATE_PROGRESS = f"""
CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (
    name TEXT PRIMARY KEY,
    next_key BIGINT NOT NULL,
    rows_done BIGINT NOT NULL DEFAULT 0,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


@dataclass
class Sizer:
    """Key-range width per batch, steered towards ``target_s`` per batch."""

    width: int
    target_s: float
    minimum: int = 100
    maximum: int = 1_000_000

    def next(self, elapsed_s: float) -> int:
        factor = self.target_s / max(elapsed_s, 1e-4)
        self.width = int(
            min(self.maximum, max(self.minimum, self.width * min(2.0, max(0.5, factor))))
        )
        return self.width


def batch_statement(table: str, set_sql: str, where_sql: str, key: str) -> str:
    """One batch: update a key range and advance the recorded progress, atomically."""
    return f"""
        WITH batch AS (
            UPDATE {table} SET {set_sql}
            WHERE {key} >= %(lo)s AND {key} < %(hi)s AND ({where_sql})
            RETURNING 1
        )
        INSERT INTO {PROGRESS_TABLE} (name, next_key, rows_done)
        VALUES (%(name)s, %(hi)s, (SELECT count(*) FROM batch))
        ON CONFLICT (name) DO UPDATE
            SET next_key = EXCLUDED.next_key,
                rows_done = {PROGRESS_TABLE}.rows_done + EXCLUDED.rows_done,
                updated_at = now()
        RETURNING rows_done"""


@dataclass
class Backfill:
    """One backfill: what to change, where, and how to pace it."""

    table: str
    set_sql: str
    where_sql: str
    key: str
    name: str
    batch_rows: int
    target_ms: float
    pause_ms: float
    touch_updated_at: bool
    report: Callable[[dict[str, Any]], None] | None = None

    def statement(self) -> str:
        return batch_statement(self.table, self.set_sql, self.where_sql, self.key)

    def example(self) -> str:
        """One batch with literal bounds, for plans and lint."""
        quoted = "'" + self.name.replace("'", "''") + "'"
        return (
            self.statement()
            .replace("%(lo)s", "0")
            .replace("%(hi)s", str(self.batch_rows))
            .replace("%(name)s", quoted)
        )

    def run(self, conn: Any) -> int:
        """Walk the key range on an autocommit psycopg connection; return rows changed."""
        conn.execute(CREATE_PROGRESS)
        low, high = conn.execute(
            f"SELECT min({self.key}), max({self.key}) FROM {self.table}"
        ).fetchone()
        resumed = conn.execute(
            f"SELECT next_key, rows_done FROM {PROGRESS_TABLE} WHERE name = %s", [self.name]
        ).fetchone()
        done = resumed[1] if resumed else 0
        if low is not None:
            conn.execute(SET_BACKFILL)
            if not self.touch_updated_at:
                conn.execute("SET migrate.preserve_updated_at = 'on'")
            try:
                done = self._walk(
                    conn, resumed[0] if resumed else low, high, done, resumed is not None
                )
            finally:
                conn.execute("RESET migrate.backfill")
                if not self.touch_updated_at:
                    conn.execute("RESET migrate.preserve_updated_at")
        conn.execute(f"DELETE FROM {PROGRESS_TABLE} WHERE name = %s", [self.name])
        # The table is ours alone; drop it once no backfill is in flight.
        conn.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM {PROGRESS_TABLE}) THEN "
            f"DROP TABLE {PROGRESS_TABLE}; END IF; END $$"
        )
        return int(done)

    def _walk(self, conn: Any, start: int, high: int, done: int, resumed: bool) -> int:
        statement = self.statement()
        sizer = Sizer(max(1, self.batch_rows), self.target_ms / 1000)
        began, last_report, position = time.perf_counter(), 0.0, start
        span = max(1, high - start + 1)
        while position <= high:
            upper = position + sizer.width
            t0 = time.perf_counter()
            done = conn.execute(
                statement, {"lo": position, "hi": upper, "name": self.name}
            ).fetchone()[0]
            sizer.next(time.perf_counter() - t0)
            position = upper
            now = time.perf_counter()
            if self.report is not None and (now - last_report >= 0.5 or position > high):
                last_report = now
                fraction = min(1.0, (position - start) / span)
                elapsed = now - began
                eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
                self.report(
                    {
                        "event": "backfill",
                        "table": self.table,
                        "name": self.name,
                        "resumed_from": start if resumed else None,
                        "rows_done": done,
                        "fraction": round(fraction, 4),
                        "rows_per_s": round(done / elapsed) if elapsed > 0 else 0,
                        "eta_s": None if eta is None else round(eta, 1),
                        "batch_keys": sizer.width,
                    }
                )
            if self.pause_ms > 0:
                time.sleep(self.pause_ms / 1000)
        return done


def backfill(
    table: str,
    set_sql: str,
    where_sql: str,
    *,
    key: str = "id",
    name: str | None = None,
    batch_rows: int = 1000,
    target_ms: float = 50,
    pause_ms: float = 0,
    touch_updated_at: bool = False,
) -> int:
    """Apply ``UPDATE table SET set_sql WHERE where_sql`` in committed, resumable batches.

    ``where_sql`` must select only rows that still need the change, which makes the
    backfill idempotent. ``key`` is an integer column (the primary key); batches walk
    its range from the recorded position (or the minimum) to the maximum seen at start.
    ``batch_rows`` is the first batch's key-range width; later ones adapt to
    ``target_ms``. ``pause_ms`` sleeps between batches. ``updated_at`` triggers leave the
    column alone unless ``touch_updated_at``; sync triggers that test ``NOT_BACKFILL`` skip
    the rows it writes. Under ``--atomic`` (one transaction for the
    whole run) it falls back to a single UPDATE. Returns rows changed (-1 when unknown).
    """
    from alembic import context, op

    from alembic_common.ddl import PRESERVE_UPDATED_AT
    from alembic_common.safe import committed_so_far

    ctx = op.get_context()
    job = Backfill(
        table,
        set_sql,
        where_sql,
        key,
        name or f"{ctx.get_current_revision() or 'base'}:{table}",
        batch_rows,
        target_ms,
        pause_ms,
        touch_updated_at,
        context.config.attributes.get("on_progress"),
    )
    if ctx.as_sql:
        # A plan shows the shape of one batch, in its own transaction like the real run.
        with committed_so_far():
            op.execute(CREATE_PROGRESS)
            op.execute(job.example())
        return -1
    if not ctx.opts.get("transaction_per_migration", False):
        # --atomic: the whole run is one transaction, so no batch can commit on its own.
        op.execute(SET_BACKFILL.replace("SET", "SET LOCAL", 1))
        if not touch_updated_at:
            op.execute(PRESERVE_UPDATED_AT)
        op.execute(f"UPDATE {table} SET {set_sql} WHERE {where_sql}")
        return -1
    with committed_so_far():
        return job.run(op.get_bind().connection.dbapi_connection)  # psycopg, autocommit
