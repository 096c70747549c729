"""The seed's naive phone migration against ours, on 1,000,000 patients, with a live writer.

Builds one patients table at version 3, clones it (CREATE DATABASE ... TEMPLATE), then
migrates each copy while a concurrent writer does single-row updates of random patients:
  * naive: the seed's version 4 verbatim, one transaction: ADD COLUMN, UPDATE every row,
    DROP the old column, RENAME the new one;
  * ours: `migrate.py patient up --contract`: expand (column + trigger), batched resumable
    backfill, then the contract step that swaps the columns.
Prints the writer's max and p99 latency during each migration, each total, and the ratio.
Targets: writer max <= 50 ms during ours; our total <= 1.3x the naive total.

    python bench/phone_backfill.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import psycopg
from _common import ROOT, create_db, drop_db, server

from alembic_common import runner, services
from alembic_common.settings import Settings

NAIVE_V4 = """
ALTER TABLE patients ADD COLUMN phone_international VARCHAR(25);
UPDATE patients SET phone_international =
    CASE
        WHEN country = 'Canada' THEN '+1' || REGEXP_REPLACE(phone, '[^0-9]', '', 'g')
        WHEN country = 'USA' THEN '+1' || REGEXP_REPLACE(phone, '[^0-9]', '', 'g')
        WHEN country = 'Morocco' THEN '+212' || REGEXP_REPLACE(phone, '[^0-9]', '', 'g')
        WHEN country = 'France' THEN '+33' || REGEXP_REPLACE(phone, '[^0-9]', '', 'g')
        ELSE phone
    END;
ALTER TABLE patients DROP COLUMN phone;
ALTER TABLE patients RENAME COLUMN phone_international TO phone;
"""


def build(srv: str, rows: int) -> str:
    url = create_db(srv)
    runner.up(services.get("patient", ROOT), Settings("patient", url, "bench"), target=3)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
            " date_of_birth, country, phone) SELECT 1 + g %% 50, 'P' || g, 'F', 'L', '1980-01-01',"
            " (ARRAY['Canada','USA','Morocco','France','Spain'])[1 + g %% 5],"
            " '06 ' || lpad(g::text, 8, '0') FROM generate_series(1, %s) g",
            [rows],
        )
        conn.execute("VACUUM ANALYZE patients")
    return url


def clone(srv: str, template: str) -> str:
    name = Settings("b", template, "b").database
    copy = create_db(srv)
    copy_name = Settings("b", copy, "b").database
    with psycopg.connect(srv, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{copy_name}"')
        conn.execute(f'CREATE DATABASE "{copy_name}" TEMPLATE "{name}"')
    return copy


def with_writer(url: str, rows: int, migrate: Callable[[], None]) -> tuple[float, list[float]]:
    """Run ``migrate`` while a writer updates random rows; return its time and the latencies."""
    latencies: list[float] = []
    stop = threading.Event()
    ready = threading.Event()

    def writer() -> None:
        rng = random.Random(1)
        with psycopg.connect(url, autocommit=True) as conn:
            ready.set()
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute(
                    "UPDATE patients SET first_name = 'W' WHERE id = %s", [rng.randint(1, rows)]
                )
                latencies.append(time.perf_counter() - started)
                time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    ready.wait()
    time.sleep(0.2)
    latencies.clear()  # only what happens during the migration counts
    started = time.perf_counter()
    try:
        migrate()
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
    return elapsed, latencies


def naive(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(NAIVE_V4)
        conn.commit()


def ours(url: str) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/migrate.py"),
            "patient",
            "up",
            "--contract",
            "--url",
            url,
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    srv = server()
    template = build(srv, args.rows)
    results = {}
    try:
        for label, migrate in (("naive (seed v4)", naive), ("ours (v4 + v5)", ours)):
            url = clone(srv, template)
            try:
                results[label] = with_writer(url, args.rows, lambda m=migrate, u=url: m(u))
            finally:
                drop_db(srv, url)
    finally:
        drop_db(srv, template)
    print(f"phone migration on {args.rows:,} patients with a concurrent single-row writer")
    for label, (total, lat) in results.items():
        print(
            f"  {label:<18} total {total:6.2f} s   writer max {max(lat) * 1000:8.1f} ms"
            f"   p99 {p99(lat) * 1000:7.1f} ms   ({len(lat)} writes)"
        )
    (n_total, _), (o_total, o_lat) = results["naive (seed v4)"], results["ours (v4 + v5)"]
    print(f"  ratio ours / naive total          {o_total / n_total:6.2f}x   (target <= 1.3x)")
    print(f"  writer max during ours            {max(o_lat) * 1000:6.1f} ms  (target <= 50 ms)")


if __name__ == "__main__":
    main()
