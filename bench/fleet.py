"""Three versions applied to each of 50 databases of one service.

Measured in one run, each on its own fresh set of databases:
  * the usual shell loop: `for db in ...; do alembic -c ... upgrade 0003; done`
  * ours: one `migrate.py patient up --version 3` over all of them, --jobs 4
  * ours with --jobs 1
Targets: --jobs 4 <= 0.1x the shell loop, and <= 0.7x our --jobs 1.

    python bench/fleet.py [--databases 50]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

from _common import ROOT, create_db, drop_db, median, server

INI = str(ROOT / "services" / "patient" / "alembic.ini")


def fresh(srv: str, count: int) -> list[str]:
    return [create_db(srv) for _ in range(count)]


def shell_loop(dbs: list[str]) -> float:
    script = "\n".join(
        f"{sys.executable} -m alembic -c {INI} -x url='{db}' upgrade 0003 >/dev/null 2>&1 || exit 1"
        for db in dbs
    )
    started = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True, cwd=ROOT)
    return time.perf_counter() - started


def ours(dbs: list[str], jobs: int) -> float:
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "migrate.py"),
        "patient",
        "up",
        "--version",
        "3",
        "--jobs",
        str(jobs),
        "--json",
    ]
    for db in dbs:
        cmd += ["--url", db]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--databases", type=int, default=50)
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of ours (the shell loop runs once)"
    )
    args = parser.parse_args()
    srv = server()
    plans: list[tuple[str, Callable[[list[str]], float]]] = [
        ("shell loop of plain alembic", shell_loop)
    ]
    for _ in range(args.runs):  # alternate, so both see the same machine
        plans += [
            ("ours, --jobs 1", lambda d: ours(d, 1)),
            ("ours, --jobs 4", lambda d: ours(d, 4)),
        ]
    samples: dict[str, list[float]] = {}
    for label, run in plans:
        dbs = fresh(srv, args.databases)
        try:
            samples.setdefault(label, []).append(run(dbs))
        finally:
            for db in dbs:
                drop_db(srv, db)
    timings = {label: median(values) for label, values in samples.items()}
    print(
        f"3 versions on each of {args.databases} databases (patient up to version 3); ours: median of {args.runs}"
    )
    for label, seconds in timings.items():
        print(f"  {label:<30} {seconds:6.2f} s")
    four, one = timings["ours, --jobs 4"], timings["ours, --jobs 1"]
    loop = timings["shell loop of plain alembic"]
    print(f"  --jobs 4 / shell loop          {four / loop:6.2f}x   (target <= 0.1x)")
    print(f"  --jobs 4 / --jobs 1            {four / one:6.2f}x   (target <= 0.7x)")


if __name__ == "__main__":
    main()
