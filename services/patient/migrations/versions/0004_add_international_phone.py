"""Add phone_e164 and phone_extension, kept in step with phone both ways

Expand step of moving phones to E.164 (+15145550199, +33612345678, +212612345678), with
the extension apart. The old release keeps reading and writing phone as entered; a
release built for version 5 reads and writes the new columns through the version schema
patient_v5, where phone is the E.164 number (see version 5's contract declaration).

The conversion is libphonenumber's, ported to SQL in data/phone_conversion.sql with its
rules per calling code in data/phone_rules.json (loaded into patient_phone_rules):
patient_phone_parse(raw, country) reads what a clinic typed (national or international,
trunk 0 or 1, a redundant (0), 00 and 011 prefixes, extensions written x, ext., # or
poste, Arabic-Indic and full-width digits) and gives '+15145550199;ext=123', or NULL
when no valid number is in it; patient_phone_national(e164, extension, country) gives
the national form back. One definition serves the backfill, the sync trigger, the
reverse conversion and version 5's downgrade.

The sync trigger works both ways: a write of phone by the old release fills the new
columns; a write of the new columns by the new release fills phone with the national
number, unless phone already means that number (its text as entered is then kept); what
the new release writes is read as a number too (an extension written into it moves to
phone_extension), and a value with no number in it is kept in phone, NULL in phone_e164.
A country corrected later (a spelling no table knew, put right by an operator) gives a
phone that had no number its number. Countries are read through
patient_country_canonical(country), made here from data/countries.json: the one table of
spellings, which version 6 makes canonical with. Existing rows are converted by a
batched, resumable backfill, whose writes the trigger skips. A value with no valid number keeps phone and leaves phone_e164 NULL:

    SELECT count(*) FROM patients WHERE phone_e164 IS NULL AND btrim(phone) <> '';

Downgrade drops the trigger, the functions, the rules and the new columns; phone itself
is never touched here, so nothing is lost.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import json
from collections.abc import Sequence
from pathlib import Path

from alembic import op

from alembic_common.migration import NOT_BACKFILL, backfill, literal_sql, run_sql_file

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

lint_accepted = {
    "prefer-bigint-over-int": "patient_phone_rules holds calling codes (at most 3 digits) and lengths",
    "downgrade-drops-data": "phone_e164 and phone_extension are read off phone, which stays; patient_phone_rules is generated from libphonenumber",
}

DATA = Path(__file__).resolve().parent.parent / "data"

# Both new columns from one parse: '+15145550199;ext=123' -> ('+15145550199', '123').
CONVERTED = (
    "(SELECT split_part(p, ';ext=', 1), nullif(split_part(p, ';ext=', 2), '')"
    " FROM patient_phone_parse(phone, country) AS p)"
)

SYNC = """
CREATE OR REPLACE FUNCTION patients_sync_phone() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    parsed text;
    written text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.phone IS DISTINCT FROM OLD.phone
       AND NOT (NEW.phone_e164 IS DISTINCT FROM OLD.phone_e164
                OR NEW.phone_extension IS DISTINCT FROM OLD.phone_extension) THEN
        parsed := patient_phone_parse(NEW.phone, NEW.country);  -- the old release wrote
    ELSIF TG_OP = 'UPDATE' AND NEW.country IS DISTINCT FROM OLD.country
          AND NEW.phone_e164 IS NULL AND OLD.phone_e164 IS NULL
          AND NEW.phone_extension IS NOT DISTINCT FROM OLD.phone_extension THEN
        -- a country corrected: a phone its old country gave no number may have one now
        parsed := patient_phone_parse(NEW.phone, NEW.country);
        IF parsed IS NULL THEN
            RETURN NEW;
        END IF;
    ELSIF TG_OP = 'INSERT' AND NEW.phone_e164 IS NULL AND NEW.phone_extension IS NULL THEN
        parsed := patient_phone_parse(NEW.phone, NEW.country);  -- the old release inserted
    ELSIF TG_OP = 'INSERT' OR NEW.phone IS NOT DISTINCT FROM OLD.phone THEN
        -- the new release wrote: its value is read as a number, never kept as garbage
        written := patient_phone_parse(
            NEW.phone_e164 || coalesce(' ext. ' || NEW.phone_extension, ''), NEW.country);
        IF NEW.phone_e164 IS NOT NULL AND written IS NULL THEN
            NEW.phone := NEW.phone_e164;  -- no number in it: kept as entered, on the old side
            NEW.phone_e164 := NULL;
            NEW.phone_extension := NULL;
            RETURN NEW;
        END IF;
        NEW.phone_e164 := split_part(written, ';ext=', 1);
        NEW.phone_extension := nullif(split_part(written, ';ext=', 2), '');
        -- phone keeps its text when it already means the same number
        IF patient_phone_parse(NEW.phone, NEW.country) IS DISTINCT FROM written THEN
            NEW.phone := patient_phone_national(NEW.phone_e164, NEW.phone_extension, NEW.country);
        END IF;
        RETURN NEW;
    ELSE
        RETURN NEW;  -- both sides written at once: as written
    END IF;
    NEW.phone_e164 := split_part(parsed, ';ext=', 1);
    NEW.phone_extension := nullif(split_part(parsed, ';ext=', 2), '');
    RETURN NEW;
END
$$"""


def upgrade() -> None:
    op.execute("ALTER TABLE patients ADD COLUMN IF NOT EXISTS phone_e164 TEXT")
    op.execute("ALTER TABLE patients ADD COLUMN IF NOT EXISTS phone_extension TEXT")
    run_sql_file(DATA / "phone_conversion.sql")
    rules = json.loads((DATA / "phone_rules.json").read_text())["rules"]
    op.execute(
        literal_sql(
            "INSERT INTO patient_phone_rules SELECT * FROM jsonb_populate_recordset("
            f"NULL::patient_phone_rules, '{json.dumps(rules).replace(chr(39), chr(39) * 2)}')"
            " ON CONFLICT DO NOTHING"
        )
    )
    op.execute(literal_sql(SYNC))
    op.execute(
        "CREATE OR REPLACE TRIGGER patients_sync_phone"
        " BEFORE INSERT OR UPDATE OF phone, phone_e164, phone_extension, country ON patients"
        f" FOR EACH ROW WHEN ({NOT_BACKFILL}) EXECUTE FUNCTION patients_sync_phone()"
    )
    backfill(
        "patients",
        f"(phone_e164, phone_extension) = {CONVERTED}",
        "phone IS NOT NULL AND phone_e164 IS NULL AND phone_extension IS NULL",
        # A writer that hits a row of the current batch waits for that batch at most.
        target_ms=25,
        # The conversion is CPU-bound: two connections convert two halves at once.
        workers=2,
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS patients_sync_phone ON patients")
    op.execute("DROP FUNCTION IF EXISTS patients_sync_phone()")
    op.execute("DROP FUNCTION IF EXISTS patient_phone_national(TEXT, TEXT, TEXT)")
    op.execute("DROP FUNCTION IF EXISTS patient_phone_parse(TEXT, TEXT)")
    op.execute("DROP FUNCTION IF EXISTS patient_phone__finish(INTEGER, TEXT)")
    op.execute("DROP FUNCTION IF EXISTS patient_phone__split(TEXT)")
    op.execute("DROP FUNCTION IF EXISTS patient_phone__code(TEXT)")
    op.execute("DROP FUNCTION IF EXISTS patient_country_canonical(TEXT)")
    op.execute("DROP TABLE IF EXISTS patient_phone_rules")
    op.execute("ALTER TABLE patients DROP COLUMN IF EXISTS phone_extension")
    op.execute("ALTER TABLE patients DROP COLUMN IF EXISTS phone_e164")
