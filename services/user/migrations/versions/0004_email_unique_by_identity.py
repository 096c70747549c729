"""Make users' email unique within an entity as the same identifier, whatever the locale

Version 2 compared emails with lower(btrim(email)), whose lower() depends on the
database's ctype (in a 'C' database it leaves 'É' alone) and which tells a composed 'é'
from a decomposed one, a full-width letter from its ASCII twin, and a trailing no-break
space from none. Emails are now unique per entity by identity_key(email): Unicode NFKC,
full case folding, Unicode white space trimmed and each run inside made one space (README
"Clinical identity"), the same in every database.

Emails that are the same identifier under that rule make the step refuse before it
changes anything, naming the entities and ids (never the emails): merge the duplicates
or correct one of each, then run 'up' again. The new unique index is built concurrently,
then version 2's is dropped concurrently. Downgrade rebuilds version 2's index (refusing
rows that collide under it) and drops the new index and identity_key().

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic_common.migration import unique_by_identity, unique_by_lower

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {"old": "users_entity_email_ci_key", "new": "users_entity_email_identity_key"}


def upgrade() -> None:
    unique_by_identity("users", "email", noun="emails", **INDEXES)


def downgrade() -> None:
    unique_by_lower("users", "email", noun="emails", **INDEXES)
