"""patient_phone_parse and patient_phone_national (services/patient/migrations/data/
phone_conversion.sql) against libphonenumber, on a real PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator

import phonenumbers as pn
import psycopg
import pytest
from phonenumbers import PhoneNumberFormat

from tests.phones import COUNTRIES, FULL_WIDTH, JUNK, Case, cases, install, oracle, valid_number

AGREEMENT = 0.995


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db, autocommit=True) as conn:
        install(conn)
        yield conn


def expected(case: Case) -> str | None:
    if case.e164 is None:
        return None
    if case.extension:
        return f"{case.e164};ext={pn.normalize_digits_only(case.extension)}"
    return case.e164


def parse_all(conn: psycopg.Connection, inputs: list[tuple[str, str | None]]) -> list[str | None]:
    rows = conn.execute(
        "SELECT patient_phone_parse(r, c) FROM unnest(%s::text[], %s::text[])"
        " WITH ORDINALITY AS t(r, c, i) ORDER BY i",
        [[r for r, _ in inputs], [c for _, c in inputs]],
    ).fetchall()
    return [r[0] for r in rows]


def check_agreement(found: list[tuple[str, str | None, str | None, str | None]]) -> None:
    """found: (country, raw, libphonenumber, ours); print and assert the disagreements."""
    wrong = [f for f in found if f[2] != f[3]]
    report = "\n".join(
        f"  {c!r} {raw!r}: libphonenumber {w!r}, ours {g!r}" for c, raw, w, g in wrong
    )
    print(f"{len(found) - len(wrong)}/{len(found)} agree; disagreements:\n{report or '  none'}")
    assert len(found) >= 1000
    assert (len(found) - len(wrong)) / len(found) >= AGREEMENT, report
    # A number we read must never be one libphonenumber finds no valid number in.
    garbage = [f for f in wrong if f[2] is None and f[3] is not None]
    assert not garbage, garbage


def test_oracle_agreement(conn: psycopg.Connection) -> None:
    all_cases = cases()
    assert len(all_cases) >= 2000
    got = parse_all(conn, [(c.raw, c.country) for c in all_cases])
    check_agreement(
        [(c.country, c.raw, expected(c), g) for c, g in zip(all_cases, got, strict=True)]
    )
    # the set is not trivial: valid numbers, extensions and invalid inputs all occur
    assert sum(g is None for g in got) > 100
    assert sum(g is not None and ";ext=" in g for g in got) > 100


@pytest.mark.parametrize(
    ("raw", "country", "want"),
    [
        ("(514) 555-0199", "Canada", "+15145550199"),
        ("514.555.0199 x123", "Canada", "+15145550199;ext=123"),
        ("1-514-555-0199", "USA", "+15145550199"),
        ("011 33 6 12 34 56 78", "USA", "+33612345678"),
        ("06 12 34 56 78", "France", "+33612345678"),
        ("+33 (0)6 12 34 56 78", "France", "+33612345678"),
        ("0033 6 12 34 56 78 poste 212", "France", "+33612345678;ext=212"),
        ("+212 06 61 23 45 67", "Morocco", "+212661234567"),
        ("٠٦٦١٢٣٤٥٦٧", "Morocco", "+212661234567"),
        ("۰۶۶۱۲۳۴۵۶۷", "Morocco", "+212661234567"),
        ("+33 6 12 34 56 78".translate(FULL_WIDTH), None, "+33612345678"),
        ("+44 20 7946 0958 ext. 45", "Spain", "+442079460958;ext=45"),
        ("+15145550199;ext=12", None, "+15145550199;ext=12"),
        ("+1 514 555 0199 #12", "Canada", "+15145550199;ext=12"),
        ("06 12 34 56 78", None, None),
    ],
)
def test_examples(
    conn: psycopg.Connection, raw: str, country: str | None, want: str | None
) -> None:
    assert oracle(raw, COUNTRIES.get(country or ""))[0] == (want.split(";")[0] if want else None)
    assert parse_all(conn, [(raw, country)]) == [want]


def test_junk_is_never_a_number(conn: psycopg.Connection) -> None:
    junk = [*JUNK, "", " ", "+", "+1", "+15145550199123", "5145550199123", "abc", "x", "#"]
    every = [(raw, country) for raw in junk for country in [*COUNTRIES, None]]
    # junk for libphonenumber too ('(514) 555-019' is a valid French number)
    inputs = [(r, c) for r, c in every if oracle(r, COUNTRIES.get(c or ""))[0] is None]
    assert len(inputs) > 0.9 * len(every)
    got = parse_all(conn, inputs)
    wrong = [(raw, c, g) for (raw, c), g in zip(inputs, got, strict=True) if g is not None]
    assert not wrong, wrong
    assert parse_all(conn, [("+15145550199123", "Canada")]) == [None]
    assert parse_all(conn, [(None, "Canada")]) == [None]  # type: ignore[list-item]
    # letters are keypad digits for libphonenumber (a vanity number), not junk
    assert parse_all(conn, [("1-800-FLOWERS", "USA")]) == ["+18003569377"]


def test_round_trip_national(conn: psycopg.Connection) -> None:
    rng = random.Random(7)
    rows = []
    for _ in range(4000):
        country = rng.choice(list(COUNTRIES))
        number = valid_number(COUNTRIES[country], rng)
        e164 = pn.format_number(number, PhoneNumberFormat.E164)
        extension = rng.choice([None, None, str(rng.randint(0, 99999))])
        rows.append((e164, extension, country))
    found = conn.execute(
        "SELECT e, x, c, patient_phone_national(e, x, c),"
        " patient_phone_parse(patient_phone_national(e, x, c), c)"
        " FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(e, x, c)",
        [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]],
    ).fetchall()
    wrong = [f for f in found if f[4] != (f[0] if f[1] is None else f"{f[0]};ext={f[1]}")]
    assert not wrong, wrong[:20]
    # the national form is used for the patient's own country, with its trunk prefix
    national = [f for f in found if not f[3].startswith("+")]
    assert len(national) > 0.9 * len(found)
    for e, x, c, text, _ in national:
        if c in ("Canada", "USA"):  # (514) 555-0199; a 7-digit +1 number as it is
            assert text.startswith("(") or len(e) == 9, (e, c, text)
        else:
            assert text.startswith("0"), (e, c, text)
        assert (" ext. " in text) == (x is not None)
    assert conn.execute("SELECT patient_phone_national(NULL, '12', 'Canada')").fetchone() == (None,)
    # another country's number stays international
    assert conn.execute(
        "SELECT patient_phone_national('+33612345678', NULL, 'Canada')"
    ).fetchone() == ("+33612345678",)
    assert conn.execute(
        "SELECT patient_phone_national('+15145550199', '7', 'Canada')"
    ).fetchone() == ("(514) 555-0199 ext. 7",)
    assert conn.execute(
        "SELECT patient_phone_national('+33612345678', NULL, 'France')"
    ).fetchone() == ("06 12 34 56 78",)


FAKER_LOCALES = {"en_CA": "Canada", "en_US": "USA", "fr_FR": "France"}


def test_faker_agreement(conn: psycopg.Connection) -> None:
    """Faker's phone numbers (no ar_MA/fr_MA locale has a phone provider: Morocco is read
    from fr_FR's spellings, which are also how a Moroccan clinic writes)."""
    from faker import Faker

    inputs: list[tuple[str, str]] = []
    for locale, country in FAKER_LOCALES.items():
        fake = Faker(locale)
        fake.seed_instance(2026)
        inputs += [(fake.phone_number(), country) for _ in range(700)]
    fake = Faker("fr_FR")
    fake.seed_instance(212)
    inputs += [(fake.phone_number(), "Morocco") for _ in range(300)]
    got = parse_all(conn, inputs)
    found = []
    for (raw, country), g in zip(inputs, got, strict=True):
        e164, extension = oracle(raw, COUNTRIES[country])
        want = expected(Case(country, raw, e164, extension))
        found.append((country, raw, want, g))
    check_agreement(found)
    assert sum(f[2] is not None for f in found) > 500  # Faker gives valid numbers too


def test_rules_compile_and_load_idempotently(conn: psycopg.Connection) -> None:
    install(conn)  # a second time: no error, no duplicate
    count, codes = conn.execute(
        "SELECT count(*), count(DISTINCT country_code) FROM patient_phone_rules"
    ).fetchone()
    assert count == codes == len(pn.COUNTRY_CODE_TO_REGION_CODE)
    for code, general, valid in conn.execute(
        "SELECT country_code, general, valid FROM patient_phone_rules"
    ).fetchall():
        conn.execute("SELECT '1' ~ %s, '1' ~ %s", [general or "", valid or ""])  # compiles
        assert valid is not None or code in (0,), code
