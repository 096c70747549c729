"""Rehearsal against the same steps run with `up` on a copy made by hand.

    python bench/rehearse.py [--rows 20000] [--runs 5]

A patient database at version 1 holding ``--rows`` patients is rehearsed to head, side by
side (alternating, each side first in turn) with what a careful operator does by hand:
``pg_dump -Fc`` of it, ``createdb`` and ``pg_restore`` of the copy, ``migrate patient up``
on the copy, then ``dropdb``. The rehearsal does that and more (it measures every step,
goes back down and hashes every row twice); the ratio is rehearsal / by hand, per pair,
with its median and range. Target: at most 1.3x. The databases are named bench_rh_*. Not
a test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
from _common import (
    ROOT,
    create_db,
    database_of,
    drop_db,
    drop_prefixed,
    median,
    server,
    spread,
    timed,
    with_database,
)

from alembic_common.safety import backup

PREFIX = "bench_rh_"
MIGRATE = [sys.executable, str(ROOT / "scripts" / "migrate.py"), "patient"]
PATIENTS = """
INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth,
                      phone, email, city, postal_code, country, updated_at)
SELECT 1 + i %% 8, 'P' || lpad(i::text, 7, '0'), 'First' || i, 'Last' || i,
       date '1950-01-01' + (i %% 20000), '+1514555' || lpad((i %% 10000)::text, 4, '0'),
       'p' || i || '@example.org', 'Montreal', 'H2X 1Y4', 'Canada', '2025-01-01Z'
  FROM generate_series(1, %s) AS i
"""


def by_hand(original: str, srv: str, folder: Path) -> float:
    """pg_dump, createdb, pg_restore, up, dropdb: the operator's rehearsal, timed whole."""
    with psycopg.connect(original) as conn:
        tools = backup.choose(conn.info.server_version)
    dump = folder / "by-hand.dump"
    copy = f"{PREFIX}copy"
    url = with_database(srv, copy)
    return sum(
        (
            timed([tools.path("pg_dump"), "-Fc", f"--file={dump}", f"--dbname={original}"]),
            timed([tools.path("psql"), "-qc", f'CREATE DATABASE "{copy}"', srv]),
            timed([tools.path("pg_restore"), "--exit-on-error", f"--dbname={url}", str(dump)]),
            timed([*MIGRATE, "up", "--url", url]),
            timed([tools.path("psql"), "-qc", f'DROP DATABASE "{copy}"', srv]),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5, help="pairs")
    args = parser.parse_args()
    srv = server()
    drop_prefixed(srv, PREFIX)
    original = create_db(srv, prefix=PREFIX)
    try:
        subprocess.run([*MIGRATE, "up", "--version", "1", "--url", original], check=True)
        with psycopg.connect(original) as conn:
            conn.execute(PATIENTS, [args.rows])
        ours: list[float] = []
        theirs: list[float] = []
        with tempfile.TemporaryDirectory(prefix="bench-rehearse-") as folder:
            for i in range(args.runs):
                for side in ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours"):
                    if side == "ours":
                        ours.append(timed([*MIGRATE, "rehearse", "--url", original, "--json"]))
                    else:
                        theirs.append(by_hand(original, srv, Path(folder)))
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(f"database {database_of(original)}: {args.rows:,} patients, version 1 to head")
        print(f"rehearse           {median(ours):.2f} s (range {min(ours):.2f}-{max(ours):.2f})")
        print(
            f"by hand (copy, up) {median(theirs):.2f} s (range {min(theirs):.2f}-{max(theirs):.2f})"
        )
        print(f"rehearse / by hand {spread(ratios)}  (target <= 1.3x)")
    finally:
        drop_db(srv, original)


if __name__ == "__main__":
    main()
