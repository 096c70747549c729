"""Big-table migrations without downtime: batched resumable backfill, expand/contract, safe DDL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
from conftest import PATIENT_HEAD, ROOT, history, query, run_cli, says, versions

ROWS = 200_000
COUNTRIES = ["Canada", "USA", "Morocco", "France", "Spain"]
# The phone expand and contract steps these tests are about (pinned: they test those steps).
PHONE_EXPAND, PHONE_CONTRACT = "4", "5"


def _big_patients(db: str, count_conversions: bool = False) -> None:
    """Patients at version 3 (before the phone expand step), ROWS of them."""
    assert run_cli("patient", "up", "--version", "3", "--url", db).exit_code == 0
    query(
        db,
        "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth,"
        " country, phone) SELECT 1 + g % 7, 'P' || g, 'F', 'L', '1980-01-01',"
        " (ARRAY['Canada','USA','Morocco','France','Spain'])[1 + g % 5],"
        " CASE WHEN g % 97 = 0 THEN NULL WHEN g % 5 < 2 THEN '(514) 5' || lpad((g % 100)::text, 2, '0')"
        " || '-' || lpad((g % 10000)::text, 4, '0') ELSE '06 ' || lpad((g % 100000000)::text, 8, '0') END"
        f" FROM generate_series(1, {ROWS}) g",
    )
    if not count_conversions:
        return
    # Count every conversion of a row, to prove each happens exactly once.
    query(
        db,
        """
        CREATE TABLE conversions (id bigint);
        CREATE FUNCTION count_conversion() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF to_jsonb(OLD) ->> 'phone_e164' IS NULL
               AND to_jsonb(NEW) ->> 'phone_e164' IS NOT NULL THEN
                INSERT INTO conversions VALUES (NEW.id);
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER count_conversion AFTER UPDATE ON patients
            FOR EACH ROW EXECUTE FUNCTION count_conversion();
        """,
    )


def _all_converted(db: str) -> None:
    wrong = query(
        db,
        "SELECT count(*) FROM patients WHERE NOT EXISTS (SELECT FROM"
        " patient_phone_parse(phone, country) AS p WHERE split_part(p, ';ext=', 1)"
        " IS NOT DISTINCT FROM phone_e164"
        " AND nullif(split_part(p, ';ext=', 2), '') IS NOT DISTINCT FROM phone_extension)",
    )
    assert wrong == [(0,)]


def _up(db: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/migrate.py"), "patient", "up", "--url", db, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_backfill_loses_no_concurrent_write(db: str, tmp_path: Path) -> None:
    _big_patients(db)
    written: dict[int, tuple[str, str]] = {}
    inserted: list[str] = []
    stop = threading.Event()
    latencies: list[float] = []

    def writer() -> None:
        rng = random.Random(7)
        with psycopg.connect(db, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                row = rng.randint(1, ROWS)
                name, phone = f"W{i}", f"01 23 {i % 100:02d} {i % 97:02d} 00"
                started = time.perf_counter()
                conn.execute(
                    "UPDATE patients SET first_name = %s, phone = %s WHERE id = %s",
                    (name, phone, row),
                )
                latencies.append(time.perf_counter() - started)
                written[row] = (name, phone)
                if i % 50 == 0:  # an old-release insert, writing only phone
                    code = f"NEW{i}"
                    conn.execute(
                        "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
                        " date_of_birth, country, phone) VALUES (1, %s, 'N', 'N', '2000-01-01', 'France', '06 11 22 33 44')",
                        (code,),
                    )
                    inserted.append(code)

    events = tmp_path / "events.jsonl"
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        proc = _up(db, "--version", PHONE_EXPAND, "--events", str(events))
        _out, err = proc.communicate(timeout=120)
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, err
    assert history(db) == [v for v in versions("patient") if v <= int(PHONE_EXPAND)]
    assert len(written) > 20, "the writer must have run during the migration"
    found = query(
        db, "SELECT id, first_name, phone FROM patients WHERE id = ANY(%s)", (list(written),)
    )
    assert {row: (name, phone) for row, name, phone in found} == written
    assert query(db, "SELECT count(*) FROM patients WHERE patient_id = ANY(%s)", (inserted,)) == [
        (len(inserted),)
    ]
    _all_converted(db)
    assert max(latencies) < 2.0, f"a writer waited {max(latencies):.2f}s"
    backfill = [
        json.loads(line) for line in events.read_text().splitlines() if '"backfill"' in line
    ]
    assert backfill and backfill[-1]["fraction"] == 1.0 and backfill[-1]["rows_per_s"] > 0
    assert {"eta_s", "rows_done", "table"} <= backfill[0].keys()
    assert query(db, "SELECT to_regclass('_migrate_backfill')") == [(None,)]  # dropped when done


def test_killed_backfill_resumes_and_converts_each_row_once(db: str) -> None:
    _big_patients(db, count_conversions=True)
    proc = _up(db, "--version", PHONE_EXPAND)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < ROWS // 10:
        if query(db, "SELECT to_regclass('_migrate_backfill') IS NOT NULL") == [(True,)]:
            done = query(db, "SELECT coalesce(max(rows_done), 0) FROM _migrate_backfill")[0][0]
        time.sleep(0.01)
    assert 0 < done < ROWS, f"could not catch the backfill mid-way (done={done})"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.5)  # the server notices the dead client and rolls back its open batch
    assert history(db) == [1, 2, 3]
    recorded = query(db, "SELECT next_key, rows_done FROM _migrate_backfill")  # one per worker
    converted = query(db, "SELECT count(*) FROM patients WHERE phone_e164 IS NOT NULL")[0][0]
    assert 0 < converted < ROWS
    resumed = _up(db, "--version", PHONE_EXPAND)
    _out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert history(db) == [v for v in versions("patient") if v <= int(PHONE_EXPAND)]
    _all_converted(db)
    with_phone = query(db, "SELECT count(*) FROM patients WHERE phone_e164 IS NOT NULL")[0][0]
    assert with_phone > ROWS // 2  # the valid numbers of the four countries
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM conversions") == [
        (with_phone, with_phone)
    ]
    assert query(db, "SELECT to_regclass('_migrate_backfill')") == [(None,)]
    assert recorded and max(next_key for next_key, _ in recorded) > 1


def test_expand_backfill_contract_round_trip_on_a_big_table(db: str) -> None:
    _big_patients(db)
    before = query(db, "SELECT * FROM patients ORDER BY id")
    held = run_cli("patient", "up", "--hold-contract", "--version", PHONE_CONTRACT, "--url", db)
    assert held.exit_code == 0, held.output  # the held contract step is the target: exit 0
    assert history(db) == [v for v in versions("patient") if v < int(PHONE_CONTRACT)]
    assert run_cli("patient", "up", "--version", PHONE_CONTRACT, "--url", db).exit_code == 0
    assert query(
        db,
        "SELECT count(*) FROM patients WHERE phone IS NULL AND phone_original IS NOT NULL"
        " AND country <> 'Spain'",
    ) == [(0,)]
    assert run_cli("patient", "down", "--version", "4", "--url", db).exit_code == 0
    assert query(db, "SELECT * FROM patients ORDER BY id") == before


SAFE = '''"""Safe DDL sample"""
from alembic_common.online.safe import (
    add_check_constraint, create_index_concurrently, drop_index_concurrently, set_not_null,
)
revision = "{new}"
down_revision = "{old}"
branch_labels = None
depends_on = None

def upgrade():
    create_index_concurrently("idx_patients_code", "patients", "healthcare_entity_id, patient_id, last_name", unique=True)
    add_check_constraint("patients", "patients_name_not_blank", "btrim(last_name) <> ''")
    set_not_null("patients", "city")
    drop_index_concurrently("idx_patients_email")

def downgrade():
    pass
'''


def _safe_migration(root: Path) -> Path:
    new = PATIENT_HEAD + 1
    path = root / f"services/patient/migrations/versions/{new:04d}_safe_sample.py"
    path.write_text(SAFE.format(new=f"{new:04d}", old=f"{new - 1:04d}"))
    return path


def test_safe_helpers_pass_squawk_with_nothing_accepted(project_copy: Path) -> None:
    _safe_migration(project_copy)
    result = run_cli("patient", "lint", "--all", "--json", env={"MIGRATE_ROOT": str(project_copy)})
    findings = [
        f for f in json.loads(result.stdout)["findings"] if f["version"] == PATIENT_HEAD + 1
    ]
    assert findings == [], findings


def test_concurrent_index_helper_recovers_from_an_invalid_index(
    project_copy: Path, db: str
) -> None:
    _safe_migration(project_copy)
    env = {"MIGRATE_ROOT": str(project_copy)}
    ready = run_cli(
        "patient", "up", "--contract", "--version", str(PATIENT_HEAD), "--url", db, env=env
    )
    assert ready.exit_code == 0, ready.output
    query(db, "ALTER TABLE patients DROP CONSTRAINT patients_entity_patient_id_key")
    # every other rule that would refuse a duplicate code (case-blind, identity, ...)
    for (index,) in query(
        db,
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'patients'::regclass"
        " AND indisunique AND NOT indisprimary",
    ):
        query(db, f"DROP INDEX {index}")
    insert = (
        "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
        " date_of_birth, country, city) VALUES (1, 'DUP', 'A', 'B', '1990-01-01', 'France', 'Paris')"
    )
    query(db, insert)
    query(db, insert)  # a duplicate: the unique index build fails and leaves an INVALID index
    failed = run_cli("patient", "up", "--contract", "--url", db, env=env)
    assert failed.exit_code == 1 and says(failed.stderr, f"version {PATIENT_HEAD + 1}")
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_patients_code'::regclass"
    assert query(db, valid) == [(False,)]
    query(db, "DELETE FROM patients WHERE ctid = (SELECT max(ctid) FROM patients)")
    fixed = run_cli("patient", "up", "--contract", "--url", db, env=env)
    assert fixed.exit_code == 0, fixed.output
    assert query(db, valid) == [(True,)]
    assert query(db, "SELECT to_regclass('idx_patients_email')") == [(None,)]
    assert query(
        db,
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'patients'::regclass AND attname = 'city'",
    ) == [(True,)]
    assert query(
        db, "SELECT convalidated FROM pg_constraint WHERE conname = 'patients_name_not_blank'"
    ) == [(True,)]
    assert query(
        db, "SELECT convalidated FROM pg_constraint WHERE conname = 'patients_city_not_null'"
    ) == [(True,)]
