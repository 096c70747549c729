"""The services' schemas behave as the seed describes, and patient v2-v4 round-trip losslessly."""

from __future__ import annotations

import phonenumbers
import psycopg
import pytest
from conftest import ROOT, peers, query, settings

from alembic_common.core import runner, services, xargs
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


PHONES = [  # (country, as entered, E.164, extension): libphonenumber's reading of each
    ("Canada", "(514) 555-0100", "+15145550100", None),
    ("Canada", "1-514-555-0101 ext. 12", "+15145550101", "12"),
    ("USA", "212.555.0102", "+12125550102", None),
    ("USA", "+1 (212) 555-0103", "+12125550103", None),
    ("Morocco", "06 12 34 56 78", "+212612345678", None),
    ("Morocco", "+212 6 12 34 56 79", "+212612345679", None),
    ("France", "01 23 45 67 89", "+33123456789", None),
    ("France", "0033 1 23 45 67 88", "+33123456788", None),
    ("Spain", "912 345 678", None, None),  # no home country to read a national number in
    ("France", "N/A", None, None),
    ("France", "", None, None),
    ("USA", None, None, None),
]
INSERT = (
    "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
    " date_of_birth, country, phone) VALUES (1, %s, 'A', 'B', '1990-01-01', %s, %s)"
)


def test_phone_expand_backfill_contract_round_trip_restores_every_original(db: str) -> None:
    migrate("patient", db, target=3)
    for i, (country, phone, _, _) in enumerate(PHONES):
        query(
            db,
            "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, country, phone, updated_at) VALUES (1, %s, 'A', 'B', '1990-01-01', %s, %s, '2020-02-02')",
            (f"P{i}", country, phone),
        )
    before = query(db, "SELECT * FROM patients ORDER BY id")
    migrate("patient", db, target=4)  # expand + backfill: phone untouched
    rows = query(db, "SELECT phone, phone_e164, phone_extension FROM patients ORDER BY id")
    assert rows == [(phone, e164, ext) for _, phone, e164, ext in PHONES]
    migrate("patient", db, target=5)  # contract: the columns swap
    rows = query(db, "SELECT phone, phone_extension, phone_original FROM patients ORDER BY id")
    assert rows == [(e164, ext, phone) for _, phone, e164, ext in PHONES]
    unconverted = (
        "SELECT count(*) FROM patients WHERE phone IS NULL AND btrim(phone_original) <> ''"
    )
    assert query(db, unconverted) == [(2,)]  # docs/bridge.md's query: 'N/A' and the Spanish number
    rollback("patient", db, 4)
    assert query(db, "SELECT * FROM patients ORDER BY id") == before


def test_old_release_writes_are_converted_and_new_release_writes_read_back(db: str) -> None:
    migrate("patient", db, target=4)
    query(db, INSERT, ("OLD-1", "Morocco", "06 12 34 56 78"))
    assert query(db, "SELECT phone, phone_e164 FROM patients") == [
        ("06 12 34 56 78", "+212612345678")
    ]
    query(db, "UPDATE patients SET phone = '01 23 45 67 89 poste 7', country = 'France'")
    assert query(db, "SELECT phone_e164, phone_extension FROM patients") == [("+33123456789", "7")]
    # The new release writes the new columns: the old one reads a national number, and a
    # write that means the number phone already holds keeps phone as it was entered.
    query(db, "UPDATE patients SET phone_e164 = '+33123456789', phone_extension = '7'")
    assert query(db, "SELECT phone FROM patients") == [("01 23 45 67 89 poste 7",)]
    query(db, "UPDATE patients SET phone_e164 = '+33698765432', phone_extension = NULL")
    (national,) = query(db, "SELECT phone FROM patients")[0]
    number = phonenumbers.parse(national, "FR")
    assert not national.startswith("+") and number.extension is None
    assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == "+33698765432"
    # The old release writing phone is never overwritten from the new columns.
    query(db, "UPDATE patients SET phone = '0612345678'")
    assert query(db, "SELECT phone, phone_e164 FROM patients") == [("0612345678", "+33612345678")]


def test_contract_downgrade_keeps_numbers_changed_after_the_contract(db: str) -> None:
    migrate("patient", db, target=3)
    query(db, INSERT, ("OLD", "France", "01 23 45 67 89"))
    query(db, INSERT, ("SAME", "USA", "(212) 555-0100"))
    migrate("patient", db, target=5)
    query(db, "UPDATE patients SET phone = '+33698765432' WHERE patient_id = 'OLD'")
    query(
        db,
        INSERT.replace(", phone)", ", phone, phone_extension)").replace("%s)", "%s, '55')"),
        ("NEW", "Morocco", "+212612345678"),
    )
    rollback("patient", db, 5)
    found = dict(query(db, "SELECT patient_id, phone FROM patients"))
    assert found["SAME"] == "(212) 555-0100"  # as entered
    for pid, region, e164, ext in (
        ("OLD", "FR", "+33698765432", None),
        ("NEW", "MA", "+212612345678", "55"),
    ):
        number = phonenumbers.parse(found[pid], region)
        assert not found[pid].startswith("+")
        assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == e164
        assert number.extension == ext
    assert dict(query(db, "SELECT patient_id, phone_e164 FROM patients")) == {
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


def test_phones_of_countries_spelled_another_way_are_converted(db: str) -> None:
    """Before patient version 6 makes countries canonical, 'canada' or 'Maroc' still name the
    region a national number is read in."""
    migrate("patient", db, target=3)
    for i, (country, raw) in enumerate(
        [(" canada ", "(514) 555-0199"), ("Maroc", "06 12 34 56 78"), ("fr", "01 23 45 67 89")]
    ):
        query(db, INSERT, (f"S{i}", country, raw))
    migrate("patient", db, target=5)
    assert [r[0] for r in query(db, "SELECT phone FROM patients ORDER BY id")] == [
        "+15145550199",
        "+212612345678",
        "+33123456789",
    ]


def test_the_national_form_reads_a_country_spelled_another_way(db: str) -> None:
    """patient_phone_national and patient_phone_parse agree on 'canada', 'FR', 'Maroc'."""
    migrate("patient", db, target=4)
    for country, region, e164 in (
        ("canada", "CA", "+15145550199"),
        ("FR", "FR", "+33612345678"),
        ("Maroc", "MA", "+212612345678"),
    ):
        ((national,),) = query(db, "SELECT patient_phone_national(%s, '7', %s)", (e164, country))
        number = phonenumbers.parse(national, region)
        assert not national.startswith("+"), national
        assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == e164
        assert number.extension == "7"
