"""200 trivial migrations applied through the bridge, against plain Alembic without it.

Generates one throwaway Alembic project twice over the same 200 revision files: once
with the shared env.py (schema_migrations bridge, lock, session setup), once with a
stock env.py (one transaction per migration, no bridge). Each runs `alembic upgrade
head` on a fresh database, alternating. Target: 1.15x or less.

    python bench/bridge_overhead.py [--migrations 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _common import ROOT, create_db, drop_db, median, server, timed

PLAIN_ENV = """
from alembic import context
from sqlalchemy import create_engine, pool

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--migrations", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    srv = server()
    with tempfile.TemporaryDirectory() as tmp:
        ours_ini = write_project(Path(tmp) / "ours", args.migrations, plain=False)
        plain_ini = write_project(Path(tmp) / "plain", args.migrations, plain=True)
        results: dict[str, list[float]] = {"ours": [], "plain": []}
        for _ in range(args.runs):
            for name, ini in (("ours", ours_ini), ("plain", plain_ini)):
                db = create_db(srv)
                try:
                    cmd = [
                        sys.executable,
                        "-m",
                        "alembic",
                        "-c",
                        str(ini),
                        "-x",
                        f"url={db}",
                        "upgrade",
                        "head",
                    ]
                    results[name].append(timed(cmd, env={"PYTHONPATH": str(ROOT)}))
                finally:
                    drop_db(srv, db)
    o, p = median(results["ours"]), median(results["plain"])
    print(f"{args.migrations} trivial migrations, median of {args.runs} fresh-database runs each")
    print(f"  through the bridge (shared env.py)   {o:6.2f} s")
    print(f"  plain Alembic (no bridge)            {p:6.2f} s")
    print(f"  ratio (bridge / plain)               {o / p:6.2f}x   (target <= 1.15x)")


if __name__ == "__main__":
    main()
