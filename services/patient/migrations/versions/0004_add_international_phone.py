"""Add phone_international, filled by a trigger and a batched backfill

Expand step of moving phones to international format: +1 (Canada, USA), +212 (Morocco)
or +33 (France) followed by the digits, without the national trunk prefix (a leading 0,
or the 1 of an 11-digit North American number). Numbers already written with a leading +
keep their own code; '' and other countries' numbers are kept as they are.

The running release keeps reading and writing phone. A trigger fills phone_international
on every insert, and on every update of phone or country, from then on. Existing rows are
converted by a batched, resumable backfill: each batch commits on its own, so no writer
waits long on a row lock, and a run killed part-way resumes where it stopped. Nothing is
dropped or renamed here: swapping the columns is version 5, the contract step.

The conversion lives in the database as patient_phone_international(phone, country) and
its inverse patient_phone_national(phone, country), so the trigger, the backfill and
version 5 share one definition. Downgrade drops the trigger, the functions and the column;
phone itself is never touched, so nothing can be lost.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from alembic_common.backfill import backfill

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Dialling code and national trunk prefix per country.
CODES = {"Canada": ("1", "1"), "USA": ("1", "1"), "Morocco": ("212", "0"), "France": ("33", "0")}


def _international_body() -> str:
    digits = "regexp_replace(phone, '[^0-9]', '', 'g')"
    cases = [
        "WHEN phone IS NULL OR btrim(phone) = '' THEN phone",
        f"WHEN btrim(phone) LIKE '+%' THEN '+' || {digits}",
    ]
    for name, (code, trunk) in CODES.items():
        # Drop a written country code, or the trunk prefix, before adding +code.
        prefix = (
            f"^(00{code}|{code}(?=[0-9]{{10}}$))"
            if trunk == code
            else f"^(00{code}|{code}|{trunk})"
        )
        cases.append(
            f"WHEN country = '{name}' THEN '+{code}' || regexp_replace({digits}, '{prefix}', '')"
        )
    return "CASE " + " ".join(cases) + " ELSE phone END"


def _national_body() -> str:
    cases = ["WHEN phone IS NULL OR phone NOT LIKE '+%' THEN phone"]
    for name, (code, trunk) in CODES.items():
        national = f"substr(phone, {len(code) + 2})"
        if trunk != code:
            national = f"'{trunk}' || {national}"
        cases.append(f"WHEN country = '{name}' AND phone LIKE '+{code}%' THEN {national}")
    return "CASE " + " ".join(cases) + " ELSE phone END"


def upgrade() -> None:
    op.execute("ALTER TABLE patients ADD COLUMN IF NOT EXISTS phone_international TEXT")
    for name, body in (
        ("patient_phone_international", _international_body()),
        ("patient_phone_national", _national_body()),
    ):
        op.execute(
            f"CREATE OR REPLACE FUNCTION {name}(phone TEXT, country TEXT) RETURNS TEXT"
            f" LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT {body} $$"
        )
    op.execute(
        """
        CREATE OR REPLACE FUNCTION patients_fill_phone_international() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.phone_international := patient_phone_international(NEW.phone, NEW.country);
            RETURN NEW;
        END
        $$"""
    )
    op.execute(
        "CREATE OR REPLACE TRIGGER patients_fill_phone_international"
        " BEFORE INSERT OR UPDATE OF phone, country ON patients"
        " FOR EACH ROW EXECUTE FUNCTION patients_fill_phone_international()"
    )
    backfill(
        "patients",
        "phone_international = patient_phone_international(phone, country)",
        "phone_international IS NULL AND phone IS NOT NULL",
        # A writer that hits a row of the current batch waits for that batch at most.
        target_ms=50,
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS patients_fill_phone_international ON patients")
    op.execute("DROP FUNCTION IF EXISTS patients_fill_phone_international()")
    op.execute("DROP FUNCTION IF EXISTS patient_phone_national(TEXT, TEXT)")
    op.execute("DROP FUNCTION IF EXISTS patient_phone_international(TEXT, TEXT)")
    op.execute("ALTER TABLE patients DROP COLUMN IF EXISTS phone_international")
