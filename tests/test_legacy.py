"""Adopting a database made by the previous (Go) migration system."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import PATIENT_HEAD, alembic_head, history, query, run_cli, versions

LEGACY_SQL = (Path(__file__).parent / "legacy" / "patient_v2_from_go.sql").read_text()


@pytest.fixture
def legacy_db(db: str) -> str:
    query(db, LEGACY_SQL)
    return db


def test_status_recognises_a_legacy_database(legacy_db: str) -> None:
    result = run_cli("patient", "status", "--json", "--url", legacy_db)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["legacy"] is True
    assert report["current"] == 2 and report["pending"] == versions("patient")[2:]
    assert [m["applied"] for m in report["migrations"]] == [v <= 2 for v in versions("patient")]
    assert report["migrations"][0]["applied_at"] == "2024-01-15T09:30:00"
    text = run_cli("patient", "status", "--url", legacy_db)
    assert "previous migration system" in text.stdout


def test_up_adopts_without_rerunning_and_keeps_applied_at(legacy_db: str) -> None:
    phones_before = query(legacy_db, "SELECT id, phone FROM patients ORDER BY id")
    result = run_cli("patient", "up", "--contract", "--url", legacy_db)
    assert result.exit_code == 0, result.output
    assert "adopted legacy history [1, 2]" in result.stderr
    assert not re.search(r"applied version [12]\b", result.stderr), result.stderr
    assert history(legacy_db) == versions("patient")
    assert alembic_head(legacy_db) == [f"{PATIENT_HEAD:04d}"]
    rows = query(
        legacy_db,
        "SELECT version, description, applied_at::text FROM schema_migrations WHERE version <= 2 ORDER BY version",
    )
    assert rows == [
        (1, "Create patients table with multi-tenant support", "2024-01-15 09:30:00"),
        (2, "Add emergency_contact_address to patients", "2024-06-02 14:05:00"),
    ]
    phones = [r[0] for r in query(legacy_db, "SELECT phone FROM patients ORDER BY id")]
    assert phones == ["+15145550143", "+12125550187", "+212661234567", "+33142685300"]
    # Who applied the old rows is not known: nothing is made up for them; ours are signed.
    signed = query(
        legacy_db,
        "SELECT version, applied_by, duration_ms, checksum IS NOT NULL, current_user FROM schema_migrations ORDER BY version",
    )
    assert [r[1:4] for r in signed if r[0] <= 2] == [(None, None, False)] * 2
    assert all(r[1] == r[4] and r[2] is not None for r in signed if r[0] > 2)
    status = run_cli("patient", "status", "--json", "--url", legacy_db)
    assert json.loads(status.stdout)["legacy"] is False and status.exit_code == 0
    # The adopted history rolls back like any other, losslessly.
    assert run_cli("patient", "down", "--version", "4", "--url", legacy_db).exit_code == 0
    assert query(legacy_db, "SELECT id, phone FROM patients ORDER BY id") == phones_before


def test_adoption_up_to_a_version_applies_nothing_beyond(legacy_db: str) -> None:
    result = run_cli("patient", "up", "--version", "2", "--url", legacy_db)
    assert result.exit_code == 0, result.output
    assert alembic_head(legacy_db) == ["0002"] and history(legacy_db) == [1, 2]


def test_a_gap_in_legacy_versions_is_refused(legacy_db: str) -> None:
    query(legacy_db, "DELETE FROM schema_migrations WHERE version = 1")
    query(legacy_db, "INSERT INTO schema_migrations (version, description) VALUES (3, 'x')")
    result = run_cli("patient", "up", "--url", legacy_db)
    assert result.exit_code == 1
    assert "skips version(s) [1]" in result.stderr
    assert query(legacy_db, "SELECT to_regclass('alembic_version')") == [(None,)]


def test_a_legacy_version_no_file_knows_is_refused(legacy_db: str) -> None:
    future = PATIENT_HEAD + 1
    for version in range(3, future + 1):
        query(
            legacy_db,
            "INSERT INTO schema_migrations (version, description) VALUES (%s, 'x')",
            [version],
        )
    result = run_cli("patient", "up", "--url", legacy_db)
    assert result.exit_code == 1
    assert (
        f"database is at version {future} but this code knows only up to {PATIENT_HEAD}"
        in result.stderr
    )
    assert query(legacy_db, "SELECT to_regclass('alembic_version')") == [(None,)]
    assert history(legacy_db) == list(range(1, future + 1))
