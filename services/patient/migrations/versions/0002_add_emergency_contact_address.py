"""Add emergency_contact_address to patients

A nullable column with no default: PostgreSQL adds it without rewriting the table. Unlike
the seed's version there is no index on it; nothing looks patients up by that address,
and a plain CREATE INDEX would block writes to patients while it builds.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("patients", sa.Column("emergency_contact_address", sa.Text))


def downgrade() -> None:
    op.drop_column("patients", "emergency_contact_address")
