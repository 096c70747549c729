"""Refuse dates of birth in the future

patients_date_of_birth_check is date_of_birth <= current_date, added NOT VALID and then
validated in its own transaction. current_date is not immutable, which PostgreSQL
tolerates in a CHECK because it evaluates the condition only when a row is written (and
when the constraint is validated): this one can only turn from false to true as time
passes, so a row accepted once is never rejected later, nor by a restore of a dump. The
date is the writing session's (its TimeZone): a session far behind the clinic's own zone
may refuse a birth of the clinic's today for a few hours. A trigger would have the same
semantics at more cost, so the rule is a CHECK.

Dates of birth already in the future make the step refuse before changing anything,
naming how many and a few ids. Downgrade drops the CHECK; no data is involved.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

from alembic_common.migration import add_check_constraint, refuse_if

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUTURE = "date_of_birth > current_date"


def upgrade() -> None:
    refuse_if(
        f"SELECT count(*) FROM patients WHERE {FUTURE}",
        "patients have a date of birth in the future",
        ids_sql=f"SELECT id FROM patients WHERE {FUTURE} ORDER BY id LIMIT 6",
        hint="correct them, then run 'up' again",
    )
    add_check_constraint(
        "patients", "patients_date_of_birth_check", "date_of_birth <= current_date"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_date_of_birth_check")
