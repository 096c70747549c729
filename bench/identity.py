"""Patient codes unique by identity (NFKC, case folding, spaces) against today's
lower(btrim(...)): inserting 1,000,000 patients and looking one up by code, side by side.

Two tables of 1,000,000 patients over 1,000 entities, one with each unique index, on one
database. Inserts: INSERT ... SELECT of all rows into each table, alternating which goes
first, per round (ASCII codes 'P-123', and accented ones 'É-123'). Lookups: pgbench (the bare
anchor), one code per transaction through each index, alternating, per round; one client by
default (on two cores a second one makes pgbench fight the server and the noise exceed the
difference). Medians with their range; targets: lookups <= 1.1x, inserts <= 1.2x.

    python bench/identity.py [--rows 1000000] [--rounds 7] [--clients 1]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time

import psycopg
from _common import create_db, drop_db, median, server, spread

from alembic_common.online.ddl import sql_statements
from alembic_common.tenancy import identity

KEYS = {"lower": "lower(btrim(patient_id))", "identity": "identity_key(patient_id)"}
LOOKUP = {"lower": "lower(btrim({v}))", "identity": "identity_key({v})"}


def prepare(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in sql_statements(identity.SQL_FILE.read_text()):
            conn.execute(statement)
        for name, key in KEYS.items():
            conn.execute(
                f"CREATE TABLE by_{name} (id bigserial PRIMARY KEY, healthcare_entity_id int,"
                " patient_id text)"
            )
            conn.execute(f"CREATE UNIQUE INDEX ON by_{name} (healthcare_entity_id, {key})")


def insert(url: str, name: str, rows: int, prefix: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE by_{name}")
        began = time.perf_counter()
        conn.execute(
            f"INSERT INTO by_{name} (healthcare_entity_id, patient_id) SELECT 1 + i %% 1000,"
            f" '{prefix}-' || i FROM generate_series(1, %s) i",
            [rows],
        )
        took = time.perf_counter() - began
        conn.execute(f"VACUUM ANALYZE by_{name}")
    return took


def lookups(url: str, name: str, rows: int, seconds: int, clients: int) -> float:
    """Mean latency in ms of pgbench looking one code up by the table's index."""
    script = (
        f"\\set n random(1, {rows})\n"
        f"SELECT id FROM by_{name} WHERE healthcare_entity_id = 1 + :n % 1000"
        f" AND {KEYS[name]} = {LOOKUP[name].format(v=chr(39) + 'P-' + chr(39) + ' || :n')};\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as file:
        file.write(script)
        file.flush()
        done = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-T", str(seconds), "-f", file.name,
             url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    return float(re.search(r"latency average = ([0-9.]+) ms", done.stdout).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    base = server()
    url = create_db(base, prefix="bench_identity")
    try:
        prepare(url)
        for prefix in ("É", "P"):  # accented codes, then ASCII ones (left for the lookups)
            ratios, times = [], {"lower": [], "identity": []}
            for round_ in range(args.rounds):
                order = ["lower", "identity"] if round_ % 2 == 0 else ["identity", "lower"]
                took = {name: insert(url, name, args.rows, prefix) for name in order}
                for name in took:
                    times[name].append(took[name])
                ratios.append(took["identity"] / took["lower"])
            print(
                f"insert {args.rows:,} codes '{prefix}-n': identity {median(times['identity']):.2f} s"
                f" vs lower {median(times['lower']):.2f} s: {spread(ratios)}x ({args.rounds} rounds)"
            )
        ratios, lat = [], {"lower": [], "identity": []}
        for round_ in range(args.rounds):
            order = ["lower", "identity"] if round_ % 2 == 0 else ["identity", "lower"]
            got = {
                name: lookups(url, name, args.rows, args.seconds, args.clients) for name in order
            }
            for name in got:
                lat[name].append(got[name])
            ratios.append(got["identity"] / got["lower"])
        print(
            f"lookup by code (pgbench, {args.clients} clients): identity {median(lat['identity']):.3f} ms vs"
            f" lower {median(lat['lower']):.3f} ms: {spread(ratios)}x ({args.rounds} rounds)"
        )
    finally:
        drop_db(base, url)


if __name__ == "__main__":
    main()
