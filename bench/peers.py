"""Against the fastest peer: dbmate, on the same trivial steps, side by side.

    python bench/peers.py [--runs 7] [--steps 300] [--fleet 60]

dbmate (the Go tool) is installed with npm into a cache outside the repository
(``$XDG_CACHE_HOME/migrate-bench``, else ``~/.cache/migrate-bench``) when it is missing.
Both tools get the same SQL: ``--steps`` trivial steps (``CREATE TABLE t_N (id int)``), ours
as a generated service of Alembic revisions (as bench/history.py makes them) with its
checksums file written by ``hash`` (as every service has one), dbmate's as its
``-- migrate:up`` files. Each tool works on databases of its own; runs alternate, each
tool first in turn, and every ratio (ours / dbmate) is the median of the pairs' ratios
with its range:

  * no-op start: ``up`` on a database at head;
  * status: ``status`` on a database at head;
  * per step: ``up`` of every step on an empty database;
  * a fleet of ``--fleet`` empty databases to head: ours ``up --targets-file --jobs 4``,
    dbmate as its users run a fleet, ``xargs -P 4``; then the same again (the recheck).

The databases are named bench_peer_*. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    ROOT,
    create_db,
    create_dbs,
    drop_dbs,
    drop_prefixed,
    median,
    server,
    spread,
    timed,
)
from bridge_overhead import write_project

PREFIX = "bench_peer_"
MIGRATE = [sys.executable, str(ROOT / "scripts" / "migrate.py"), "bench"]


def dbmate_binary() -> str:
    """dbmate's binary, installed with npm into the bench cache when missing."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "migrate-bench"
    binary = cache / "node_modules" / "@dbmate" / "linux-x64" / "bin" / "dbmate"
    if not binary.exists():
        if shutil.which("npm") is None:
            raise SystemExit("bench/peers.py needs npm to install dbmate")
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--prefix", str(cache), "dbmate@2"], check=True
        )
    return str(binary)


def dbmate_dir(base: Path, steps: int) -> Path:
    folder = base / "dbmate"
    folder.mkdir()
    for v in range(1, steps + 1):
        (folder / f"{v:04d}_step_{v}.sql").write_text(
            f"-- migrate:up\nCREATE TABLE t_{v} (id int);\n\n-- migrate:down\nDROP TABLE t_{v};\n"
        )
    return folder


def dbmate_url(url: str) -> str:
    return url + ("&" if "?" in url else "?") + "sslmode=disable"


class Peers:
    """The two tools' commands on a database."""

    def __init__(self, base: Path, steps: int) -> None:
        self.env = {"MIGRATE_ROOT": str(base)}
        write_project(base, steps, plain=False)
        timed([*MIGRATE, "hash"], env=self.env)  # its checksums file, as a service has one
        self.dbmate = dbmate_binary()
        self.dir = dbmate_dir(base, steps)

    def ours(self, action: str, url: str) -> float:
        return timed([*MIGRATE, action, "--url", url], env=self.env)

    def theirs(self, action: str, url: str) -> float:
        return timed(
            [
                self.dbmate, "--url", dbmate_url(url), "--migrations-dir", str(self.dir),
                "--no-dump-schema", action,
            ]
        )  # fmt: skip

    def ours_fleet(self, targets: Path) -> float:
        args = ["up", "--targets-file", str(targets), "--jobs", "4", "--per-host", "4"]
        return timed([*MIGRATE, *args], env=self.env)

    def theirs_fleet(self, urls: list[str]) -> float:
        dbmate = f"{self.dbmate} --migrations-dir {self.dir} --no-dump-schema --url"
        feed = "\n".join(dbmate_url(u) for u in urls)
        return timed(
            ["sh", "-c", f"printf '%s\\n' \"$0\" | xargs -P 4 -I{{}} {dbmate} {{}} up", feed]
        )


def pairs(runs: int, ours: object, theirs: object) -> tuple[list[float], list[float]]:
    """Alternating timings of two callables, each first in turn."""
    mine: list[float] = []
    other: list[float] = []
    for i in range(runs):
        order = (("ours", ours), ("theirs", theirs))
        for side, call in order if i % 2 == 0 else order[::-1]:
            (mine if side == "ours" else other).append(call())  # type: ignore[operator]
    return mine, other


def row(name: str, mine: list[float], other: list[float]) -> None:
    ratios = [a / b for a, b in zip(mine, other, strict=True)]
    print(
        f"{name:<26} ours {median(mine) * 1000:8.1f} ms  dbmate {median(other) * 1000:8.1f} ms"
        f"  ours/dbmate {spread(ratios)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="pairs of each measure")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fleet", type=int, default=60, help="databases (0: no fleet)")
    args = parser.parse_args()
    srv = server()
    drop_prefixed(srv, PREFIX)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as folder:
        peers = Peers(Path(folder), args.steps)
        try:
            mine, other = create_db(srv, prefix=PREFIX), create_db(srv, prefix=PREFIX)
            peers.ours("up", mine)
            peers.theirs("up", other)
            row("no-op start (up)", *pairs(args.runs, lambda: peers.ours("up", mine),
                                           lambda: peers.theirs("up", other)))  # fmt: skip
            row("status", *pairs(args.runs, lambda: peers.ours("status", mine),
                                 lambda: peers.theirs("status", other)))  # fmt: skip

            def empty() -> str:
                return create_db(srv, prefix=PREFIX)

            row(f"{args.steps} steps from empty", *pairs(
                args.runs, lambda: peers.ours("up", empty()), lambda: peers.theirs("up", empty())
            ))  # fmt: skip
            if args.fleet:
                runs = max(3, args.runs // 2)
                ups: tuple[list[float], list[float]] = ([], [])
                rechecks: tuple[list[float], list[float]] = ([], [])
                for i in range(runs):
                    for side in ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours"):
                        dbs = create_dbs(srv, args.fleet, prefix=PREFIX)
                        if side == "ours":
                            targets = Path(folder) / "targets.txt"
                            targets.write_text("".join(f"{u}\n" for u in dbs))
                            ups[0].append(peers.ours_fleet(targets))
                            rechecks[0].append(peers.ours_fleet(targets))
                        else:
                            ups[1].append(peers.theirs_fleet(dbs))
                            rechecks[1].append(peers.theirs_fleet(dbs))
                        drop_dbs(srv, dbs)
                row(f"fleet of {args.fleet}: up", *ups)
                row(f"fleet of {args.fleet}: recheck", *rechecks)
        finally:
            drop_prefixed(srv, PREFIX)


if __name__ == "__main__":
    main()
