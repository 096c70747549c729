"""Make users' email unique within an entity ignoring case and spaces; tenant-first lookup

'Ada@Clinic.ca' and ' ada@clinic.ca' are one login within an entity. The rule is a unique
expression index on (healthcare_entity_id, lower(btrim(email))), built concurrently,
rather than normalising on write: emails stay exactly as entered (a round trip changes
nothing), and a login lookup written as lower(btrim(email)) = lower(btrim($2)) with the
entity uses it. The exact users_entity_email_key of version 1 stays.

Emails already used twice or more (so compared) make the step refuse before it builds
anything, listing the duplicates by entity and ids.

idx_users_email (email alone) served a tenant's lookup across every tenant's rows; it is
dropped concurrently: the two unique indexes above, both led by healthcare_entity_id,
serve exact and case-blind lookups. Downgrade rebuilds it concurrently; no data is
involved.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic_common.migration import create_index_concurrently, drop_index_concurrently, refuse_if

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "healthcare_entity_id, lower(btrim(email))"
DUPLICATES = "SELECT healthcare_entity_id AS entity, lower(btrim(email)) AS email,"
DUPLICATES += f" array_agg(id ORDER BY id) AS ids FROM users GROUP BY {KEY} HAVING count(*) > 1"


def upgrade() -> None:
    refuse_if(
        f"SELECT count(*) FROM ({DUPLICATES}) AS d",
        "emails are used more than once within an entity, ignoring case and spaces",
        ids_sql="SELECT 'entity ' || entity || ' (ids '"
        f" || array_to_string(ids, ', ') || ')' FROM ({DUPLICATES}) AS d ORDER BY entity, email LIMIT 6",
        shown_as="duplicates:",
        hint="merge or correct them, then run 'up' again",
    )
    create_index_concurrently("users_entity_email_ci_key", "users", KEY, unique=True)
    drop_index_concurrently("idx_users_email")


def downgrade() -> None:
    create_index_concurrently("idx_users_email", "users", "email")
    drop_index_concurrently("users_entity_email_ci_key")
