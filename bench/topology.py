"""What production's checks cost: a no-op `up` before and after them, and the contract gate
with a pooler's console to read.

1. The checks every connection now makes (pooler and standby detection, in the query that
   sets the session's search_path) on a no-op `up` (database at head), measured side by
   side against the code just before them: a git worktree of the commit that precedes the
   one adding ``alembic_common/safety/privileges.py`` (or ``--baseline REV``). Both run against the
   same database, alternating; the figures are medians with their range, and the
   difference per pair. Target: under 5 ms more. Plain `alembic upgrade head` with a
   minimal env.py (the bare anchor) runs beside them.
2. The gate with a pooler configured: a database whose next step is a contract step held
   back by an old release connected through PgBouncer (transaction mode), on the private
   SCRAM cluster of tests/topology.py. `up --version CONTRACT` (a held no-op) with
   MIGRATE_POOLER_URLS naming the pooler's console against the same run without it.

    python bench/topology.py [--runs 15] [--baseline REV]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
from _common import ROOT, create_db, drop_db, server, spread, timed
from noop_up import anchor_project

sys.path.insert(0, str(ROOT / "tests"))


def baseline_revision() -> str:
    """The commit before the production checks: the parent of the one adding privileges.py."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "alembic_common/safety/privileges.py"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout.split()  # fmt: skip
    if not added:
        raise SystemExit("no commit adds alembic_common/safety/privileges.py: give --baseline REV")
    return f"{added[-1]}~1"


def resolved(revision: str) -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short=10", revision],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    return found.stdout.strip()


def worktree(revision: str, folder: Path) -> Path:
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), revision],
        capture_output=True, cwd=ROOT, check=True,
    )  # fmt: skip
    return folder


def noop(runs: int, revision: str) -> None:
    srv = server()
    db = create_db(srv)
    with tempfile.TemporaryDirectory() as tmp:
        before = worktree(revision, Path(tmp) / "before")
        try:
            ini = anchor_project(Path(tmp) / "anchor")

            def up(root: Path) -> list[str]:
                return [sys.executable, str(root / "scripts/migrate.py"), "patient", "up"]

            args = ["--url", db, "--contract"]
            plain = [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url={db}"]
            plain += ["upgrade", "head"]
            timed([*up(ROOT), *args], {"PYTHONPATH": str(ROOT)})  # to head; warm the caches
            for _ in range(2):
                timed([*up(before), *args], {"PYTHONPATH": str(before)})
                timed(plain, {"PYTHONPATH": str(ROOT)})
            now_t, before_t, plain_t = [], [], []
            for i in range(runs):
                pair = [
                    (now_t, [*up(ROOT), *args], ROOT),
                    (before_t, [*up(before), *args], before),
                ]
                for found, cmd, root in pair if i % 2 == 0 else reversed(pair):
                    found.append(timed(cmd, {"PYTHONPATH": str(root)}))
                plain_t.append(timed(plain, {"PYTHONPATH": str(ROOT)}))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT)
            drop_db(srv, db)
    print(f"no-op up, {runs} runs each, alternating, median (range)")
    compare(
        ("with the checks (this checkout)", now_t),
        (f"before them ({resolved(revision)})", before_t),
        "(target < 5 ms)",
    )
    ratio = [n / p for n, p in zip(now_t, plain_t, strict=True)]
    print(f"  {'alembic upgrade head, minimal env':<38} {spread(plain_t, 1000, 1)} ms")
    print(f"  {'ours / that anchor':<38} {spread(ratio)}x")


def compare(ours: tuple[str, list[float]], other: tuple[str, list[float]], note: str) -> None:
    """Both sides' medians, the difference per pair and the ratio, each with its range."""
    (label, mine), (other_label, theirs) = ours, other
    print(f"  {label:<38} {spread(mine, 1000, 1)} ms")
    print(f"  {other_label:<38} {spread(theirs, 1000, 1)} ms")
    extra = [a - b for a, b in zip(mine, theirs, strict=True)]
    print(f"  {'more per pair':<38} {spread(extra, 1000, 1)} ms   {note}")
    ratio = [a / b for a, b in zip(mine, theirs, strict=True)]
    print(f"  {'ratio per pair':<38} {spread(ratio)}x")


def gate(runs: int) -> None:
    from topology import POOLED_ROLES, topology  # type: ignore[import-not-found]

    from alembic_common.core import services

    name = "patient"
    history = services.get(name, ROOT).migrations
    contract = next(m.version for m in history if m.phase == "contract")
    old = max(m.version for m in history if m.version < contract)
    with topology() as topo:
        if "transaction" not in topo.bouncers:
            print(f"gate with a pooler: skipped ({topo.missing.get('transaction')})")
            return
        assert topo.primary is not None
        pool = topo.bouncers["transaction"]
        with psycopg.connect(topo.primary.admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_gate OWNER mt_owner")
        url = topo.primary.url("mt_owner", POOLED_ROLES["mt_owner"], "bench_gate")
        cmd = [sys.executable, str(ROOT / "scripts/migrate.py"), name, "up", "--url", url]
        timed([*cmd, "--version", str(old)])
        with psycopg.connect(
            pool.url("mt_app", "bench_gate"), autocommit=True, application_name=f"{name}@{old}"
        ) as release:
            release.execute("SELECT 1")
            held = [*cmd, "--version", str(contract)]
            consoles = {"MIGRATE_POOLER_URLS": pool.admin}
            with_t, without_t = [], []
            for i in range(runs):
                pair = [(with_t, consoles), (without_t, {})]
                for found, env in pair if i % 2 == 0 else reversed(pair):
                    found.append(timed(held, env))
    print(f"contract gate, a held no-op up with an old release behind PgBouncer, {runs} runs")
    compare(
        ("with MIGRATE_POOLER_URLS (1 console)", with_t),
        ("without it", without_t),
        "(the console's cost)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline", default=None, help="the revision before the checks")
    args = parser.parse_args()
    noop(args.runs, args.baseline or baseline_revision())
    gate(args.runs)


if __name__ == "__main__":
    main()
