"""Create appointments with a no-double-booking guarantee

healthcare_entity_id, patient_id and provider_id refer to rows in the user and patient
services' own databases, so they are plain ids rather than foreign keys. ends_at must be
after starts_at, status is one of a fixed list, and an exclusion constraint stops a
provider from holding two overlapping appointments that are not cancelled or no-shows.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from alembic_common.migration import create_updated_at_trigger, drop_updated_at_trigger

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

lint_accepted = {
    "tenant-table-without-rls": "row-level security comes in version 3 (tenancy.isolate)",
    "downgrade-drops-data": "version 1: rolling it back means dropping its tables (appointments); 'down' is refused in production",
}

# Appointments refer to patients and providers (users) by id: those services' tables must exist.
requires = {"patient": 1, "user": 1}


def upgrade() -> None:
    op.create_table(
        "appointments",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("healthcare_entity_id", sa.BigInteger, nullable=False),
        sa.Column("patient_id", sa.BigInteger, nullable=False),
        sa.Column("provider_id", sa.BigInteger, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'scheduled'")),
        sa.Column("reason", sa.Text),
        sa.Column("notes", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("ends_at > starts_at", name="appointments_time_range_check"),
        sa.CheckConstraint(
            "status IN ('scheduled', 'confirmed', 'checked_in', 'completed', 'cancelled', 'no_show')",
            name="appointments_status_check",
        ),
    )
    # int8range(provider_id, provider_id, '[]') WITH = gives equality without btree_gist.
    op.execute(
        "ALTER TABLE appointments ADD CONSTRAINT appointments_no_double_booking EXCLUDE USING gist"
        " (int8range(provider_id, provider_id, '[]') WITH =, tstzrange(starts_at, ends_at) WITH &&)"
        " WHERE (status NOT IN ('cancelled', 'no_show'))"
    )
    op.create_index(
        "idx_appointments_entity_starts_at", "appointments", ["healthcare_entity_id", "starts_at"]
    )
    op.create_index("idx_appointments_patient", "appointments", ["patient_id", "starts_at"])
    for statement in create_updated_at_trigger("appointments"):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_updated_at_trigger("appointments"):
        op.execute(statement)
    op.drop_table("appointments")
