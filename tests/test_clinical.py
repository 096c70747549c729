"""Issue 13, clinical data rules: countries, case-blind uniqueness, dates of birth, and
downgrades that refuse rather than lose data, on Faker data of the four countries.

Faker has no Moroccan locale: Moroccan patients take Arabic names (ar_AA) and Algerian
French ones (fr_DZ), the nearest locales it ships.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

import psycopg
import pytest
from conftest import (
    CONTRACT,
    ROOT,
    history,
    migrate_cmd,
    peer_env_for,
    peers,
    query,
    run_cli,
    run_script,
    settings,
    versions,
)
from faker import Faker

from alembic_common.core import runner, services

# What each spelling must become: the test's own oracle, written from the list,
# not read from the migration.
SPELLINGS = {
    "Canada": ["Canada", "canada", "  CANADA ", "CA", "ca", " Ca", "CAN", "Kanada", "كندا",
               " كندا "],
    "USA": ["USA", "usa", "US", "us ", "U.S.A.", "u.s.a", "U.S.", "U. S. A.", "United States",
            "united  states", "United States of America", "Etats-Unis", "États-Unis",
            "ÉTATS-UNIS", "Etats Unis", "États-Unis d'Amérique", "États-Unis d\u2019Amérique",
            "Estados Unidos", "الولايات المتحدة", "الولايات المتحدة الأمريكية", "أمريكا"],
    "France": ["France", "france", " FRANCE", "FR", "fr", "Fra", "République française",
               "Republique Francaise", "فرنسا", "France\u00a0"],
    "Morocco": ["Morocco", "MOROCCO", "MA", "ma", "Mar", "Maroc", "maroc ", "Le Maroc",
                "Royaume du Maroc", "royaume-du-maroc", "Kingdom of Morocco", "Marruecos",
                "المغرب", "\u200f" + "المغرب", "المملكة المغربية"],
}  # fmt: skip
CANONICAL = set(SPELLINGS)
LOCALES = {"Canada": ["en_CA", "fr_CA"], "USA": ["en_US"], "France": ["fr_FR"],
           "Morocco": ["ar_AA", "fr_DZ"]}  # fmt: skip
PHONE_PREFIX = {"Canada": "+1", "USA": "+1", "France": "+33", "Morocco": "+212"}


def _version(name: str, description_part: str) -> int:
    """The version of the service's migration whose description mentions ``description_part``."""
    (found,) = [
        m.version
        for m in services.get(name, ROOT).migrations
        if description_part.lower() in m.description.lower()
    ]
    return found


COUNTRIES_V = _version("patient", "countries")
PATIENT_ID_V = _version("patient", "patient_id unique within an entity ignoring case")
DOB_V = _version("patient", "dates of birth")
RH_NULL_V = _version("patient", "Rh-null")
ADDRESS_V = _version("patient", "emergency_contact_address")
EMAIL_V = _version("user", "email unique within an entity ignoring case")


def up(name: str, url: str, target: int | None = None) -> None:
    runner.up(services.get(name, ROOT), settings(name, url), target, CONTRACT, peers=peers)


def cli(*args: str) -> Any:
    env = peer_env_for(args[0])
    return run_cli(*args, env=env)


def rows(url: str, table: str) -> list[tuple[Any, ...]]:
    return query(url, f"SELECT * FROM {table} ORDER BY id")


def columns(url: str, table: str) -> list[str]:
    found = query(
        url,
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        [table],
    )
    return [r[0] for r in found]


def schema_objects(url: str) -> list[tuple[Any, ...]]:
    """Constraints, indexes and functions: what a refused step must not have left behind."""
    return query(
        url,
        "SELECT 'c', conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace"
        " UNION ALL SELECT 'i', indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        " UNION ALL SELECT 'f', proname, pg_get_function_identity_arguments(oid) FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace"
        " UNION ALL SELECT 't', tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal"
        " UNION ALL SELECT 'a', table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' ORDER BY 1, 2, 3",
    )


def one_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines, result.output
    assert lines[-1].startswith("migrate: error: "), result.output
    assert not any(line.startswith("Traceback") for line in lines), result.output
    return lines[-1]


INSERT_PATIENT = (
    "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
    " date_of_birth, country, blood_type) VALUES (%s, %s, 'A', 'B', %s, %s, %s) RETURNING id"
)


def add_patient(
    url: str,
    entity: int,
    code: str,
    country: str = "France",
    born: str = "1990-01-01",
    blood: str | None = None,
) -> int:
    return int(query(url, INSERT_PATIENT, (entity, code, born, country, blood))[0][0])


# --- Faker data ------------------------------------------------------------------------------

ENTITIES = 8


def fake_patients(count: int, seed: int = 13) -> list[tuple[Any, ...]]:
    """Patients of the four countries over ENTITIES entities, countries spelled every way."""
    rng = random.Random(seed)
    fakers = {c: [Faker(loc) for loc in locs] for c, locs in LOCALES.items()}
    for fakes in fakers.values():
        for fake in fakes:
            fake.seed_instance(seed)
    out = []
    for i in range(count):
        country = rng.choice(sorted(CANONICAL))
        fake = rng.choice(fakers[country])
        phone = fake.phone_number() if rng.random() < 0.8 else None
        if phone and rng.random() < 0.3:
            phone = f"{PHONE_PREFIX[country]} {phone}"
        born = fake.date_of_birth(minimum_age=0, maximum_age=100)
        code = f"P{i:06d}"
        code = code.lower() if rng.random() < 0.3 else code
        out.append(
            (
                1 + i % ENTITIES,
                f" {code}" if rng.random() < 0.05 else code,
                fake.first_name(),
                fake.last_name(),
                born,
                rng.choice(["male", "female", "other", "unknown", "", None]),
                phone,
                fake.email() if rng.random() < 0.7 else None,
                fake.street_address(),
                fake.city(),
                postal(fake),
                rng.choice(SPELLINGS[country]),
                rng.choice(["O+", "A-", "AB+", "", None]),
                rng.choice(["en", "fr", "ar", "es", None]),
                dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
            )
        )
    return out


def postal(fake: Faker) -> str | None:
    try:
        return str(fake.postcode())
    except AttributeError:
        return None


FAKE_COLUMNS = (
    "healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, gender, phone,"
    " email, address, city, postal_code, country, blood_type, preferred_language, updated_at"
)


def load_patients(url: str, patients: list[tuple[Any, ...]]) -> None:
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY patients ({FAKE_COLUMNS}) FROM STDIN") as copy,
    ):
        for row in patients:
            copy.write_row(row)


def load_users(url: str, count: int, seed: int = 13) -> None:
    rng = random.Random(seed)
    fake = Faker(["en_CA", "en_US", "fr_FR", "ar_AA"])
    fake.seed_instance(seed)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for country in sorted(CANONICAL):
            for kind in ("clinic", "hospital"):
                cur.execute(
                    "INSERT INTO healthcare_entities (name, type, country, city, updated_at)"
                    " VALUES (%s, %s, %s, %s, '2025-01-01Z')",
                    (fake.company(), kind, country, fake.city()),
                )
        emails = [fake.unique.email() for _ in range(count)]
        with cur.copy(
            "COPY users (healthcare_entity_id, email, password_hash, first_name, last_name,"
            " role, updated_at) FROM STDIN"
        ) as copy:
            for i, email in enumerate(emails):
                if rng.random() < 0.3:
                    email = email.upper() if rng.random() < 0.5 else f" {email.title()}"
                copy.write_row(
                    (
                        1 + i % ENTITIES,
                        email,
                        "x",
                        fake.first_name(),
                        fake.last_name(),
                        rng.choice(["admin", "doctor", "nurse", "receptionist", "staff"]),
                        dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
                    )
                )


# --- round trips ---------------------------------------------------------------------------


def test_faker_patients_round_trip_from_1_to_head_and_back_identically(db: str) -> None:
    up("patient", db, 1)
    load_patients(db, fake_patients(4000))
    before = rows(db, "patients")
    spelled = dict(query(db, "SELECT id, country FROM patients"))
    assert len(before) == 4000 and len(set(spelled.values())) > 40
    up("patient", db)
    after_up = dict(query(db, "SELECT id, country FROM patients"))
    expected = {i: next(c for c, s in SPELLINGS.items() if v in s) for i, v in spelled.items()}
    assert after_up == expected, "countries not normalised to the test's own mapping"
    kept = dict(query(db, "SELECT id, country_original FROM patients"))
    assert all(kept[i] == (v if v != expected[i] else None) for i, v in spelled.items())
    runner.down(services.get("patient", ROOT), settings("patient", db), 2)
    assert history(db) == [1]
    assert rows(db, "patients") == before


def test_faker_users_and_appointments_round_trip_identically(db: str, server: str) -> None:
    from conftest import create_database, drop_database

    up("user", db, 1)
    load_users(db, 3000)
    before = {t: rows(db, t) for t in ("healthcare_entities", "users")}
    up("user", db)
    runner.down(services.get("user", ROOT), settings("user", db), 2)
    assert history(db) == [1]
    assert {t: rows(db, t) for t in before} == before

    other = create_database(server)
    try:
        up("appointment", other, 1)
        query(
            other,
            "INSERT INTO appointments (healthcare_entity_id, patient_id, provider_id, starts_at,"
            " ends_at, status, updated_at) SELECT 1 + g % 8, g % 500, g,"
            " '2026-01-01Z'::timestamptz + g * interval '1 hour',"
            " '2026-01-01Z'::timestamptz + g * interval '1 hour' + interval '30 min',"
            " 'scheduled', '2025-01-01Z' FROM generate_series(1, 3000) g",
        )
        appointments = rows(other, "appointments")
        up("appointment", other)
        runner.down(services.get("appointment", ROOT), settings("appointment", other), 2)
        assert rows(other, "appointments") == appointments
    finally:
        drop_database(server, other)


# --- countries -----------------------------------------------------------------------------

ALL_SPELLINGS = [(c, s) for c, spellings in SPELLINGS.items() for s in spellings]


def test_every_spelling_becomes_its_canonical_country_and_writes_stay_normalised(db: str) -> None:
    up("patient", db, COUNTRIES_V - 1)
    ids = {
        add_patient(db, 1, f"S{i}", spelling): c for i, (c, spelling) in enumerate(ALL_SPELLINGS)
    }
    up("patient", db, COUNTRIES_V)
    assert dict(query(db, "SELECT id, country FROM patients")) == ids
    # The running release may still write other spellings: normalised on the way in.
    for i, (country, spelling) in enumerate(ALL_SPELLINGS):
        new = add_patient(db, 2, f"N{i}", spelling)
        assert query(db, "SELECT country FROM patients WHERE id = %s", [new]) == [(country,)]
    first = min(ids)
    query(db, "UPDATE patients SET country = ' maroc ' WHERE id = %s", [first])
    assert query(db, "SELECT country FROM patients WHERE id = %s", [first]) == [("Morocco",)]
    for bad in ("Spain", "", "Canadaa", "Algérie"):
        with pytest.raises(psycopg.errors.CheckViolation):
            add_patient(db, 3, "BAD", bad)
    (validated,) = query(
        db, "SELECT convalidated FROM pg_constraint WHERE conname = 'patients_country_check'"
    )[0]
    assert validated is True


def test_a_country_changed_after_normalising_survives_the_downgrade(db: str) -> None:
    up("patient", db, COUNTRIES_V - 1)
    kept, changed = add_patient(db, 1, "K", " maroc"), add_patient(db, 1, "C", "ca")
    up("patient", db, COUNTRIES_V)
    query(db, "UPDATE patients SET country = 'France' WHERE id = %s", [changed])
    runner.down(services.get("patient", ROOT), settings("patient", db), COUNTRIES_V)
    assert dict(query(db, "SELECT id, country FROM patients")) == {
        kept: " maroc",
        changed: "France",
    }


def test_unmappable_countries_refuse_in_one_line_and_change_nothing(db: str) -> None:
    before_v = COUNTRIES_V - 1
    up("patient", db, before_v)
    for i, spelling in enumerate(["Canada", "us", "Maroc"]):
        add_patient(db, 1, f"OK{i}", spelling)
    bad = [add_patient(db, 2, f"B{i}", s) for i, s in enumerate(["Spain", "Atlantis", "  "])]
    data, objects = rows(db, "patients"), schema_objects(db)
    result = cli("patient", "up", "--contract", "--url", db)
    assert result.exit_code == 1, result.output
    line = one_line(result)
    assert f"version {COUNTRIES_V} refused: 3 patients" in line, line
    assert f"(ids {', '.join(map(str, bad))})" in line, line
    assert history(db) == versions("patient")[:before_v]
    assert rows(db, "patients") == data and schema_objects(db) == objects


def test_the_offline_plan_raises_the_same_refusal(db: str) -> None:
    up("patient", db, COUNTRIES_V - 1)
    add_patient(db, 1, "X", "Spain")
    plan = cli("patient", "plan", "--sql", "--contract")
    assert plan.exit_code == 0, plan.output
    blocks = re.findall(r"DO \$\$.*?\$\$;", plan.stdout, re.S)
    (refusal,) = [b for b in blocks if f"version {COUNTRIES_V} refused" in b]
    # The plan runs the mapping function's definition first, as the step does.
    (mapping,) = re.findall(
        r"CREATE OR REPLACE FUNCTION patient_country_canonical.*?\$\$;", plan.stdout, re.S
    )
    query(db, mapping)
    with pytest.raises(psycopg.errors.RaiseException, match=r"refused: 1 patients have a country"):
        query(db, refusal)


# --- case-blind uniqueness -------------------------------------------------------------------


def test_patient_code_duplicates_ignoring_case_refuse_listing_them(db: str) -> None:
    up("patient", db, PATIENT_ID_V - 1)
    a, b = add_patient(db, 4, "PAR-1"), add_patient(db, 4, " par-1 ")
    c, d = add_patient(db, 5, "x"), add_patient(db, 5, "X")
    add_patient(db, 6, "PAR-1")  # another entity: not a duplicate
    data, objects = rows(db, "patients"), schema_objects(db)
    result = cli("patient", "up", "--contract", "--url", db)
    assert result.exit_code == 1, result.output
    line = one_line(result)
    assert f"version {PATIENT_ID_V} refused: 2 patient codes" in line, line
    assert f"entity 4 (ids {a}, {b})" in line and f"entity 5 (ids {c}, {d})" in line
    assert "par-1" not in result.output.lower(), "a patient's code was printed"
    assert history(db) == versions("patient")[: PATIENT_ID_V - 1]
    assert rows(db, "patients") == data and schema_objects(db) == objects


def test_patient_codes_differing_only_by_case_or_spaces_are_rejected_at_head(db: str) -> None:
    up("patient", db)
    add_patient(db, 1, "ABC-9")
    for twin in ("abc-9", " ABC-9", "Abc-9  "):
        with pytest.raises(psycopg.errors.UniqueViolation):
            add_patient(db, 1, twin)
    add_patient(db, 2, "abc-9")  # the rule is per entity


INSERT_USER = (
    "INSERT INTO users (healthcare_entity_id, email, password_hash, first_name, last_name, role)"
    " VALUES (%s, %s, 'x', 'A', 'B', 'staff') RETURNING id"
)


def test_user_email_duplicates_ignoring_case_refuse_then_are_rejected(db: str) -> None:
    up("user", db, EMAIL_V - 1)
    for country in ("Canada", "France"):
        query(
            db,
            "INSERT INTO healthcare_entities (name, type, country) VALUES ('E', 'clinic', %s)",
            [country],
        )
    a = query(db, INSERT_USER, (1, "Ada@Clinic.ca"))[0][0]
    b = query(db, INSERT_USER, (1, " ada@clinic.ca"))[0][0]
    query(db, INSERT_USER, (2, "ada@clinic.ca"))
    data, objects = rows(db, "users"), schema_objects(db)
    result = cli("user", "up", "--url", db)
    assert result.exit_code == 1, result.output
    line = one_line(result)
    assert f"version {EMAIL_V} refused: 1 emails" in line, line
    assert f"entity 1 (ids {a}, {b})" in line, line
    assert "ada@clinic.ca" not in result.output.lower(), "an email was printed"
    assert history(db) == versions("user")[: EMAIL_V - 1]
    assert rows(db, "users") == data and schema_objects(db) == objects
    query(db, "DELETE FROM users WHERE id = %s", [b])
    assert cli("user", "up", "--url", db).exit_code == 0
    for twin in ("ADA@CLINIC.CA", "ada@clinic.ca ", " Ada@clinic.CA"):
        with pytest.raises(psycopg.errors.UniqueViolation):
            query(db, INSERT_USER, (1, twin))
    query(db, INSERT_USER, (2, "other@clinic.ca"))


# --- indexes: an independent oracle in the catalog ---------------------------------------------

LOOKUPS = {"patient": "patients", "user": "users", "appointment": "appointments"}


@pytest.mark.parametrize("name", sorted(LOOKUPS))
def test_every_lookup_index_leads_with_the_tenant_key(name: str, db: str) -> None:
    up(name, db)
    table = LOOKUPS[name]
    found = query(
        db,
        "SELECT c.relname, a.attname, i.indisvalid FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND NOT i.indisexclusion",
        [table],
    )
    assert found, f"no indexes on {table}"
    wrong = [(n, first) for n, first, _ in found if first != "healthcare_entity_id"]
    assert not wrong, f"{table}: indexes not led by healthcare_entity_id: {wrong}"
    assert all(valid for *_, valid in found)
    names = {n for n, *_ in found}
    assert not names & {"idx_patients_email", "idx_users_email", "idx_appointments_patient"}


@pytest.mark.parametrize(
    ("name", "index", "key"),
    [
        ("patient", "patients_entity_patient_id_ci_key", "lower(btrim(patient_id))"),
        ("user", "users_entity_email_ci_key", "lower(btrim(email))"),
    ],
)
def test_case_blind_keys_are_unique_expression_indexes(
    name: str, index: str, key: str, db: str
) -> None:
    up(name, db, PATIENT_ID_V if name == "patient" else EMAIL_V)  # the version that adds it
    (definition,) = query(db, "SELECT indexdef FROM pg_indexes WHERE indexname = %s", [index])[0]
    assert definition.startswith("CREATE UNIQUE INDEX"), definition
    assert definition.endswith(f"(healthcare_entity_id, {key})"), definition


# --- date of birth ---------------------------------------------------------------------------


def test_future_dates_of_birth_refuse_then_are_rejected(db: str) -> None:
    up("patient", db, DOB_V - 1)
    today = query(db, "SELECT current_date")[0][0]
    add_patient(db, 1, "TODAY", born=str(today))
    future = [
        add_patient(db, 1, "F1", born=str(today + dt.timedelta(days=1))),
        add_patient(db, 2, "F2", born="2999-12-31"),
    ]
    data = rows(db, "patients")
    result = cli("patient", "up", "--contract", "--url", db)
    assert result.exit_code == 1, result.output
    line = one_line(result)
    assert f"version {DOB_V} refused: 2 patients have a date of birth in the future" in line
    assert f"(ids {future[0]}, {future[1]})" in line, line
    assert history(db) == versions("patient")[: DOB_V - 1] and rows(db, "patients") == data
    query(db, "UPDATE patients SET date_of_birth = '2000-01-01' WHERE id = ANY(%s)", [future])
    assert cli("patient", "up", "--contract", "--url", db).exit_code == 0
    with pytest.raises(psycopg.errors.CheckViolation):
        add_patient(db, 3, "F3", born=str(today + dt.timedelta(days=1)))
    add_patient(db, 3, "T2", born=str(today))


# --- downgrades that would lose data ----------------------------------------------------------


def test_rh_null_downgrade_refuses_then_maps_only_when_told(db: str) -> None:
    up("patient", db, RH_NULL_V)
    rare = [add_patient(db, 1, f"R{i}", blood="Rh-null") for i in range(2)]
    add_patient(db, 1, "O", blood="O-")
    data, objects = rows(db, "patients"), schema_objects(db)
    url = ["--url", db]
    refused = run_script("patient", "down", "--version", str(RH_NULL_V), *url)
    assert refused.returncode == 1, refused.stderr
    (line,) = refused.stderr.strip().splitlines()[-1:]
    assert line.startswith("migrate: error: ") and len(refused.stderr.strip().splitlines()) == 1
    assert f"version {RH_NULL_V} refused: 2 patients have blood type Rh-null" in line
    assert f"(ids {rare[0]}, {rare[1]})" in line and "-x rh_null=NULL" in line
    assert history(db) == versions("patient")[:RH_NULL_V]
    assert rows(db, "patients") == data and schema_objects(db) == objects

    bad = run_script("patient", "down", "--version", str(RH_NULL_V), "-x", "rh_null=O-", *url)
    assert bad.returncode == 2 and history(db) == versions("patient")[:RH_NULL_V], bad.stderr
    malformed = run_script("patient", "down", "--version", str(RH_NULL_V), "-x", "rh_null", *url)
    assert malformed.returncode == 2 and "KEY=VALUE" in malformed.stderr

    accepted = run_script(
        "patient", "down", "--version", str(RH_NULL_V), "-x", "rh_null=NULL", *url
    )
    assert accepted.returncode == 0, accepted.stderr
    assert history(db) == versions("patient")[: RH_NULL_V - 1]
    blood = dict(query(db, "SELECT patient_id, blood_type FROM patients"))
    assert blood == {"R0": None, "R1": None, "O": "O-"}
    assert query(
        db, "SELECT convalidated FROM pg_constraint WHERE conname = 'patients_blood_type_check'"
    ) == [(True,)]
    # Those rows can still be edited: nothing is frozen by a NOT VALID constraint.
    query(db, "UPDATE patients SET first_name = 'Z' WHERE id = %s", [rare[0]])


def test_the_option_is_in_the_help_and_plain_alembic_takes_it_too(db: str) -> None:
    import subprocess
    import sys

    helped = run_cli("patient", "down", "--help")
    assert "-x" in helped.stdout and "rh_null=NULL" in helped.stdout
    up("patient", db, RH_NULL_V)
    add_patient(db, 1, "R", blood="Rh-null")
    ini = ROOT / "services/patient/alembic.ini"
    alembic = [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url={db}"]
    target = f"{RH_NULL_V - 1:04d}"
    refused = subprocess.run([*alembic, "downgrade", target], capture_output=True, text=True)
    assert refused.returncode != 0 and "refused: 1 patients" in refused.stderr
    assert history(db) == versions("patient")[:RH_NULL_V]
    done = subprocess.run(
        [*alembic, "-x", "rh_null=NULL", "downgrade", target], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert query(db, "SELECT blood_type FROM patients") == [(None,)]


def test_dropping_emergency_contact_addresses_needs_consent(db: str) -> None:
    up("patient", db, ADDRESS_V)
    kept = add_patient(db, 1, "A")
    query(db, "UPDATE patients SET emergency_contact_address = '1 rue X' WHERE id = %s", [kept])
    refused = cli("patient", "down", "--version", str(ADDRESS_V), "--url", db)
    assert refused.exit_code == 1 and f"(ids {kept})" in one_line(refused)
    assert "emergency_contact_address" in columns(db, "patients")
    assert history(db) == versions("patient")[:ADDRESS_V]
    done = cli(
        "patient", "down", "--version", str(ADDRESS_V), "-x", "emergency_contact_address=drop",
        "--url", db,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "emergency_contact_address" not in columns(db, "patients")


def test_migrate_cmd_is_the_script() -> None:
    assert migrate_cmd("x")[-1] == "x"


def test_a_bad_x_argument_is_refused_before_anything_is_rolled_back(db: str) -> None:
    assert run_cli("patient", "up", "--url", db).exit_code == 0
    before = history(db)
    for given in ("rh_null=", "rh_null=keep", "rh_nul=NULL", "RH_NULL=NULL"):
        result = run_cli("patient", "down", "--version", "3", "-x", given, "--url", db)
        assert result.exit_code == 2, (given, result.output)
        assert len(result.stderr.strip().splitlines()) == 1
        assert history(db) == before, given  # nothing rolled back
    far = run_cli("patient", "down", "--version", "5", "-x", "rh_null=NULL", "--url", db)
    assert far.exit_code == 2 and "no migration of this run reads it" in far.stderr
    assert history(db) == before
