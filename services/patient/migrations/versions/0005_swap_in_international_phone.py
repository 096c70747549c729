"""Swap in the E.164 phone numbers

Contract step of version 4. phone becomes the E.164 number (version 4's phone_e164),
phone_extension stays, and the number as originally entered stays as phone_original, so
this step is undone without loss. The sync trigger goes: the new release writes E.164
numbers itself, and a CHECK keeps phone E.164 or NULL, of the lengths libphonenumber's
rules allow (the rules version 4 converted with, so every number it wrote passes). A
country corrected afterwards gives a phone that its old country left without a number
its number again (from phone_original). The conversion functions stay
(version 4 owns them).

A plain 'up' runs this step by itself once no session announces a release older than 5
(application_name 'patient@3' or 'patient@4'); until then it is held, and a release
built for 5 runs against the version schema patient_v5, which presents patients as this
step leaves it (see 'contract' below). 'up --contract' forces it.

Downgrade restores the version-4 layout: phone_original becomes phone again. A number
written after this step (a new patient, or a changed number) has no matching original,
so it is first converted back to its national form, in resumable batches; the sync
trigger comes back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import json
from collections.abc import Sequence
from pathlib import Path

from alembic import op

from alembic_common.migration import (
    NOT_BACKFILL,
    add_check_constraint,
    backfill,
    has_column,
    literal_sql,
)

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

phase = "contract"
# The tables as this step leaves them; patient_v5's views show them so before it runs.
contract = {
    "patients": {
        "rename": {"phone": "phone_original", "phone_e164": "phone"},
        "hide": ["phone_original"],
    },
}


def _e164() -> str:
    """phone holds an E.164 number of a length some calling code allows: the lengths come
    from the same rules (data/phone_rules.json, libphonenumber's) as the numbers version 4
    wrote, so every number it wrote passes (E.164 says 15 digits at most; libphonenumber,
    and with it version 4, accepts up to 19 for some countries)."""
    rules = json.loads((DATA / "phone_rules.json").read_text())["rules"]
    totals = [len(str(r["country_code"])) + n for r in rules for n in r["lengths"]]
    return f"phone IS NULL OR phone ~ '^[+][1-9][0-9]{{{min(totals) - 1},{max(totals) - 1}}}$'"


DATA = Path(__file__).resolve().parent.parent / "data"
E164 = _e164()
# A country corrected after the swap (an operator putting right a spelling no table knew)
# gives a phone its number again, when its old country gave the number entered none: the
# phone was lost to the country, not removed by the application.
REDERIVE = """
CREATE OR REPLACE FUNCTION patients_rederive_phone() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    parsed text;
BEGIN
    IF NEW.phone IS NULL AND OLD.phone IS NULL AND btrim(coalesce(NEW.phone_original, '')) <> ''
       AND patient_phone_parse(OLD.phone_original, OLD.country) IS NULL THEN
        parsed := patient_phone_parse(NEW.phone_original, NEW.country);
        IF parsed IS NOT NULL THEN
            NEW.phone := split_part(parsed, ';ext=', 1);
            NEW.phone_extension := nullif(split_part(parsed, ';ext=', 2), '');
        END IF;
    END IF;
    RETURN NEW;
END
$$"""
lint_accepted = {
    "renaming-column": "contract step, run only once no release uses the old column names",
}


def _renames_while(column: str, renames: list[tuple[str, str]]) -> str:
    """The renames, run only while patients still has ``column``: a run stopped part-way may
    find them done or not."""
    done = " ".join(f"ALTER TABLE patients RENAME COLUMN {a} TO {b};" for a, b in renames)
    return (
        "DO $migrate$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_attribute"
        f" WHERE attrelid = 'patients'::regclass AND attname = '{column}' AND NOT attisdropped)"
        f" THEN {done} END IF; END $migrate$"
    )


SWAP = _renames_while("phone_e164", [("phone", "phone_original"), ("phone_e164", "phone")])
UNSWAP = _renames_while("phone_original", [("phone", "phone_e164"), ("phone_original", "phone")])


def upgrade() -> None:
    # First the rule, on the column that holds the E.164 numbers (phone_e164 until the swap),
    # added NOT VALID and validated in its own transaction: the old release still writes
    # through the sync trigger, whose numbers it accepts. Should validation fail or the run
    # stop, nothing either release relies on has changed, and a rerun goes on from here.
    if swapped(planned=False):
        add_check_constraint("patients", "patients_phone_e164_check", E164)
    else:
        add_check_constraint(
            "patients", "patients_phone_e164_check", E164.replace("phone", "phone_e164")
        )
    # Then, in the transaction that records the version, the swap: the trigger goes, and
    # the application writes phone itself, E.164 or NULL, never anything else.
    op.execute("DROP TRIGGER IF EXISTS patients_sync_phone ON patients")
    op.execute(SWAP)
    op.execute(literal_sql(REDERIVE))
    op.execute(
        "CREATE OR REPLACE TRIGGER patients_rederive_phone BEFORE UPDATE OF country ON patients"
        " FOR EACH ROW EXECUTE FUNCTION patients_rederive_phone()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS patients_rederive_phone ON patients")
    op.execute("DROP FUNCTION IF EXISTS patients_rederive_phone()")
    op.execute("ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_phone_e164_check")
    if swapped(planned=True):
        backfill(
            "patients",
            "phone_original = patient_phone_national(phone, phone_extension, country)",
            # rows whose original does not mean the number they hold now
            "NOT EXISTS (SELECT FROM patient_phone_parse(phone_original, country) AS p"
            " WHERE split_part(p, ';ext=', 1) IS NOT DISTINCT FROM phone"
            " AND nullif(split_part(p, ';ext=', 2), '') IS NOT DISTINCT FROM phone_extension)",
        )
    op.execute(UNSWAP)
    op.execute(
        "CREATE OR REPLACE TRIGGER patients_sync_phone"
        " BEFORE INSERT OR UPDATE OF phone, phone_e164, phone_extension, country ON patients"
        f" FOR EACH ROW WHEN ({NOT_BACKFILL}) EXECUTE FUNCTION patients_sync_phone()"
    )


def swapped(*, planned: bool) -> bool:
    """Whether phone holds the E.164 numbers already (``planned``: in a plan)."""
    return has_column("patients", "phone_original", planned=planned)
