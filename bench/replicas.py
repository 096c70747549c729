"""Replicas starting at once: what coordinating them costs, beyond starting them.

Sixteen Python processes starting at once on a 2-core machine pay most of their time
importing psycopg and typer, whatever the toolkit does. So the bench measures, in each
run, side by side:
  * many:   16 `patient up` started at once on one fresh database, until all have exited;
  * floor:  16 `patient up` started at once on a database already at head (no-op starts:
            the start-up cost alone);
  * single: one `patient up` on a fresh database; single_noop: one on a database at head.
The coordination cost is many - floor - (single - single_noop): the time to all-done, minus
the start-up floor, minus one replica's own work. Target: at most 150 ms.

It also measures how soon each of 15 replicas waiting on the migration lock exits once
the lock is released (their up is then a no-op).

    python bench/replicas.py [--replicas 16] [--runs 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time

import psycopg
from _common import ROOT, create_db, drop_db, server, spread

from alembic_common.core import locking, runner, services
from alembic_common.core.settings import Settings

UP = [sys.executable, str(ROOT / "scripts" / "migrate.py"), "patient", "up", "--url"]


def at_once(srv: str, count: int, at_head: bool) -> float:
    """Wall time until every one of ``count`` simultaneous replicas has exited 0."""
    db = create_db(srv)
    try:
        if at_head:
            runner.up(services.get("patient", ROOT), Settings("patient", db, "bench"))
        started = time.perf_counter()
        procs = [
            subprocess.Popen([*UP, db], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(count)
        ]
        codes = [p.wait() for p in procs]
        elapsed = time.perf_counter() - started
        if any(codes):
            raise SystemExit(f"a replica failed: {codes}")
        return elapsed
    finally:
        drop_db(srv, db)


def release_to_exit(srv: str, waiters: int) -> list[float]:
    """Seconds from releasing the lock to each waiting replica's exit."""
    db = create_db(srv)
    service = services.get("patient", ROOT)
    conf = Settings("patient", db, "bench")
    exits: list[float] = []
    try:
        runner.up(service, conf, target=1)
        with psycopg.connect(db, autocommit=True) as holder:
            with locking.advisory_lock(holder, "patient"):
                procs = [
                    subprocess.Popen(
                        [*UP, db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    )
                    for _ in range(waiters)
                ]
                for proc in procs:  # each says so on stderr once it waits on the lock
                    assert proc.stderr is not None
                    line = "-"
                    while line and "waiting up to" not in line:
                        line = proc.stderr.readline()
                    if not line:
                        raise SystemExit("a replica exited without waiting on the lock")

                def stamp(proc: subprocess.Popen[str]) -> None:
                    proc.communicate()
                    exits.append(time.perf_counter())

                threads = [threading.Thread(target=stamp, args=(p,)) for p in procs]
                for thread in threads:
                    thread.start()
                # The holder does the pending work itself, as the first replica would.
                _apply_rest(service, conf)
            released = time.perf_counter()  # the lock is released; the session stays
        for thread in threads:
            thread.join()
        if any(p.returncode for p in procs):
            raise SystemExit(f"a waiter failed: {[p.returncode for p in procs]}")
        return [t - released for t in exits]
    finally:
        drop_db(srv, db)


def _apply_rest(service: services.Service, conf: Settings) -> None:
    """Bring the database to head under the lock the caller holds (Alembic directly)."""
    from alembic_common.core import db as dbmod

    with dbmod.engine(conf).connect() as conn:
        service.run_alembic(service.config(connection=conn), "heads")
        conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    srv = server()
    n = args.replicas
    found: dict[str, list[float]] = {"many": [], "floor": [], "single": [], "single_noop": []}
    for _ in range(args.runs):
        found["many"].append(at_once(srv, n, at_head=False))
        found["floor"].append(at_once(srv, n, at_head=True))
        found["single"].append(at_once(srv, 1, at_head=False))
        found["single_noop"].append(at_once(srv, 1, at_head=True))
    cost = [
        m - f - (s - z)
        for m, f, s, z in zip(
            found["many"], found["floor"], found["single"], found["single_noop"], strict=True
        )
    ]
    latencies = [release_to_exit(srv, n - 1) for _ in range(args.runs)]
    print(f"{n} replicas started at once on one database, median (range) of {args.runs} runs")
    print(f"  {n} replicas, fresh database (all done)   {spread(found['many'])} s")
    print(f"  {n} replicas, database at head (floor)   {spread(found['floor'])} s")
    print(f"  1 replica, fresh database               {spread(found['single'])} s")
    print(f"  1 replica, database at head             {spread(found['single_noop'])} s")
    print(
        f"  coordination cost (all done - floor - one replica's work) "
        f"{spread(cost, 1000, 0)} ms   (target <= 150 ms)"
    )
    first = [min(run) for run in latencies]
    last = [max(run) for run in latencies]
    every = [t for run in latencies for t in run]
    print(f"  lock released -> each of {n - 1} waiters exits:")
    print(f"    first {spread(first, 1000, 0)} ms, last {spread(last, 1000, 0)} ms")
    print(f"    all waiters, all runs: median {sorted(every)[len(every) // 2] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
