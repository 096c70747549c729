"""No-op `up` (database already at head): what every container start pays.

`migrate.py patient up` against the bare anchor, plain `alembic upgrade head` with a
minimal env.py over the same revision files, side by side, alternating, on one database
at head; and against `alembic upgrade head` through the service's own alembic.ini (the
shared env.py, as the performance study compared). Each pair gives a ratio; the figures
are their median and range. Target: 0.4x plain Alembic or less.

Beside them, the floor: Python starting, importing psycopg and typer (both required) and
ending as our run ends, with ``os._exit`` (the interpreter's teardown of psycopg alone
costs about 25 ms), as a share of the anchor; our share is the rest of our run. Then where the no-op's time goes: one run under
`python -X importtime`, its imports grouped by top-level package, next to the whole run's
wall time.

    python bench/noop_up.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import ROOT, create_db, drop_db, server, spread, timed
from bridge_overhead import PLAIN_ENV


def anchor_project(base: Path) -> Path:
    """The patient service's revision files under a minimal env.py (no bridge, no lock)."""
    folder = base / "services" / "patient"
    shutil.copytree(ROOT / "services/patient/migrations/versions", folder / "migrations/versions")
    shutil.copy(ROOT / "services/patient/alembic.ini", folder / "alembic.ini")
    (folder / "migrations" / "env.py").write_text(PLAIN_ENV)
    return folder / "alembic.ini"


def import_breakdown(cmd: list[str]) -> tuple[float, dict[str, float]]:
    """Wall seconds of one run under -X importtime, and import seconds per top-level package."""
    started = time.perf_counter()
    done = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - started
    per_package: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        if own.strip().isdigit():
            per_package[name.strip().split(".")[0]] += int(own) / 1e6
    return wall, per_package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    srv = server()
    db = create_db(srv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ini = anchor_project(Path(tmp))
            ours = [sys.executable, str(ROOT / "scripts/migrate.py"), "patient", "up", "--url", db]
            ours += ["--contract"]  # every step, so both stand at the same head
            plain = [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url={db}"]
            plain += ["upgrade", "head"]
            service_ini = str(ROOT / "services/patient/alembic.ini")
            shared = [sys.executable, "-m", "alembic", "-c", service_ini, "-x", f"url={db}"]
            shared += ["upgrade", "head"]
            env = {"PYTHONPATH": str(ROOT)}  # migrations import alembic_common helpers
            timed(ours, env)  # bring it to head; warm the file caches for all three
            timed(plain, env)
            timed(shared, env)
            bare = [sys.executable, "-c", "pass"]
            floor = [sys.executable, "-c", "import os, psycopg, typer; os._exit(0)"]
            ours_t, plain_t, shared_t, bare_t, floor_t = [], [], [], [], []
            for _ in range(args.runs):
                ours_t.append(timed(ours, env))
                plain_t.append(timed(plain, env))
                shared_t.append(timed(shared, env))
                bare_t.append(timed(bare))
                floor_t.append(timed(floor))
            ratios = [o / p for o, p in zip(ours_t, plain_t, strict=True)]
            to_shared = [o / p for o, p in zip(ours_t, shared_t, strict=True)]
            floors = [f / p for f, p in zip(floor_t, plain_t, strict=True)]
            share = [o - f for o, f in zip(ours_t, floor_t, strict=True)]
            os.environ.update(env)
            wall, packages = import_breakdown(ours)
    finally:
        drop_db(srv, db)
    print(f"no-op up, {args.runs} runs each, median (range)")
    print(f"  migrate.py patient up                {spread(ours_t, 1000, 0)} ms")
    print(f"  alembic upgrade head, minimal env.py {spread(plain_t, 1000, 0)} ms")
    print(f"  alembic upgrade head, shared env.py  {spread(shared_t, 1000, 0)} ms")
    print(f"  ratio ours / minimal env.py          {spread(ratios)}x   (target <= 0.4x)")
    print(f"  ratio ours / shared env.py           {spread(to_shared)}x")
    print(f"  python -c pass                       {spread(bare_t, 1000, 0)} ms")
    print(f"  python -c 'import psycopg, typer'    {spread(floor_t, 1000, 0)} ms   (then os._exit)")
    print(f"  that floor / minimal env.py          {spread(floors)}x   (before any work of ours)")
    print(f"  our share: migrate.py - that floor   {spread(share, 1000, 0)} ms")
    print(f"where one no-op run's time goes ({wall * 1000:.0f} ms under -X importtime):")
    total = sum(packages.values())
    for name, seconds in sorted(packages.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  import {name:<28} {seconds * 1000:6.1f} ms")
    print(f"  import, all packages                {total * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
