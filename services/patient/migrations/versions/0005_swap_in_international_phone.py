"""Swap in the E.164 phone numbers

Contract step of version 4. phone becomes the E.164 number (version 4's phone_e164),
phone_extension stays, and the number as originally entered stays as phone_original, so
this step is undone without loss. The sync trigger goes: the new release writes E.164
numbers itself, and a CHECK keeps phone E.164 or NULL. The conversion functions stay
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

from collections.abc import Sequence

from alembic import op

from alembic_common.backfill import backfill
from alembic_common.ddl import NOT_BACKFILL
from alembic_common.safe import add_check_constraint

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
E164 = "phone IS NULL OR phone ~ '^[+][1-9][0-9]{6,14}$'"
lint_accepted = {
    "renaming-column": "contract step, run only once no release uses the old column names",
}


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS patients_sync_phone ON patients")
    op.execute("ALTER TABLE patients RENAME COLUMN phone TO phone_original")
    op.execute("ALTER TABLE patients RENAME COLUMN phone_e164 TO phone")
    # From now on the application writes phone itself: E.164 or NULL, never anything else.
    add_check_constraint("patients", "patients_phone_e164_check", E164)


def downgrade() -> None:
    op.execute("ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_phone_e164_check")
    backfill(
        "patients",
        "phone_original = patient_phone_national(phone, phone_extension, country)",
        # rows whose original does not mean the number they hold now
        "NOT EXISTS (SELECT FROM patient_phone_parse(phone_original, country) AS p"
        " WHERE split_part(p, ';ext=', 1) IS NOT DISTINCT FROM phone"
        " AND nullif(split_part(p, ';ext=', 2), '') IS NOT DISTINCT FROM phone_extension)",
    )
    op.execute("ALTER TABLE patients RENAME COLUMN phone TO phone_e164")
    op.execute("ALTER TABLE patients RENAME COLUMN phone_original TO phone")
    op.execute(
        "CREATE OR REPLACE TRIGGER patients_sync_phone"
        " BEFORE INSERT OR UPDATE OF phone, phone_e164, phone_extension ON patients"
        f" FOR EACH ROW WHEN ({NOT_BACKFILL}) EXECUTE FUNCTION patients_sync_phone()"
    )
