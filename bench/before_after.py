"""The no-op `up` and a fleet, before and after a change of the code, side by side.

    python bench/before_after.py [--before REV] [--runs 15] [--fleet 60] [--fleet-runs 5]

The tree at ``--before`` (a git revision; by default the last commit before the package was
split into subpackages and the executor was made) is exported to a temporary folder and run
with this interpreter beside the working tree: each side's `scripts/migrate.py` puts its own
tree first on the path, so each runs its own code on its own services folder (the same
history and the same checksums). Every measurement alternates the two sides, starting with
each in turn; a pair gives a ratio (after / before), and the figures are the median of the
ratios with their range, next to each side's median seconds.

  * no-op `up`: `migrate.py patient up --url DB` on one database at head.
  * fleet: `migrate.py patient up --version 3 --targets-file F --jobs 4 --per-host 4 --json`
    on ``--fleet`` fresh copies of a database at version 1 (each side its own copies), then
    the same command again on them (the no-op recheck). Every target must end migrated.

The databases are named bench_ba_*; an interrupted run's leftovers are dropped when the next
one starts. Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from _common import (
    ROOT,
    create_db,
    create_dbs,
    database_of,
    drop_db,
    drop_dbs,
    drop_prefixed,
    median,
    server,
    spread,
)

PREFIX = "bench_ba_"
BEFORE = "3a0659a"  # the last commit before the subpackages and the executor


def export(rev: str, into: Path) -> Path:
    """The tracked files of ``rev``, written under ``into``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run(tree: Path, *args: str) -> tuple[float, str]:
    """Seconds of one `migrate.py` run of ``tree`` (it must succeed), and its stdout."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(tree / "scripts" / "migrate.py"), *args],
        capture_output=True,
        text=True,
        cwd=tree,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{tree}: migrate {' '.join(args[:3])} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def fleet_up(tree: Path, targets: Path, count: int, outcome: str) -> float:
    seconds, out = run(
        tree, "patient", "up", "--version", "3", "--targets-file", str(targets),
        "--jobs", "4", "--per-host", "4", "--json",
    )  # fmt: skip
    summary = json.loads(out)["summary"]
    if summary.get(outcome) != count:
        raise SystemExit(f"{tree}: expected {count} {outcome}, got {summary}")
    return seconds


def report(name: str, before: list[float], after: list[float]) -> None:
    ratios = [a / b for a, b in zip(after, before, strict=True)]
    print(
        f"{name:<22} before {median(before):.3f} s  after {median(after):.3f} s  "
        f"after/before {spread(ratios, digits=3)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", default=BEFORE, help="the git revision to compare with")
    parser.add_argument("--runs", type=int, default=15, help="pairs of no-op runs")
    parser.add_argument("--fleet", type=int, default=60, help="databases in the fleet")
    parser.add_argument("--fleet-runs", type=int, default=5, help="pairs of fleet runs")
    args = parser.parse_args()
    srv = server()
    drop_prefixed(srv, PREFIX)
    with tempfile.TemporaryDirectory(prefix="bench-before-") as folder:
        sides = {"before": export(args.before, Path(folder)), "after": ROOT}
        head = create_db(srv, prefix=PREFIX)
        template = create_db(srv, prefix=PREFIX)
        try:
            run(ROOT, "patient", "up", "--contract", "--url", head)
            run(ROOT, "patient", "up", "--version", "1", "--url", template)
            for tree in sides.values():  # each side's bytecode cache, written once
                run(tree, "patient", "up", "--url", head)
            noop: dict[str, list[float]] = {"before": [], "after": []}
            for i in range(args.runs):
                for side in ("before", "after") if i % 2 == 0 else ("after", "before"):
                    noop[side].append(run(sides[side], "patient", "up", "--url", head)[0])
            report("no-op up", noop["before"], noop["after"])
            migrate: dict[str, list[float]] = {"before": [], "after": []}
            recheck: dict[str, list[float]] = {"before": [], "after": []}
            for i in range(args.fleet_runs):
                for side in ("before", "after") if i % 2 == 0 else ("after", "before"):
                    dbs = create_dbs(srv, args.fleet, template=template, prefix=PREFIX)
                    try:
                        targets = Path(folder) / "targets.txt"
                        targets.write_text("".join(f"{database_of(d)}={d}\n" for d in dbs))
                        tree = sides[side]
                        migrate[side].append(fleet_up(tree, targets, len(dbs), "migrated"))
                        recheck[side].append(fleet_up(tree, targets, len(dbs), "at head"))
                    finally:
                        drop_dbs(srv, dbs)
            report(f"fleet of {args.fleet}: up", migrate["before"], migrate["after"])
            report(f"fleet of {args.fleet}: recheck", recheck["before"], recheck["after"])
        finally:
            drop_db(srv, head)
            drop_db(srv, template)


if __name__ == "__main__":
    main()
