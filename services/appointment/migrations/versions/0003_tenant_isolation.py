"""Isolate tenants by the database: row-level security on appointments, appointment_app role

appointments is enabled and forced for row-level security: a session sees and writes only
the rows of the entity in app.healthcare_entity_id (none when unset). The NOLOGIN role
appointment_app gets DML on appointments and USAGE on its sequence, and nothing else;
applications log in as members of it. The migrating role keeps a policy that sees every
row, for later backfills. The operator role platform_operator (BYPASSRLS, cross-tenant
jobs) is made when the migrating role may.

Downgrade drops the policies and grants; appointment_app goes unless another database of
the server still uses it. No data is involved.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic_common.migration import create_roles, drop_roles, isolate, release, service_of

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERVICE = service_of(__file__)  # the folder's name


def upgrade() -> None:
    create_roles(SERVICE)
    isolate("appointments", SERVICE)


def downgrade() -> None:
    release("appointments", SERVICE)
    drop_roles(SERVICE)
