"""Replicas starting at once: 16 `patient up` against one fresh database vs a single one,
and how soon a replica that waited on the migration lock finishes once it is released.

Target: 16 replicas finish in 3x a single replica's time or less.

    python bench/replicas.py [--replicas 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psycopg
from _common import ROOT, create_db, drop_db, median, server

from alembic_common import locking, runner, services
from alembic_common.settings import Settings

UP = [sys.executable, str(ROOT / "scripts" / "migrate.py"), "patient", "up", "--url"]


def replicas_at_once(srv: str, count: int, at_head: bool = False) -> float:
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


def release_to_finish(srv: str) -> float:
    """Seconds from releasing the lock to a waiting replica's exit (its up is then a no-op)."""
    db = create_db(srv)
    service = services.get("patient", ROOT)
    conf = Settings("patient", db, "bench")
    try:
        runner.up(service, conf, target=3)
        with psycopg.connect(db, autocommit=True) as holder:
            with locking.advisory_lock(holder, "patient"):
                waiter = subprocess.Popen(
                    [*UP, db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                assert waiter.stderr is not None
                while "waiting up to" not in waiter.stderr.readline():
                    pass
                # The lock holder does the pending work itself, as the first replica would.
                from alembic import command

                from alembic_common import db as dbmod

                with dbmod.engine(conf).connect() as conn:
                    command.upgrade(service.config(connection=conn), "head")
                released = time.perf_counter()
            out, err = waiter.communicate()
            finished = time.perf_counter()
        if waiter.returncode != 0 or "nothing to do" not in out:
            raise SystemExit(f"waiter did not finish as a no-op: {out} {err}")
        return finished - released
    finally:
        drop_db(srv, db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    srv = server()
    single = median([replicas_at_once(srv, 1) for _ in range(args.runs)])
    many = median([replicas_at_once(srv, args.replicas) for _ in range(args.runs)])
    floor = median([replicas_at_once(srv, args.replicas, at_head=True) for _ in range(args.runs)])
    latency = median([release_to_finish(srv) for _ in range(args.runs)])
    print(f"replicas starting at once on a fresh database, median of {args.runs} runs")
    print(f"  1 replica                       {single:6.2f} s")
    print(f"  {args.replicas} replicas                     {many:6.2f} s")
    print(f"  ratio ({args.replicas} / 1)                 {many / single:6.2f}x   (target <= 3x)")
    print(
        f"  {args.replicas} no-op replicas (at head)     {floor:6.2f} s   (process start-up alone)"
    )
    print(f"  lock released -> waiter done    {latency * 1000:6.0f} ms")


if __name__ == "__main__":
    main()
