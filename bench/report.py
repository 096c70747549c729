"""`migrate all report` on a long platform: 3 services of 1,000 migrations each.

Generates a throwaway project (as bench/history.py does: trivial revisions, each creating
one table) with three services, the second and third requiring the first, migrates each
service's own fresh database to N - PENDING (so the page has a plan and lint findings to
show), then times `migrate.py all report --out page.html` in fresh processes, the first
run only warming the caches. Prints the median and range of the runs, and the page's size.

    python bench/report.py [--migrations 1000] [--services 3] [--pending 5] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, create_db, drop_db, server, spread, timed
from bridge_overhead import write_project


def write_platform(base: Path, names: list[str], count: int) -> None:
    """One generated service per name; every service after the first requires the first's
    version 1 from its own version 1 (an edge on the picture)."""
    for name in names:
        scratch = base / f".{name}"
        write_project(scratch, count, plain=False)
        folder = base / "services" / name
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(scratch / "services" / "bench", folder)
        shutil.rmtree(scratch)
        if name != names[0]:
            first = next((folder / "migrations" / "versions").glob("0001_*.py"))
            text = first.read_text().replace(
                "depends_on = None\n", f'depends_on = None\nrequires = {{"{names[0]}": 1}}\n'
            )
            first.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--migrations", type=int, default=1000)
    parser.add_argument("--services", type=int, default=3)
    parser.add_argument("--pending", type=int, default=5, help="steps left pending per service")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("dot") is None:
        raise SystemExit("Graphviz is not installed (apt-get install graphviz)")
    srv = server()
    names = [f"svc_{chr(ord('a') + i)}" for i in range(args.services)]
    n, at = args.migrations, args.migrations - args.pending
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_platform(base, names, n)
        urls = {name: create_db(srv) for name in names}
        env = {
            **os.environ,
            "MIGRATE_ROOT": str(base),
            **{f"{name.upper()}_DATABASE_URL": url for name, url in urls.items()},
        }
        migrate = [sys.executable, str(ROOT / "scripts/migrate.py")]
        try:
            for name in names:
                for command in (["hash"], ["up", "--version", str(at)]):
                    subprocess.run(
                        [*migrate, name, *command],
                        check=True,
                        env=env,
                        cwd=ROOT,
                        capture_output=True,
                    )
            page = base / "page.html"
            command = [*migrate, "all", "report", "--out", str(page)]
            seconds = [timed(command, env) for _ in range(args.runs + 1)][1:]
            size = page.stat().st_size
        finally:
            for url in urls.values():
                drop_db(srv, url)
    print(
        f"all report: {args.services} services of {n} migrations, each at {at} "
        f"({args.pending} pending), {args.runs} runs"
    )
    print(f"  {spread(seconds, 1000, 0)} ms (median, range); page {size / 1024:,.0f} kB")


if __name__ == "__main__":
    main()
