"""One source of truth for each data rule, across every version of the patient history.

A constraint a later step adds accepts every value an earlier step produced from the same
rule: every number libphonenumber (the oracle) reads as valid, in every region it knows,
goes in before the phone step and comes out at the head as the oracle's E.164, through
the contract step's CHECK. The country spellings that give a phone its region are the
ones the canonical step accepts, and a country put right after the canonical step refused
it gives the phone its number again.
"""

from __future__ import annotations

import random

import phonenumbers as pn
import psycopg
import pytest
from conftest import CONTRACT, ROOT, peers, query, settings
from test_clinical import COUNTRIES_V, SPELLINGS, _version

from alembic_common.core import runner, services
from alembic_common.errors import RefusedError

PHONE_V = _version("patient", "phone_e164")  # the step that converts phones (the oracle's rule)
BEFORE_PHONES = max(v for v in services.get("patient", ROOT).disk_versions() if v < PHONE_V)
REGION = {"Canada": "CA", "USA": "US", "France": "FR", "Morocco": "MA"}
INSERT = (
    "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
    " date_of_birth, phone, country) VALUES (1, %s, 'A', 'B', '1990-01-01', %s, %s) RETURNING id"
)


def up(url: str, target: int | None = None, *, ok: bool = True) -> None:
    service, where = services.get("patient", ROOT), settings("patient", url)
    if ok:
        runner.up(service, where, target, CONTRACT, peers=peers)
        return
    with pytest.raises(RefusedError):
        runner.up(service, where, target, CONTRACT, peers=peers)


def valid_numbers(seed: int = 2026) -> list[pn.PhoneNumber]:
    """Every region's example number of every type, and, for every possible length beyond
    E.164's fifteen digits, numbers libphonenumber reads as valid (found by a seeded search)."""
    found: dict[str, pn.PhoneNumber] = {}
    for region in sorted(pn.SUPPORTED_REGIONS):
        for kind in range(12):
            number = pn.example_number_for_type(region, kind)
            if number is not None and pn.is_valid_number(number):
                found[pn.format_number(number, pn.PhoneNumberFormat.E164)] = number
    rng = random.Random(seed)
    for region in sorted(pn.SUPPORTED_REGIONS):
        meta = pn.PhoneMetadata.metadata_for_region(region)
        code = meta.country_code
        for length in sorted({n for n in meta.general_desc.possible_length if n > 0}):
            if len(str(code)) + length <= 15:
                continue
            for _ in range(4000):
                digits = str(rng.randint(1, 9)) + "".join(
                    rng.choice("0123456789") for _ in range(length - 1)
                )
                number = pn.PhoneNumber(country_code=code, national_number=int(digits))
                if pn.is_valid_number_for_region(number, region):
                    found[pn.format_number(number, pn.PhoneNumberFormat.E164)] = number
                    break
    return list(found.values())


def test_every_number_the_oracle_reads_as_valid_passes_every_later_version(db: str) -> None:
    numbers = valid_numbers()
    longest = max(len(pn.format_number(n, pn.PhoneNumberFormat.E164)) - 1 for n in numbers)
    assert longest > 15, "the search found no number beyond E.164's fifteen digits"
    up(db, BEFORE_PHONES)
    with psycopg.connect(db) as conn:
        ids = {}
        for i, number in enumerate(numbers):
            e164 = pn.format_number(number, pn.PhoneNumberFormat.E164)
            written = pn.format_number(number, pn.PhoneNumberFormat.INTERNATIONAL)
            (row,) = conn.execute(INSERT, (f"P{i}", written, "France")).fetchall()
            ids[row[0]] = e164
    up(db)
    assert dict(query(db, "SELECT id, phone FROM patients")) == ids


def test_every_spelling_the_canonical_step_accepts_gives_the_phone_its_region(db: str) -> None:
    """The spellings are the test's own (tests/test_clinical.py), not read from the history."""
    up(db, BEFORE_PHONES)
    expected = {}
    for i, (country, spelling) in enumerate((c, s) for c, ss in SPELLINGS.items() for s in ss):
        number = pn.example_number_for_type(REGION[country], pn.PhoneNumberType.MOBILE)
        national = pn.format_number(number, pn.PhoneNumberFormat.NATIONAL)
        (row,) = query(db, INSERT, (f"S{i}", national, spelling))
        expected[row[0]] = (country, pn.format_number(number, pn.PhoneNumberFormat.E164))
    up(db)
    found = {i: (c, p) for i, c, p in query(db, "SELECT id, country, phone FROM patients")}
    assert found == expected


def test_a_country_put_right_after_the_canonical_step_refused_it_gives_the_phone_back(
    db: str,
) -> None:
    number = pn.example_number_for_type("FR", pn.PhoneNumberType.MOBILE)
    national = pn.format_number(number, pn.PhoneNumberFormat.NATIONAL)
    up(db, BEFORE_PHONES)
    (row,) = query(db, INSERT, ("LOST", national, "Frankreich"))  # no table knows it
    up(db, ok=False)  # the canonical step refuses the row, changing nothing of its own
    assert query(db, "SELECT max(version) FROM schema_migrations") == [(COUNTRIES_V - 1,)]
    # As the refusal says: correct the row, then run 'up' again.
    query(db, "UPDATE patients SET country = 'France' WHERE id = %s", [row[0]])
    up(db)
    assert query(db, "SELECT phone FROM patients WHERE id = %s", [row[0]]) == [
        (pn.format_number(number, pn.PhoneNumberFormat.E164),)
    ]


def test_a_country_put_right_before_the_swap_gives_the_phone_its_number(db: str) -> None:
    number = pn.example_number_for_type("MA", pn.PhoneNumberType.MOBILE)
    national = pn.format_number(number, pn.PhoneNumberFormat.NATIONAL)
    up(db, PHONE_V)
    (row,) = query(db, INSERT, ("MA1", national, "Marocco"))
    assert query(db, "SELECT phone_e164 FROM patients WHERE id = %s", [row[0]]) == [(None,)]
    query(db, "UPDATE patients SET country = 'Maroc' WHERE id = %s", [row[0]])
    assert query(db, "SELECT phone, phone_e164 FROM patients WHERE id = %s", [row[0]]) == [
        (national, pn.format_number(number, pn.PhoneNumberFormat.E164))
    ]


def test_a_phone_the_application_removed_is_not_brought_back_by_a_country_change(db: str) -> None:
    number = pn.example_number_for_type("CA", pn.PhoneNumberType.MOBILE)
    up(db, BEFORE_PHONES)
    (row,) = query(
        db, INSERT, ("CA1", pn.format_number(number, pn.PhoneNumberFormat.NATIONAL), "Canada")
    )
    up(db)
    query(db, "UPDATE patients SET phone = NULL WHERE id = %s", [row[0]])
    query(db, "UPDATE patients SET country = 'USA' WHERE id = %s", [row[0]])
    assert query(db, "SELECT phone FROM patients WHERE id = %s", [row[0]]) == [(None,)]
