"""Normalise patients' countries to Canada, USA, France or Morocco and check them

Existing spellings are mapped to the four canonical names the platform serves (the
names healthcare_entities.country already checks): case, surrounding and repeated
spaces, dots and hyphens do not count, nor do French accents or Arabic hamza forms, and
ISO codes ('CA', 'US', 'FR', 'MA', 'USA', 'U.S.A.'), English, French, Spanish and Arabic
names are known ('United States', 'États-Unis', 'Maroc', 'Royaume du Maroc', 'المغرب',
'كندا', 'فرنسا', 'الولايات المتحدة' ...). The mapping is data/countries.json, the one
table of spellings, which the phone conversion of version 4 reads too: it lives in the
database as patient_country_canonical(country) (made by version 4), NULL for a country it
does not know.

A country it cannot map makes the step refuse before changing anything, naming how many
patients and a few ids: correct them, then run 'up' again. Otherwise every spelling that
changes is kept in country_original, a trigger normalises every later insert and update
the same way (the running release may still write 'ca'), the rows are rewritten in
resumable batches, and patients_country_check is added NOT VALID then validated in its
own transaction.

Downgrade drops the trigger and the CHECK and puts every original spelling back, for
rows whose country still means what it meant (a country changed since is kept), then
drops country_original: a round trip leaves every value as it was.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

from alembic_common.migration import backfill, refuse_if, validate_constraint

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
lint_accepted = {
    "downgrade-drops-data": "every original spelling is written back into country before country_original goes",
}

CANONICAL = ("Canada", "USA", "France", "Morocco")


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


IN_LIST = ", ".join(_quoted(c) for c in CANONICAL)


def upgrade() -> None:
    unknown = "patient_country_canonical(country) IS NULL"
    refuse_if(
        f"SELECT count(*) FROM patients WHERE {unknown}",
        f"patients have a country that is none of {', '.join(CANONICAL)} in any known spelling",
        ids_sql=f"SELECT id FROM patients WHERE {unknown} ORDER BY id LIMIT 6",
        hint="correct those rows, then run 'up' again",
    )
    op.execute("ALTER TABLE patients ADD COLUMN IF NOT EXISTS country_original TEXT")
    op.execute(
        """
        CREATE OR REPLACE FUNCTION patients_normalise_country() RETURNS trigger
        LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        DECLARE
            canonical TEXT := patient_country_canonical(NEW.country);
        BEGIN
            IF canonical IS NOT NULL AND canonical <> NEW.country THEN
                NEW.country_original := NEW.country;
                NEW.country := canonical;
            END IF;
            RETURN NEW;
        END
        $$"""
    )
    op.execute(
        "CREATE OR REPLACE TRIGGER patients_normalise_country"
        " BEFORE INSERT OR UPDATE ON patients"
        " FOR EACH ROW EXECUTE FUNCTION patients_normalise_country()"
    )
    # NOT VALID binds every write from now on (normalised by the trigger first); a run
    # resumed after the backfill committed finds the constraint already there.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                           WHERE conrelid = 'patients'::regclass
                             AND conname = 'patients_country_check') THEN
                ALTER TABLE patients ADD CONSTRAINT patients_country_check
                    CHECK (country IN ({IN_LIST})) NOT VALID;
            END IF;
        END
        $$"""
    )
    backfill(
        "patients",
        "country_original = country, country = patient_country_canonical(country)",
        "country <> patient_country_canonical(country)",
        name="0006:patients.country",
    )
    validate_constraint("patients", "patients_country_check")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS patients_normalise_country ON patients")
    op.execute("DROP FUNCTION IF EXISTS patients_normalise_country()")
    op.execute("ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_country_check")
    backfill(
        "patients",
        "country = country_original",
        "country_original IS NOT NULL AND country <> country_original"
        " AND country = patient_country_canonical(country_original)",
        name="0006:patients.country_original",
    )
    op.execute("ALTER TABLE patients DROP COLUMN IF EXISTS country_original")
