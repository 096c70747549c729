"""Make patient_id unique within an entity as the same identifier, whatever the locale

Version 7 compared patient codes with lower(btrim(patient_id)), whose lower() depends on
the database's ctype (in a 'C' database 'DUPRÉ-1' and 'dupré-1' are two patients) and
which tells a composed 'é' from a decomposed one (macOS and some scanners write the
latter), a full-width letter from its ASCII twin, and a trailing no-break space or tab
from none: duplicate patient records, a patient-safety hazard. Codes are now unique per
entity by identity_key(patient_id): Unicode NFKC, full case folding, Unicode white space
trimmed and each run inside made one space; punctuation counts (README "Clinical
identity"), the same in every database.

Codes that are the same identifier under that rule make the step refuse before it
changes anything, naming the entities and ids (never the codes): merge the duplicate
records or correct one code of each, then run 'up' again. The new unique index is built
concurrently, then version 7's is dropped concurrently. Downgrade rebuilds version 7's
index (refusing rows that collide under it) and drops the new index and identity_key().

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic_common.migration import unique_by_identity, unique_by_lower

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "old": "patients_entity_patient_id_ci_key",
    "new": "patients_entity_patient_id_identity_key",
}


def upgrade() -> None:
    unique_by_identity("patients", "patient_id", noun="patient codes", **INDEXES)


def downgrade() -> None:
    unique_by_lower("patients", "patient_id", noun="patient codes", **INDEXES)
