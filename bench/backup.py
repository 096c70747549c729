"""Backups: ``migrate backup``/``restore`` against pg_dump/pg_restore run by hand.

On a patient database at head with ``--rows`` patients (default 1,000,000):

* backup: ``migrate patient backup`` (custom format, verified with ``pg_restore --list``,
  sha256, row counts in the dump's snapshot) against ``pg_dump --format=custom``;
* restore: ``migrate patient restore`` (drop everything and restore in one transaction)
  against ``pg_restore --clean --if-exists --single-transaction --exit-on-error``;
* the directory format with ``-j 2`` against one job (pg_dump by hand, and ours);
* what ``up --backup`` adds to a no-op ``up`` (nothing to do, so no backup: target ~0).

Each pair runs alternately; figures are medians (our side includes Python's start-up).
Target: ours <= 1.1x by hand.

    python bench/backup.py [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg
from _common import ROOT, create_db, drop_db, median, server, timed

from alembic_common.core import runner, services
from alembic_common.core.settings import Settings
from alembic_common.safety import backup

FILL = """
INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth,
                      gender, phone, email, city, country, blood_type, preferred_language)
SELECT 1 + g % 50, 'P-' || g, 'First' || g, 'Last' || (g % 9973), DATE '1950-01-01' + g % 20000,
       (ARRAY['female', 'male', NULL])[1 + g % 3], '+1514555' || lpad((g % 10000)::text, 4, '0'),
       'p' || g || '@example.org', 'City' || g % 300, (ARRAY['Canada', 'USA', 'France'])[1 + g % 3],
       (ARRAY['O+', 'A-', NULL])[1 + g % 3], 'fr'
FROM generate_series(1, %s) g
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    srv = server()
    db = create_db(srv)
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    try:
        service = services.get("patient", ROOT)
        conf = Settings("patient", db, "--url")
        runner.up(service, conf, None, runner.RunOptions(contract=True))
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(FILL.replace("%s", str(int(args.rows))))
            conn.execute("VACUUM ANALYZE patients")
            tools = backup.choose(conn.info.server_version)
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
            print(f"{args.rows:,} patients, database {size.fetchone()[0]}, tools {tools}")  # type: ignore[index]
        migrate = [sys.executable, str(ROOT / "scripts" / "migrate.py"), "patient"]
        with backup.client(conf) as (conninfo, _):  # pg_dump's own conninfo, as ours builds it
            pass

        def ours_backup(extra: list[str] = ()) -> float:  # type: ignore[assignment]
            return timed([*migrate, "backup", "--url", db, "--to", str(work / "ours"), *extra])

        def by_hand(fmt: list[str], target: str) -> float:
            out = work / target
            shutil.rmtree(out, ignore_errors=True)
            out.unlink(missing_ok=True) if out.is_file() else None
            return timed([tools.path("pg_dump"), *fmt, f"--file={out}", f"--dbname={conninfo}"])

        o_b, h_b = [], []
        for _ in range(args.runs):
            o_b.append(ours_backup())
            h_b.append(by_hand(["--format=custom"], "hand.dump"))
        dump = backup.listing(service, work / "ours")[-1].path

        o_r, h_r = [], []
        for _ in range(args.runs):
            o_r.append(timed([*migrate, "restore", str(dump), "--url", db]))
            h_r.append(
                timed(
                    [
                        tools.path("pg_restore"),
                        "--clean",
                        "--if-exists",
                        "--single-transaction",
                        "--exit-on-error",
                        f"--dbname={conninfo}",
                        str(dump),
                    ]
                )
            )

        d1, d2, o2 = [], [], []
        for _ in range(args.runs):
            d1.append(by_hand(["--format=directory", "--jobs=1"], "hand1.dir"))
            d2.append(by_hand(["--format=directory", "--jobs=2"], "hand2.dir"))
            o2.append(ours_backup(["--jobs", "2"]))

        plain, backed = [], []
        for _ in range(max(5, args.runs)):
            plain.append(timed([*migrate, "up", "--url", db]))
            backed.append(
                timed([*migrate, "up", "--url", db, "--backup", "--backup-to", str(work / "noop")])
            )
        noop_backups = len(backup.listing(service, work / "noop"))

        def row(label: str, ours: list[float], hand: list[float], target: str = "") -> None:
            o, h = median(ours), median(hand)
            print(f"  {label:<44} {o:7.2f} s  vs {h:7.2f} s   {o / h:5.2f}x {target}")

        print(f"median of {args.runs} runs each (ours vs by hand)")
        row("backup (custom) vs pg_dump -Fc", o_b, h_b, "(target <= 1.1x)")
        row("restore vs pg_restore --clean -1", o_r, h_r, "(target <= 1.1x)")
        row("pg_dump -Fd -j 2 vs -j 1 (by hand)", d2, d1)
        row("backup --jobs 2 vs pg_dump -Fd -j 2", o2, d2)
        o, p = median(backed), median(plain)
        print(
            f"  {'no-op up --backup vs no-op up':<44} {o:7.2f} s  vs {p:7.2f} s   "
            f"+{(o - p) * 1000:.0f} ms, {noop_backups} backup(s) taken"
        )
    finally:
        drop_db(srv, db)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
