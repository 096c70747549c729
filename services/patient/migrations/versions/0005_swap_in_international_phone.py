"""Swap in the international phone numbers

Contract step of version 4: run it with 'up --contract' once no release that reads or
writes the old phone column is still running (a plain 'up' holds it back). phone becomes
the international number (what version 4 kept in phone_international) and the number as
originally entered stays as phone_original, so this step is undone without loss. The
sync trigger goes: the new release writes international numbers itself.

Downgrade restores the version-4 layout: phone_original becomes phone again. A number
written after this step (a new patient, or a changed number) has no matching original,
so it is first converted back to its national form, in resumable batches; the trigger
comes back to keep phone_international filled.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from alembic_common.backfill import backfill

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

phase = "contract"
lint_accepted = {
    "renaming-column": "contract step, run only once no release uses the old column names",
}


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS patients_fill_phone_international ON patients")
    op.execute("ALTER TABLE patients RENAME COLUMN phone TO phone_original")
    op.execute("ALTER TABLE patients RENAME COLUMN phone_international TO phone")


def downgrade() -> None:
    backfill(
        "patients",
        "phone_original = patient_phone_national(phone, country)",
        "phone IS DISTINCT FROM patient_phone_international(phone_original, country)",
    )
    op.execute("ALTER TABLE patients RENAME COLUMN phone TO phone_international")
    op.execute("ALTER TABLE patients RENAME COLUMN phone_original TO phone")
    op.execute(
        "CREATE OR REPLACE TRIGGER patients_fill_phone_international"
        " BEFORE INSERT OR UPDATE OF phone, country ON patients"
        " FOR EACH ROW EXECUTE FUNCTION patients_fill_phone_international()"
    )
