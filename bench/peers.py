"""Against the peers: dbmate, Sqitch and plain Alembic, on the same trivial steps, side by side.

    python bench/peers.py [--runs 7] [--steps 300] [--fleet 60] [--peers dbmate,sqitch,alembic]
                          [--fleet-peers dbmate]

dbmate (the Go tool) is installed with npm into a cache outside the repository
(``$XDG_CACHE_HOME/migrate-bench``, else ``~/.cache/migrate-bench``) when it is missing;
Sqitch comes from Debian (``apt-get install sqitch libdbd-pg-perl``, run when missing and
allowed, else Sqitch is left out, saying so); plain Alembic is this venv's, with the minimal
env.py of bench/bridge_overhead.py. Every tool gets the same SQL: ``--steps`` trivial steps
(``CREATE TABLE t_N (id int)``), ours as a generated service of Alembic revisions with its
``hash`` files (checksums.txt and plain.json, as every service has them), dbmate's as
``-- migrate:up`` files, Sqitch's as a plan with deploy and revert scripts, Alembic's as
the same revision files. Each tool works on databases of its own; runs go round the tools,
each first in turn, and every ratio (ours / peer) is the median of the rounds' ratios with
its range:

  * no-op start: ``up`` (dbmate ``up``, ``sqitch deploy``, ``alembic upgrade head``) at head,
    beside this stack's floor (Python importing psycopg and leaving with ``os._exit``);
  * status: ``status`` (dbmate ``status``, ``sqitch status``, ``alembic current``) at head;
  * per step: ``up`` of every step on an empty database;
  * a fleet of ``--fleet`` empty databases to head (``--fleet-peers`` only: Sqitch runs psql
    once per step, minutes for a fleet): ours ``up --targets-file --jobs 4``, each peer as
    its users run a fleet, ``xargs -P 4``; then the same again (the recheck).

The databases are named bench_peer_*. Not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
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
from bridge_overhead import psql_binary, write_project

PREFIX = "bench_peer_"
MIGRATE = [sys.executable, str(ROOT / "scripts" / "migrate.py"), "bench"]
MARK = "postgresql://bench-placeholder/"  # where a fleet's command takes each URL


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


def sqitch_binary() -> str | None:
    """Sqitch, installed from Debian when missing and this user may; else None."""
    found = shutil.which("sqitch")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "sqitch", "libdbd-pg-perl"],
            check=False,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("sqitch")
    return found


def sqitch_dir(base: Path, steps: int) -> Path:
    folder = base / "sqitch"
    for sub in ("deploy", "revert"):
        (folder / sub).mkdir(parents=True)
    (folder / "sqitch.conf").write_text("[core]\n\tengine = pg\n")
    plan = ["%syntax-version=1.0.0", "%project=bench", ""]
    for v in range(1, steps + 1):
        plan.append(f"t_{v} 2026-01-01T00:00:00Z Bench <bench@example.com> # step {v}")
        (folder / "deploy" / f"t_{v}.sql").write_text(
            f"BEGIN;\nCREATE TABLE t_{v} (id int);\nCOMMIT;\n"
        )
        (folder / "revert" / f"t_{v}.sql").write_text(f"BEGIN;\nDROP TABLE t_{v};\nCOMMIT;\n")
    (folder / "sqitch.plan").write_text("\n".join(plan) + "\n")
    return folder


def sqitch_target(url: str) -> str:
    return "db:" + url.replace("postgresql://", "pg://", 1)


class Tools:
    """Each tool's commands on a database: ``run(tool, action, url)``, ``fleet(tool, urls)``."""

    def __init__(self, base: Path, steps: int, peers: list[str]) -> None:
        self.env = {"MIGRATE_ROOT": str(base)}
        write_project(base, steps, plain=False)
        timed([*MIGRATE, "hash"], env=self.env)  # its checksums and plain-SQL files
        self.peers: list[str] = []
        if "dbmate" in peers:
            self.dbmate = dbmate_binary()
            self.dbmate_dir = dbmate_dir(base, steps)
            self.peers.append("dbmate")
        if "sqitch" in peers:
            found = sqitch_binary()
            if found is None:
                print("Sqitch is not installed (apt-get install sqitch libdbd-pg-perl): left out")
            else:
                self.sqitch = found
                self.sqitch_dir = sqitch_dir(base, steps)
                psql = Path(psql_binary(server())).parent
                self.sqitch_env = {"PATH": f"{psql}:{os.environ.get('PATH', '')}"}
                self.peers.append("sqitch")
        if "alembic" in peers:
            self.alembic_ini = write_project(base / "plain", steps, plain=True)
            self.peers.append("alembic")

    def command(self, tool: str, action: str, url: str) -> tuple[list[str], dict[str, str]]:
        """The command line (and environment) of ``action`` (up or status) by ``tool``."""
        if tool == "floor":  # this stack's own floor: Python importing psycopg, nothing more
            return [sys.executable, "-c", "import os, psycopg; os._exit(0)"], {}
        if tool == "ours":
            return [*MIGRATE, action, "--url", url], self.env
        if tool == "dbmate":
            return [
                self.dbmate, "--url", dbmate_url(url), "--migrations-dir", str(self.dbmate_dir),
                "--no-dump-schema", action,
            ], {}  # fmt: skip
        if tool == "sqitch":
            verb = "deploy" if action == "up" else "status"
            return [
                self.sqitch, "--chdir", str(self.sqitch_dir), verb, sqitch_target(url)
            ], self.sqitch_env  # fmt: skip
        verb = ["upgrade", "head"] if action == "up" else ["current"]
        return [
            sys.executable, "-m", "alembic", "-c", str(self.alembic_ini), "-x", f"url={url}", *verb
        ], {"PYTHONPATH": str(ROOT)}  # fmt: skip

    def run(self, tool: str, action: str, url: str) -> float:
        cmd, env = self.command(tool, action, url)
        return timed(cmd, env=env)

    def fleet(self, tool: str, urls: list[str], folder: Path) -> tuple[float, float]:
        """``urls`` to head: ours with its own fleet options, a peer through ``xargs -P 4``;
        the wall time and the CPU time of the tool's processes (the server's is not counted)."""
        if tool == "ours":
            targets = folder / "targets.txt"
            targets.write_text("".join(f"{u}\n" for u in urls))
            args = ["up", "--targets-file", str(targets), "--jobs", "4", "--per-host", "4"]
            return with_cpu([*MIGRATE, *args], env=self.env)
        # xargs puts each database's argument, as the tool takes it, where the URL goes.
        cmd, env = self.command(tool, "up", MARK)
        at = next(i for i, arg in enumerate(cmd) if MARK in arg)
        feed = "\n".join(self.command(tool, "up", u)[0][at] for u in urls)
        cmd[at] = "{}"
        xargs = f"printf '%s\\n' \"$0\" | xargs -P 4 -d '\\n' -I{{}} {shlex.join(cmd)}"
        return with_cpu(["sh", "-c", xargs, feed], env=env)


def with_cpu(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time, and user plus system time of the process and every descendant it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed(cmd, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def rounds(runs: int, tools: list[str], call: Callable[[str], float]) -> dict[str, list[float]]:
    """Each tool once a round, the round's first tool moving on by one each time."""
    found: dict[str, list[float]] = {t: [] for t in tools}
    for i in range(runs):
        shift = i % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            found[tool].append(call(tool))
    return found


def rows(name: str, found: dict[str, list[float]]) -> None:
    mine = found["ours"]
    print(f"{name:<26} ours {median(mine) * 1000:9.1f} ms")
    for tool, theirs in found.items():
        if tool != "ours":
            ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
            print(
                f"{'':<26} {tool:<7} {median(theirs) * 1000:9.1f} ms   ours/{tool} {spread(ratios)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="rounds of each measure")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fleet", type=int, default=60, help="databases (0: no fleet)")
    parser.add_argument("--peers", default="dbmate,sqitch,alembic")
    parser.add_argument("--fleet-peers", default="dbmate")
    args = parser.parse_args()
    srv = server()
    drop_prefixed(srv, PREFIX)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as folder:
        tools = Tools(Path(folder), args.steps, args.peers.split(","))
        every = ["ours", *tools.peers]
        try:
            at_head = {t: create_db(srv, prefix=PREFIX) for t in every}
            for tool, url in at_head.items():
                tools.run(tool, "up", url)
            at_head["floor"] = at_head["ours"]
            starts = [*every, "floor"]
            rows(
                "no-op start (up)",
                rounds(args.runs, starts, lambda t: tools.run(t, "up", at_head[t])),
            )
            rows("status", rounds(args.runs, starts, lambda t: tools.run(t, "status", at_head[t])))
            rows(
                f"{args.steps} steps from empty",
                rounds(
                    args.runs, every, lambda t: tools.run(t, "up", create_db(srv, prefix=PREFIX))
                ),
            )
            fleet_tools = ["ours", *(t for t in tools.peers if t in args.fleet_peers.split(","))]
            if args.fleet and len(fleet_tools) > 1:
                runs = max(3, args.runs // 2)
                ups: dict[str, list[float]] = {t: [] for t in fleet_tools}
                cpu: dict[str, list[float]] = {t: [] for t in fleet_tools}
                rechecks: dict[str, list[float]] = {t: [] for t in fleet_tools}
                for i in range(runs):
                    shift = i % len(fleet_tools)
                    for tool in fleet_tools[shift:] + fleet_tools[:shift]:
                        dbs = create_dbs(srv, args.fleet, prefix=PREFIX)
                        wall, used = tools.fleet(tool, dbs, Path(folder))
                        ups[tool].append(wall)
                        cpu[tool].append(used)
                        rechecks[tool].append(tools.fleet(tool, dbs, Path(folder))[0])
                        drop_dbs(srv, dbs)
                rows(f"fleet of {args.fleet}: up", ups)
                rows(f"fleet of {args.fleet}: up, CPU", cpu)
                rows(f"fleet of {args.fleet}: recheck", rechecks)
        finally:
            drop_prefixed(srv, PREFIX)


if __name__ == "__main__":
    main()
