"""Add emergency_contact_address to patients

A nullable column with no default: PostgreSQL adds it without rewriting the table. Unlike
the seed's version there is no index on it; nothing looks patients up by that address,
and a plain CREATE INDEX would block writes to patients while it builds.

Downgrade drops the column, so it refuses (changing nothing) while any patient has an
emergency contact address, unless the operator accepts losing them with
'-x emergency_contact_address=drop'.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from alembic_common.migration import UsageError, refuse_if, x_argument

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
x_arguments = {"emergency_contact_address": ["drop"]}  # read by downgrade()


def upgrade() -> None:
    op.add_column("patients", sa.Column("emergency_contact_address", sa.Text))


def downgrade() -> None:
    accepted = x_argument("emergency_contact_address")
    if accepted is None:
        filled = "emergency_contact_address IS NOT NULL AND emergency_contact_address <> ''"
        refuse_if(
            f"SELECT count(*) FROM patients WHERE {filled}",
            "patients have an emergency contact address, which version 1 has no column for",
            ids_sql=f"SELECT id FROM patients WHERE {filled} ORDER BY id LIMIT 6",
            hint="drop them knowingly with '-x emergency_contact_address=drop'",
        )
    elif accepted.strip().lower() != "drop":
        raise UsageError(
            f"patient: version 2: -x emergency_contact_address={accepted!r}: the only choice is 'drop'",
            service="patient",
            version=2,
        )
    op.drop_column("patients", "emergency_contact_address")
