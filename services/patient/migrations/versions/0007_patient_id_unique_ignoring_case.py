"""Make patient_id unique within an entity ignoring case and spaces; tenant-first email index

'PAR-1', 'par-1' and ' PAR-1 ' are one patient code within an entity. The rule is a
unique expression index on (healthcare_entity_id, lower(btrim(patient_id))), built
concurrently, rather than normalising on write: codes stay exactly as entered (a round
trip changes nothing), and a lookup written as lower(btrim(patient_id)) = lower(btrim($2))
uses the index. The exact unique constraint of version 1 stays.

Codes already used twice or more (so compared) make the step refuse before it builds
anything, listing the duplicates by entity and row ids, never the codes (a patient's
code is a value of its row): merge or rename them, then run 'up' again.

idx_patients_email (email alone) served a tenant's lookup by scanning every tenant's
matches; it is replaced, concurrently, by idx_patients_entity_email on
(healthcare_entity_id, email). Downgrade rebuilds the version-6 indexes concurrently;
no data is involved.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic_common.migration import create_index_concurrently, drop_index_concurrently, refuse_if

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "healthcare_entity_id, lower(btrim(patient_id))"
DUPLICATES = f"SELECT healthcare_entity_id AS entity, {KEY.split(', ')[1]} AS code,"
DUPLICATES += f" array_agg(id ORDER BY id) AS ids FROM patients GROUP BY {KEY} HAVING count(*) > 1"


def upgrade() -> None:
    refuse_if(
        f"SELECT count(*) FROM ({DUPLICATES}) AS d",
        "patient codes are used more than once within an entity, ignoring case and spaces",
        ids_sql="SELECT 'entity ' || entity || ' (ids '"
        f" || array_to_string(ids, ', ') || ')' FROM ({DUPLICATES}) AS d ORDER BY entity, code LIMIT 6",
        shown_as="duplicates:",
        hint="merge or rename them, then run 'up' again",
    )
    create_index_concurrently("patients_entity_patient_id_ci_key", "patients", KEY, unique=True)
    create_index_concurrently(
        "idx_patients_entity_email", "patients", "healthcare_entity_id, email"
    )
    drop_index_concurrently("idx_patients_email")


def downgrade() -> None:
    create_index_concurrently("idx_patients_email", "patients", "email")
    drop_index_concurrently("idx_patients_entity_email")
    drop_index_concurrently("patients_entity_patient_id_ci_key")
