"""Create patients with multi-tenant isolation and international fields

Every row carries its healthcare_entity_id (indexed); patient_id is the entity's own
patient code and is unique within the entity. Addresses are international (country,
province or state, postal code). blood_type, preferred_language and marital_status are
optional: each is NULL, '' or one listed value. A trigger keeps updated_at current.

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
    "tenant-table-without-rls": "row-level security comes in version 9 (tenancy.isolate)",
    "downgrade-drops-data": "version 1: rolling it back means dropping its tables (patients); 'down' is refused in production",
}


def optional_in(column: str, values: str) -> str:
    return f"{column} IS NULL OR {column} = '' OR {column} IN ({values})"


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("healthcare_entity_id", sa.BigInteger, nullable=False),
        sa.Column("patient_id", sa.Text, nullable=False),
        sa.Column("first_name", sa.Text, nullable=False),
        sa.Column("last_name", sa.Text, nullable=False),
        sa.Column("date_of_birth", sa.Date, nullable=False),
        sa.Column("gender", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("address", sa.Text),
        sa.Column("city", sa.Text),
        sa.Column("province_state", sa.Text),
        sa.Column("postal_code", sa.Text),
        sa.Column("country", sa.Text, nullable=False),
        sa.Column("emergency_contact_name", sa.Text),
        sa.Column("emergency_contact_phone", sa.Text),
        sa.Column("emergency_contact_relationship", sa.Text),
        sa.Column("blood_type", sa.Text),
        sa.Column("preferred_language", sa.Text),
        sa.Column("marital_status", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint(
            "healthcare_entity_id", "patient_id", name="patients_entity_patient_id_key"
        ),
        sa.CheckConstraint(
            optional_in("gender", "'male', 'female', 'other', 'unknown'"),
            name="patients_gender_check",
        ),
        sa.CheckConstraint(
            optional_in("blood_type", "'A+', 'A-', 'B+', 'B-', 'AB+', 'AB-', 'O+', 'O-'"),
            name="patients_blood_type_check",
        ),
        sa.CheckConstraint(
            optional_in("preferred_language", "'en', 'fr', 'ar', 'es'"),
            name="patients_preferred_language_check",
        ),
        sa.CheckConstraint(
            optional_in(
                "marital_status", "'single', 'married', 'divorced', 'widowed', 'separated', 'other'"
            ),
            name="patients_marital_status_check",
        ),
    )
    op.create_index(
        "idx_patients_entity_name", "patients", ["healthcare_entity_id", "last_name", "first_name"]
    )
    op.create_index("idx_patients_email", "patients", ["email"])
    for statement in create_updated_at_trigger("patients"):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_updated_at_trigger("patients"):
        op.execute(statement)
    op.drop_table("patients")
