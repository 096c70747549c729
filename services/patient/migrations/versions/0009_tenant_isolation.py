"""Isolate tenants by the database: row-level security on patients, patient_app role

patients is enabled and forced for row-level security: a session sees and writes only the
rows of the entity in app.healthcare_entity_id (none when unset). The NOLOGIN role
patient_app gets DML on patients, USAGE on its sequence and SELECT on the lookup table
patient_phone_rules (the phone trigger reads it), and nothing else; applications log in
as members of it. The version schemas' views (security_invoker) get the same grants as
their tables. The migrating role keeps a policy that sees every row, for later backfills.
The operator role platform_operator (BYPASSRLS, cross-tenant jobs) is made when the
migrating role may.

Downgrade drops the policies and grants; patient_app goes unless another database of the
server still uses it. No data is involved.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic_common.migration import create_roles, drop_roles, grant, isolate, release, service_of

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERVICE = service_of(__file__)  # the folder's name


def upgrade() -> None:
    create_roles(SERVICE)
    isolate("patients", SERVICE)
    grant("patient_phone_rules", SERVICE, "SELECT")


def downgrade() -> None:
    release("patient_phone_rules", SERVICE)
    release("patients", SERVICE)
    drop_roles(SERVICE)
