"""`plan` and `lint` of every service against `status`: what a developer waits for.

Each command runs as a subprocess (what a developer types), alternating, on databases at
version 1 so there is something pending to plan and lint. Target: `lint` of all services
stays under 3x `status`.

    python bench/authoring.py [--runs 5]
"""

from __future__ import annotations

import argparse
import sys

from _common import ROOT, create_db, drop_db, median, server, timed

from alembic_common.core import runner, services
from alembic_common.core.settings import Settings

MIGRATE = [sys.executable, str(ROOT / "scripts" / "migrate.py")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    srv = server()
    names = sorted(services.discover(ROOT))
    dbs = {name: create_db(srv) for name in names}
    try:

        def peers(other: str) -> Settings:
            return Settings(other, dbs[other], "bench")

        for name in sorted(names, key=lambda n: n == "appointment"):  # it requires the others
            runner.up(services.get(name, ROOT), peers(name), target=1, peers=peers)
        commands = {
            "status": lambda n: [*MIGRATE, n, "status", "--url", dbs[n]],
            "plan": lambda n: [*MIGRATE, n, "plan", "--url", dbs[n], "--sql"],
            "lint": lambda n: [*MIGRATE, n, "lint", "--url", dbs[n]],
            "lint --all": lambda n: [*MIGRATE, n, "lint", "--all"],
        }
        totals: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.runs):
            for label, build in commands.items():
                totals[label].append(sum(timed(build(n)) for n in names))
        base = median(totals["status"])
        print(f"all {len(names)} services, one command each, median of {args.runs} runs")
        for label, values in totals.items():
            print(f"  {label:<12} {median(values):6.2f} s   {median(values) / base:5.2f}x status")
        print("  target: lint <= 3x status")
    finally:
        for url in dbs.values():
            drop_db(srv, url)


if __name__ == "__main__":
    main()
