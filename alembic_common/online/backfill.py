"""Batched, resumable data migrations for big tables (call ``backfill`` from ``upgrade()``).

Each batch is one statement that updates a key range *and* records how far it got, so
the batch and its progress commit together: a run killed mid-way resumes at the next
key on the following ``up``, never redoing or skipping a row. Batch sizes adapt to a
target time per batch, so no writer waits on a row lock for longer than about that.
Progress goes to the run's callback (the CLI's progress line and ``--events``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from alembic_common.core import events
from alembic_common.core.events import Progress
from alembic_common.online.ddl import SET_BACKFILL

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
    report: Progress | None = None
    workers: int = 1  # connections walking their own slices of the key range at once

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
                if self.workers > 1 and resumed is None:
                    done = self._run_parallel(conn, low, high)
                else:
                    done = self._walk(
                        conn, resumed[0] if resumed else low, high, done, resumed is not None
                    )
            finally:
                conn.execute("RESET migrate.backfill")
                if not self.touch_updated_at:
                    conn.execute("RESET migrate.preserve_updated_at")
        conn.execute(
            f"DELETE FROM {PROGRESS_TABLE} WHERE name = %s OR starts_with(name, %s)",
            [self.name, self.name + "#"],
        )
        # The table is ours alone; drop it once no backfill is in flight.
        conn.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM {PROGRESS_TABLE}) THEN "
            f"DROP TABLE {PROGRESS_TABLE}; END IF; END $$"
        )
        return int(done)

    def _slices(self, conn: Any, low: int, high: int) -> list[tuple[str, int, int, int]]:
        """Each worker's (progress name, next key, last key, rows done): resumed from the
        progress rows of a run that was stopped, else the key range cut in equal parts. The
        rows are written before any batch, so a slice not begun yet is resumed too."""
        rows = conn.execute(
            f"SELECT name, next_key, rows_done FROM {PROGRESS_TABLE} WHERE starts_with(name, %s)",
            [self.name + "#"],
        ).fetchall()
        if not rows:
            width = (high - low) // self.workers + 1
            cuts = [
                (low + i * width, min(high, low + (i + 1) * width - 1)) for i in range(self.workers)
            ]
            rows = [(f"{self.name}#{a}-{b}", a, 0) for a, b in cuts if a <= b]
            with conn.transaction():
                for slice_name, start, _ in rows:
                    conn.execute(
                        f"INSERT INTO {PROGRESS_TABLE} (name, next_key) VALUES (%s, %s)",
                        [slice_name, start],
                    )
        return [(n, nxt, int(n.rsplit("-", 1)[1]), d) for n, nxt, d in rows]

    def _run_parallel(self, conn: Any, low: int, high: int) -> int:
        """``workers`` connections walk their own slices of the key range at once."""
        import psycopg

        slices = self._slices(conn, low, high)
        setup = conn.execute(
            "SELECT current_setting('search_path'), current_setting('lock_timeout'),"
            " current_setting('statement_timeout')"
        ).fetchone()
        done = {name: rows for name, _, _, rows in slices}
        errors: list[BaseException] = []
        stop = threading.Event()

        def work(name: str, start: int, end: int) -> None:
            try:
                with psycopg.connect(
                    conn.info.dsn, password=conn.info.password, autocommit=True
                ) as own:
                    for setting, value in zip(
                        ("search_path", "lock_timeout", "statement_timeout"), setup, strict=True
                    ):
                        own.execute("SELECT pg_catalog.set_config(%s, %s, false)", [setting, value])
                    own.execute(SET_BACKFILL)
                    if not self.touch_updated_at:
                        own.execute("SET migrate.preserve_updated_at = 'on'")
                    self._walk(own, start, end, done[name], False, name=name, stop=stop, seen=done)
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=work, args=(n, a, b), daemon=True)
            for n, a, b, _ in slices
            if a <= b
        ]
        began = time.perf_counter()
        span = max(1, high - low + 1)
        try:
            for thread in threads:
                thread.start()
            while alive := [t for t in threads if t.is_alive()]:
                alive[0].join(timeout=0.5)
                self._report_total(sum(done.values()), began, span, conn)
        except BaseException:
            stop.set()  # a signal: each worker ends its batch (committed or not), then stops
            for thread in threads:
                thread.join()
            raise
        if errors:
            raise errors[0]
        return sum(done.values())

    def _report_total(self, rows: int, began: float, span: int, conn: Any) -> None:
        if self.report is None:
            return
        left = conn.execute(
            f"SELECT coalesce(sum(GREATEST(0, split_part(name, '-', -1)::bigint - next_key + 1)), 0)"
            f" FROM {PROGRESS_TABLE} WHERE starts_with(name, %s)",
            [self.name + "#"],
        ).fetchone()[0]
        fraction = min(1.0, max(0.0, 1 - int(left) / span))
        self._report(rows, began, fraction, resumed_from=None, workers=self.workers)

    def _report(self, rows: int, began: float, fraction: float, **extra: Any) -> None:
        """One ``backfill`` progress event: rows so far, the share of the key range done, ETA."""
        assert self.report is not None
        elapsed = time.perf_counter() - began
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        self.report(
            events.Backfill(
                table=self.table,
                name=self.name,
                rows_done=rows,
                fraction=round(fraction, 4),
                rows_per_s=round(rows / elapsed) if elapsed > 0 else 0,
                eta_s=None if eta is None else round(eta, 1),
                **extra,
            )
        )

    def _walk(
        self,
        conn: Any,
        start: int,
        high: int,
        done: int,
        resumed: bool,
        *,
        name: str | None = None,
        stop: threading.Event | None = None,
        seen: dict[str, int] | None = None,
    ) -> int:
        statement = self.statement()
        name = name or self.name
        sizer = Sizer(max(1, self.batch_rows), self.target_ms / 1000)
        began, last_report, position = time.perf_counter(), 0.0, start
        span = max(1, high - start + 1)
        while position <= high and not (stop is not None and stop.is_set()):
            upper = min(position + sizer.width, high + 1)
            t0 = time.perf_counter()
            done = conn.execute(statement, {"lo": position, "hi": upper, "name": name}).fetchone()[
                0
            ]
            sizer.next(time.perf_counter() - t0)
            position = upper
            if seen is not None:
                seen[name] = done
                continue  # a worker: the coordinating thread reports the total
            now = time.perf_counter()
            if self.report is not None and (now - last_report >= 0.5 or position > high):
                last_report = now
                self._report(
                    done,
                    began,
                    min(1.0, (position - start) / span),
                    resumed_from=start if resumed else None,
                    batch_keys=sizer.width,
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
    workers: int = 1,
) -> int:
    """Apply ``UPDATE table SET set_sql WHERE where_sql`` in committed, resumable batches.

    ``where_sql`` must select only rows that still need the change, which makes the
    backfill idempotent. ``key`` is an integer column (the primary key); batches walk
    its range from the recorded position (or the minimum) to the maximum seen at start.
    ``batch_rows`` is the first batch's key-range width; later ones adapt to
    ``target_ms``. ``pause_ms`` sleeps between batches. ``updated_at`` triggers leave the
    column alone unless ``touch_updated_at``; sync triggers that test ``NOT_BACKFILL`` skip
    the rows it writes. ``workers`` > 1 walks that many slices of the key range at once, each
    on its own connection (for a CPU-bound conversion on a server with cores to spare); each
    slice resumes on its own. Under ``--atomic`` (one transaction for the whole run) it falls
    back to a single UPDATE. Returns rows changed (-1 when unknown).
    """
    from alembic import context, op

    from alembic_common.online.ddl import PRESERVE_UPDATED_AT
    from alembic_common.online.safe import committed_so_far

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
        max(1, workers),
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
