"""A long history: `up` with one pending step, `status` and a no-op `up`, against plain Alembic.

Generates one throwaway project with N trivial revisions (default 1,000), twice over the
same files: once with the shared env.py, once with a stock env.py (plain Alembic). On a
database at version N-1 it times, alternating, in fresh processes:
  * `migrate.py bench up` (one pending step) against `alembic upgrade head` (plain);
  * `migrate.py bench status` and a no-op `migrate.py bench up` at head.
Targets: up with one pending step <= 1.0x plain Alembic; status <= 1.3x the no-op up.

Then a fleet (--fleet 20 databases, 0 to skip): each database one step behind, migrated by
one `migrate.py bench up --targets-file F --jobs 4 --per-host 4`, on a history of N
migrations and on one of 5 (the size of today's services). Target: per database, the long
history costs at most 1.3x the short one.

    python bench/history.py [--migrations 1000] [--runs 5] [--fleet 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from _common import ROOT, create_db, create_dbs, drop_db, drop_dbs, server, spread
from bridge_overhead import write_project


def _run(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{args[2:4]} failed: {done.stderr.strip()[-300:]}")
    return time.perf_counter() - started


def _back_one(url: str, n: int, bridged: bool) -> None:
    """Put a database at head back to N-1 by hand (drop the last table, rewrite versions)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS t_{n}")
        conn.execute("UPDATE alembic_version SET version_num = %s", [f"{n - 1:04d}"])
        if bridged:
            conn.execute("DELETE FROM schema_migrations WHERE version = %s", [n])


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    mid = ordered[len(ordered) // 2]
    return f"{mid * 1000:7.0f} ms (range {ordered[0] * 1000:.0f}-{ordered[-1] * 1000:.0f})"


def fleet_seconds(base: Path, n: int, size: int, runs: int, srv: str) -> list[float]:
    """Seconds per database to migrate ``size`` databases, each at N-1, on an N-step history."""
    write_project(base, n, plain=False)
    env = {**os.environ, "MIGRATE_ROOT": str(base)}
    migrate = [sys.executable, str(ROOT / "scripts/migrate.py"), "bench"]
    subprocess.run([*migrate, "hash"], check=True, env=env, cwd=ROOT, capture_output=True)
    template = create_db(srv)
    try:
        back = ["up", "--version", str(n - 1), "--url", template]
        subprocess.run([*migrate, *back], check=True, env=env, cwd=ROOT, capture_output=True)
        seconds = []
        for run in range(runs + 1):
            urls = create_dbs(srv, size, template=template)
            try:
                listing = base / "targets.txt"
                listing.write_text("".join(f"db{i}={url}\n" for i, url in enumerate(urls)))
                fleet = ["up", "--targets-file", str(listing), "--jobs", "4", "--per-host", "4"]
                elapsed = _run([*migrate, *fleet], env)
                if run:  # the first round only warms the caches
                    seconds.append(elapsed / size)
            finally:
                drop_dbs(srv, urls)
        return seconds
    finally:
        drop_db(srv, template)


def fleet(args: argparse.Namespace, srv: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        short = fleet_seconds(Path(tmp) / "short", 5, args.fleet, args.runs, srv)
        long = fleet_seconds(Path(tmp) / "long", args.migrations, args.fleet, args.runs, srv)
    ratios = [a / b for a, b in zip(long, short, strict=True)]
    print(f"a fleet of {args.fleet} databases, one step each, --jobs 4 --per-host 4, per database:")
    print(f"  on a {args.migrations}-migration history  {spread(long, 1000, 0)} ms")
    print(f"  on a 5-migration history     {spread(short, 1000, 0)} ms")
    print(f"    ratio long / short: {spread(ratios)}x (target <= 1.3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--migrations", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fleet", type=int, default=20, help="databases in the fleet (0: skip)")
    args = parser.parse_args()
    n = args.migrations
    srv = server()
    with tempfile.TemporaryDirectory() as tmp:
        ours_ini = write_project(Path(tmp) / "ours", n, plain=False)
        plain_ini = write_project(Path(tmp) / "plain", n, plain=True)
        env = {**os.environ, "MIGRATE_ROOT": str(Path(tmp) / "ours")}
        ours_db, plain_db = create_db(srv), create_db(srv)
        migrate = [sys.executable, str(ROOT / "scripts/migrate.py"), "bench"]
        alembic = [sys.executable, "-m", "alembic", "-c", str(plain_ini)]
        try:
            # A real project keeps checksums.txt current (CI checks it with 'hash --check').
            subprocess.run([*migrate, "hash"], check=True, env=env, cwd=ROOT, capture_output=True)
            subprocess.run(
                [*migrate, "up", "--url", ours_db],
                check=True,
                env=env,
                cwd=ROOT,
                capture_output=True,
            )
            subprocess.run(
                [*alembic, "-x", f"url={plain_db}", "upgrade", "head"],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            # Warm both (bytecode caches of the revision files) before measuring.
            times: dict[str, list[float]] = {k: [] for k in ("ours", "plain", "status", "noop")}
            for run in range(args.runs + 1):
                _back_one(ours_db, n, True)
                _back_one(plain_db, n, False)
                ours = _run([*migrate, "up", "--url", ours_db], env)
                plain = _run([*alembic, "-x", f"url={plain_db}", "upgrade", "head"], env)
                status = _run([*migrate, "status", "--url", ours_db], env)
                noop = _run([*migrate, "up", "--url", ours_db], env)
                if run:  # the first round only warms the caches
                    for key, value in zip(times, (ours, plain, status, noop), strict=True):
                        times[key].append(value)
        finally:
            drop_db(srv, ours_db)
            drop_db(srv, plain_db)
    ratios_up = sorted(o / p for o, p in zip(times["ours"], times["plain"], strict=True))
    ratios_status = sorted(s / z for s, z in zip(times["status"], times["noop"], strict=True))
    print(f"{n} migrations, {args.runs} runs (median, range); ours_ini={ours_ini.name}")
    print(
        f"  up, one pending step: ours {_spread(times['ours'])}; plain alembic {_spread(times['plain'])}"
    )
    print(
        f"    ratio ours / plain: {ratios_up[len(ratios_up) // 2]:.2f}x "
        f"(range {ratios_up[0]:.2f}-{ratios_up[-1]:.2f}; target <= 1.0x)"
    )
    print(f"  status {_spread(times['status'])}; no-op up {_spread(times['noop'])}")
    print(
        f"    ratio status / no-op up: {ratios_status[len(ratios_status) // 2]:.2f}x "
        f"(range {ratios_status[0]:.2f}-{ratios_status[-1]:.2f}; target <= 1.3x)"
    )
    if args.fleet:
        fleet(args, srv)


if __name__ == "__main__":
    main()
