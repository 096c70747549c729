"""Isolate tenants by the database: row-level security on users and entities, user_app role

users is enabled and forced for row-level security: a session sees and writes only the
rows of the entity in app.healthcare_entity_id (none when unset); healthcare_entities
shows a session only its own entity, read-only. The NOLOGIN role user_app gets DML on
users (SELECT on healthcare_entities) and nothing else; applications log in as members of
it. The migrating role keeps a policy that sees every row, for later backfills. The
operator role platform_operator (BYPASSRLS, cross-tenant jobs) is made when the migrating
role may, and may read both tables.

Downgrade drops the policies and grants; user_app goes unless another database of the
server still uses it. No data is involved.

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
    isolate("healthcare_entities", SERVICE, key="id", commands="SELECT", privileges="SELECT")
    isolate("users", SERVICE)


def downgrade() -> None:
    release("users", SERVICE)
    release("healthcare_entities", SERVICE)
    drop_roles(SERVICE)
