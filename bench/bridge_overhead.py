"""Trivial migrations applied through the bridge, against plain Alembic without it.

For each size (default 200 and 1,000) it generates one throwaway Alembic project twice
over the same revision files: once with the shared env.py (schema_migrations bridge, run
lock, session set-up), once with a minimal env.py (one transaction per migration, no
bridge; it logs Alembic's step lines as `alembic init`'s env.py does, like the shared one).
Each runs `alembic upgrade head` on a fresh database, in turn, each run starting with
another side. The floor is psql running the same steps' SQL (BEGIN; CREATE TABLE; the
alembic_version write; COMMIT) from one script on one connection. Per-step cost is the
whole run divided by the number of steps. Target: the bridge at most 1.10x plain Alembic.

    python bench/bridge_overhead.py [--sizes 200,1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg
from _common import ROOT, create_db, drop_db, server, spread, timed

from alembic_common.safety import backup

# Minimal, but it logs Alembic's "Running upgrade" line per step as the env.py of
# `alembic init` does (through its ini's logging sections), and as the shared one does.
PLAIN_ENV = """
import logging
from alembic import context
from sqlalchemy import create_engine, pool

logging.basicConfig(format="%(levelname)-5.5s [%(name)s] %(message)s")
logging.getLogger("alembic").setLevel(logging.INFO)

url = context.get_x_argument(as_dictionary=True)["url"].replace("postgresql://", "postgresql+psycopg://", 1)
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
"""


def write_project(base: Path, count: int, plain: bool) -> Path:
    folder = base / "services" / "bench"
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    shutil.copy(ROOT / "services/patient/alembic.ini", folder / "alembic.ini")
    shutil.copy(ROOT / "services/patient/migrations/script.py.mako", folder / "migrations")
    (folder / "models.py").write_text(
        "from sqlalchemy import MetaData\ntarget_metadata = MetaData()\n"
    )
    env = PLAIN_ENV if plain else (ROOT / "services/patient/migrations/env.py").read_text()
    (folder / "migrations" / "env.py").write_text(env)
    for v in range(1, count + 1):
        down = repr(f"{v - 1:04d}") if v > 1 else "None"
        (versions / f"{v:04d}_step_{v}.py").write_text(
            f'"""Trivial step {v}"""\nfrom alembic import op\n'
            f'revision = "{v:04d}"\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n'
            f'def upgrade():\n    op.execute("CREATE TABLE t_{v} (id int)")\n'
            f'def downgrade():\n    op.execute("DROP TABLE t_{v}")\n'
        )
    return folder / "alembic.ini"


def psql_script(base: Path, count: int) -> Path:
    """The SQL plain Alembic sends for ``count`` steps, one transaction each."""
    lines = ["CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"]
    for v in range(1, count + 1):
        write = (
            f"INSERT INTO alembic_version VALUES ('{v:04d}')"
            if v == 1
            else f"UPDATE alembic_version SET version_num = '{v:04d}' WHERE version_num = '{v - 1:04d}'"
        )
        lines.append(f"BEGIN;\nCREATE TABLE t_{v} (id int);\n{write};\nCOMMIT;")
    path = base / f"steps_{count}.sql"
    path.write_text("\n".join(lines) + "\n")
    return path


def psql_binary(srv: str) -> str:
    with psycopg.connect(srv) as conn:
        version = conn.info.server_version
    return str(backup.choose(version).folder / "psql")


def measure(tmp: Path, count: int, runs: int, srv: str, psql: str) -> dict[str, list[float]]:
    ours_ini = write_project(tmp / f"ours{count}", count, plain=False)
    plain_ini = write_project(tmp / f"plain{count}", count, plain=True)
    script = psql_script(tmp, count)
    results: dict[str, list[float]] = {"ours": [], "plain": [], "psql": []}
    sides = [("ours", ours_ini), ("plain", plain_ini), ("psql", None)]
    for run in range(runs):
        # Each run starts with a different side, so none always follows the same one.
        for name, ini in sides[run % 3 :] + sides[: run % 3]:
            db = create_db(srv)
            try:
                if ini is None:
                    cmd = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", str(script)]
                else:
                    cmd = [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url={db}"]
                    cmd += ["upgrade", "head"]
                results[name].append(timed(cmd, env={"PYTHONPATH": str(ROOT)}))
            finally:
                drop_db(srv, db)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="200,1000", help="comma-separated step counts")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    srv = server()
    psql = psql_binary(srv)
    print(f"trivial migrations on fresh databases, median (range) of {args.runs} runs each")
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(n) for n in args.sizes.split(",")):
            found = measure(Path(tmp), count, args.runs, srv, psql)
            ratios = [o / p for o, p in zip(found["ours"], found["plain"], strict=True)]
            per_step = 1000 / count
            print(f"{count} steps:")
            for name, label in (
                ("ours", "through the bridge (shared env.py)"),
                ("plain", "plain Alembic (minimal env.py)  "),
                ("psql", "psql, the same SQL (the floor)   "),
            ):
                print(
                    f"  {label} {spread(found[name], digits=2)} s, "
                    f"{spread(found[name], per_step, digits=2)} ms/step"
                )
            print(f"  ratio bridge / plain               {spread(ratios)}x   (target <= 1.10x)")


if __name__ == "__main__":
    main()
