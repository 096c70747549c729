"""The services' schemas behave as the seed describes, and patient v2-v4 round-trip losslessly."""

from __future__ import annotations

import psycopg
import pytest
from conftest import ROOT, peers, query, settings

from alembic_common import runner, services, xargs
from alembic_common.errors import RefusedError


def migrate(name: str, url: str, target: int | None = None, contract: bool = False) -> None:
    options = runner.RunOptions(contract=contract)
    runner.up(
        services.get(name, ROOT), settings(name, url), target=target, options=options, peers=peers
    )


def rollback(name: str, url: str, version: int) -> None:
    runner.down(services.get(name, ROOT), settings(name, url), version)


def test_user_schema_enforces_tenancy_and_checks(db: str) -> None:
    migrate("user", db)
    (entity,) = query(
        db,
        "INSERT INTO healthcare_entities (name, type, country) VALUES ('CHU Rabat', 'hospital', 'Morocco') RETURNING id",
    )[0]
    insert_user = "INSERT INTO users (healthcare_entity_id, email, password_hash, first_name, last_name, role) VALUES (%s, %s, 'x', 'A', 'B', %s)"
    query(db, insert_user, (entity, "a@chu.ma", "doctor"))
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(db, insert_user, (entity, "a@chu.ma", "nurse"))
    with pytest.raises(psycopg.errors.CheckViolation):
        query(db, insert_user, (entity, "b@chu.ma", "wizard"))
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        query(db, insert_user, (entity + 1, "c@chu.ma", "nurse"))
    with pytest.raises(psycopg.errors.CheckViolation):
        query(
            db,
            "INSERT INTO healthcare_entities (name, type, country) VALUES ('X', 'clinic', 'Spain')",
        )


def test_updated_at_trigger_moves_on_update(db: str) -> None:
    migrate("user", db)
    query(
        db,
        "INSERT INTO healthcare_entities (name, type, country, updated_at) VALUES ('C', 'clinic', 'France', '2000-01-01')",
    )
    query(db, "UPDATE healthcare_entities SET city = 'Lyon'")
    (year,) = query(db, "SELECT extract(year FROM updated_at)::int FROM healthcare_entities")[0]
    assert year >= 2026


def test_patient_optional_fields_accept_null_empty_or_listed(db: str) -> None:
    migrate("patient", db, target=1)
    insert = "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, country, blood_type, preferred_language, marital_status) VALUES (1, %s, 'A', 'B', '1990-01-01', 'Canada', %s, %s, %s)"
    query(db, insert, ("P1", None, None, None))
    query(db, insert, ("P2", "", "", ""))
    query(db, insert, ("P3", "O+", "fr", "married"))
    for bad in (
        ("P4", "Z+", None, None),
        ("P5", None, "xx", None),
        ("P6", None, None, "complicated"),
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            query(db, insert, bad)
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(db, insert, ("P1", None, None, None))
    query(
        db,
        "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, country) VALUES (2, 'P1', 'A', 'B', '1990-01-01', 'USA')",
    )


def test_v3_allows_rh_null_and_its_downgrade_refuses_unless_they_are_mapped(db: str) -> None:
    migrate("patient", db, target=2)
    rh_null = "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, country, blood_type) VALUES (1, %s, 'A', 'B', '1990-01-01', 'France', 'Rh-null')"
    with pytest.raises(psycopg.errors.CheckViolation):
        query(db, rh_null, ("R0",))
    migrate("patient", db, target=3)
    query(db, rh_null, ("R1",))
    with pytest.raises(
        RefusedError, match=r"version 3 refused: 1 patients have blood type Rh-null"
    ):
        rollback("patient", db, 3)
    assert query(db, "SELECT blood_type FROM patients") == [("Rh-null",)]
    query(db, rh_null, ("R2",))  # nothing changed: the wider rule still holds
    with xargs.given({"rh_null": "NULL"}):
        rollback("patient", db, 3)
    assert query(db, "SELECT patient_id, blood_type FROM patients ORDER BY 1") == [
        ("R1", None),
        ("R2", None),
    ]
    with pytest.raises(psycopg.errors.CheckViolation):
        query(db, rh_null, ("R3",))  # the narrower rule binds new rows again
    (validated,) = query(
        db, "SELECT convalidated FROM pg_constraint WHERE conname = 'patients_blood_type_check'"
    )[0]
    assert validated is True


PHONES = [
    ("Canada", "(514) 555-0100", "+15145550100"),
    ("Canada", "1-514-555-0101", "+15145550101"),
    ("USA", "212.555.0102", "+12125550102"),
    ("USA", "+1 (212) 555-0103", "+12125550103"),
    ("Morocco", "06 12 34 56 78", "+212612345678"),
    ("Morocco", "+212 6 12 34 56 79", "+212612345679"),
    ("France", "01 23 45 67 89", "+33123456789"),
    ("France", "0033 1 23 45 67 88", "+33123456788"),
    ("Spain", "912 345 678", "912 345 678"),
    ("France", "", ""),
    ("USA", None, None),
]


def test_phone_expand_backfill_contract_round_trip_restores_every_original(db: str) -> None:
    migrate("patient", db, target=3)
    for i, (country, phone, _) in enumerate(PHONES):
        query(
            db,
            "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, country, phone, updated_at) VALUES (1, %s, 'A', 'B', '1990-01-01', %s, %s, '2020-02-02')",
            (f"P{i}", country, phone),
        )
    before = query(db, "SELECT * FROM patients ORDER BY id")
    migrate("patient", db, target=4)  # expand + backfill: phone untouched
    rows = query(db, "SELECT phone, phone_international FROM patients ORDER BY id")
    assert [r[0] for r in rows] == [phone for _, phone, _ in PHONES]
    assert [r[1] for r in rows] == [expected for _, _, expected in PHONES]
    # contract: the columns swap (only up to it: version 6 refuses the 'Spain' row)
    migrate("patient", db, target=5, contract=True)
    converted = [r[0] for r in query(db, "SELECT phone FROM patients ORDER BY id")]
    assert converted == [expected for _, _, expected in PHONES]
    rollback("patient", db, 4)
    assert query(db, "SELECT * FROM patients ORDER BY id") == before


def test_old_release_writes_stay_converted_between_expand_and_contract(db: str) -> None:
    migrate("patient", db)  # a plain up: expand, contract held back
    assert query(db, "SELECT max(version) FROM schema_migrations") == [(4,)]
    old_insert = "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, country, phone) VALUES (1, %s, 'A', 'B', '1990-01-01', %s, %s)"
    query(db, old_insert, ("OLD-1", "Morocco", "06 12 34 56 78"))
    assert query(db, "SELECT phone, phone_international FROM patients") == [
        ("06 12 34 56 78", "+212612345678")
    ]
    query(db, "UPDATE patients SET phone = '01 23 45 67 89', country = 'France'")
    assert query(db, "SELECT phone_international FROM patients") == [("+33123456789",)]


def test_contract_downgrade_keeps_numbers_changed_after_the_contract(db: str) -> None:
    migrate("patient", db, target=3)
    insert = "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, country, phone) VALUES (1, %s, 'A', 'B', '1990-01-01', %s, %s)"
    query(db, insert, ("OLD", "France", "01 23 45 67 89"))
    query(db, insert, ("SAME", "USA", "(212) 555-0100"))
    migrate("patient", db, contract=True)
    query(db, "UPDATE patients SET phone = '+33698765432' WHERE patient_id = 'OLD'")
    query(
        db,
        insert.replace(", phone)", ", phone, phone_original)").replace("%s)", "%s, NULL)"),
        ("NEW", "Morocco", "+212612345678"),
    )
    rollback("patient", db, 5)
    assert dict(query(db, "SELECT patient_id, phone FROM patients")) == {
        "OLD": "0698765432",
        "SAME": "(212) 555-0100",
        "NEW": "0612345678",
    }
    assert dict(query(db, "SELECT patient_id, phone_international FROM patients")) == {
        "OLD": "+33698765432",
        "SAME": "+12125550100",
        "NEW": "+212612345678",
    }


def test_appointments_reject_double_booking_and_backwards_times(db: str) -> None:
    migrate("appointment", db)
    insert = "INSERT INTO appointments (healthcare_entity_id, patient_id, provider_id, starts_at, ends_at, status) VALUES (1, %s, %s, %s, %s, %s)"
    query(db, insert, (1, 7, "2026-12-01 09:00Z", "2026-12-01 09:30Z", "scheduled"))
    with pytest.raises(psycopg.errors.ExclusionViolation):
        query(db, insert, (2, 7, "2026-12-01 09:15Z", "2026-12-01 09:45Z", "confirmed"))
    query(db, insert, (2, 8, "2026-12-01 09:15Z", "2026-12-01 09:45Z", "confirmed"))
    query(db, insert, (3, 7, "2026-12-01 09:15Z", "2026-12-01 09:45Z", "cancelled"))
    query(db, insert, (4, 7, "2026-12-01 09:30Z", "2026-12-01 10:00Z", "scheduled"))
    with pytest.raises(psycopg.errors.CheckViolation):
        query(db, insert, (5, 9, "2026-12-01 10:00Z", "2026-12-01 09:00Z", "scheduled"))
    with pytest.raises(psycopg.errors.CheckViolation):
        query(db, insert, (5, 9, "2026-12-02 10:00Z", "2026-12-02 11:00Z", "lost"))
