"""Create healthcare_entities and users with multi-tenant support

Healthcare entities are the clinics and hospitals of Canada, the USA, Morocco and France.
Every user belongs to exactly one entity; an email is unique within its entity. A trigger
keeps updated_at current on both tables.

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
    "downgrade-drops-data": "version 1: rolling it back means dropping its tables (users, healthcare_entities); 'down' is refused in production",
}


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "healthcare_entities",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("country", sa.Text, nullable=False),
        sa.Column("province_state", sa.Text),
        sa.Column("city", sa.Text),
        sa.Column("address", sa.Text),
        sa.Column("postal_code", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("email", sa.Text),
        *_timestamps(),
        sa.CheckConstraint("type IN ('clinic', 'hospital')", name="healthcare_entities_type_check"),
        sa.CheckConstraint(
            "country IN ('Canada', 'USA', 'Morocco', 'France')",
            name="healthcare_entities_country_check",
        ),
    )
    op.create_index("idx_healthcare_entities_country", "healthcare_entities", ["country"])
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "healthcare_entity_id",
            sa.BigInteger,
            sa.ForeignKey("healthcare_entities.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("first_name", sa.Text, nullable=False),
        sa.Column("last_name", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("last_login_at", sa.DateTime(timezone=True)),
        *_timestamps(),
        sa.UniqueConstraint("healthcare_entity_id", "email", name="users_entity_email_key"),
        sa.CheckConstraint(
            "role IN ('admin', 'doctor', 'nurse', 'receptionist', 'staff')", name="users_role_check"
        ),
    )
    op.create_index("idx_users_entity_role", "users", ["healthcare_entity_id", "role"])
    op.create_index("idx_users_email", "users", ["email"])
    for table in ("healthcare_entities", "users"):
        for statement in create_updated_at_trigger(table):
            op.execute(statement)


def downgrade() -> None:
    for statement in drop_updated_at_trigger("users", last=False):
        op.execute(statement)
    for statement in drop_updated_at_trigger("healthcare_entities"):
        op.execute(statement)
    op.drop_table("users")
    op.drop_table("healthcare_entities")
