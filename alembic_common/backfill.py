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
    ``target_ms``. ``pause_ms`` sleeps between batches. Under ``--atomic`` (one
    transaction for the whole run) it falls back to a single UPDATE. Returns rows changed.
    """
    from alembic import context, op

    from alembic_common.ddl import PRESERVE_UPDATED_AT

    ctx = op.get_context()
    name = name or f"{ctx.get_current_revision() or 'base'}:{table}"
    report: Callable[[dict[str, Any]], None] | None = context.config.attributes.get("on_progress")
    if ctx.as_sql:
        # A plan shows the shape of one batch, in its own transaction like the real run.
        example = (
            batch_statement(table, set_sql, where_sql, key)
            .replace("%(lo)s", "0")
            .replace("%(hi)s", str(batch_rows))
            .replace("%(name)s", "'" + name.replace("'", "''") + "'")
        )
        with ctx.autocommit_block():
            op.execute(CREATE_PROGRESS)
            op.execute(example)
        return -1
    if not ctx.opts.get("transaction_per_migration", False):
        # --atomic: the whole run is one transaction, so no batch can commit on its own.
        if not touch_updated_at:
            op.execute(PRESERVE_UPDATED_AT)
        op.execute(f"UPDATE {table} SET {set_sql} WHERE {where_sql}")
        return -1
    with ctx.autocommit_block():
        conn = op.get_bind().connection.dbapi_connection  # psycopg, autocommit
        return _run(
            conn,
            table,
            set_sql,
            where_sql,
            key,
            name,
            batch_rows,
            target_ms,
            pause_ms,
            touch_updated_at,
            report,
        )


def _run(
    conn: Any,
    table: str,
    set_sql: str,
    where_sql: str,
    key: str,
    name: str,
    batch_rows: int,
    target_ms: float,
    pause_ms: float,
    touch_updated_at: bool,
    report: Callable[[dict[str, Any]], None] | None,
) -> int:
    conn.execute(CREATE_PROGRESS)
    low, high = conn.execute(f"SELECT min({key}), max({key}) FROM {table}").fetchone()
    resumed = conn.execute(
        f"SELECT next_key, rows_done FROM {PROGRESS_TABLE} WHERE name = %s", [name]
    ).fetchone()
    done = 0
    if low is not None:
        start = resumed[0] if resumed else low
        done = resumed[1] if resumed else 0
        if not touch_updated_at:
            conn.execute("SET migrate.preserve_updated_at = 'on'")
        try:
            done = _walk(
                conn,
                table,
                set_sql,
                where_sql,
                key,
                name,
                start,
                high,
                done,
                batch_rows,
                target_ms,
                pause_ms,
                report,
                resumed is not None,
            )
        finally:
            if not touch_updated_at:
                conn.execute("RESET migrate.preserve_updated_at")
    conn.execute(f"DELETE FROM {PROGRESS_TABLE} WHERE name = %s", [name])
    # The table is ours alone; drop it once no backfill is in flight.
    conn.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM {PROGRESS_TABLE}) THEN "
        f"DROP TABLE {PROGRESS_TABLE}; END IF; END $$"
    )
    return done


def _walk(
    conn: Any,
    table: str,
    set_sql: str,
    where_sql: str,
    key: str,
    name: str,
    start: int,
    high: int,
    done: int,
    batch_rows: int,
    target_ms: float,
    pause_ms: float,
    report: Callable[[dict[str, Any]], None] | None,
    resumed: bool,
) -> int:
    statement = batch_statement(table, set_sql, where_sql, key)
    sizer = Sizer(max(1, batch_rows), target_ms / 1000)
    began, last_report, position = time.perf_counter(), 0.0, start
    total_keys = max(1, high - start + 1)
    event = {
        "event": "backfill",
        "table": table,
        "name": name,
        "resumed_from": start if resumed else None,
    }
    while position <= high:
        upper = position + sizer.width
        t0 = time.perf_counter()
        done = conn.execute(statement, {"lo": position, "hi": upper, "name": name}).fetchone()[0]
        sizer.next(time.perf_counter() - t0)
        position = upper
        now = time.perf_counter()
        if report is not None and (now - last_report >= 0.5 or position > high):
            last_report = now
            fraction = min(1.0, (position - start) / total_keys)
            elapsed = now - began
            rate = done / elapsed if elapsed > 0 else 0.0
            eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
            report(
                {
                    **event,
                    "rows_done": done,
                    "fraction": round(fraction, 4),
                    "rows_per_s": round(rate),
                    "eta_s": None if eta is None else round(eta, 1),
                    "batch_keys": sizer.width,
                }
            )
        if pause_ms > 0:
            time.sleep(pause_ms / 1000)
    return done
