"""Lead the patient lookup index with healthcare_entity_id

idx_appointments_patient (patient_id, starts_at) served a tenant's "appointments of this
patient" without the tenant key. It is replaced, concurrently (reads and writes go on),
by idx_appointments_entity_patient on (healthcare_entity_id, patient_id, starts_at).
Downgrade rebuilds the old index concurrently; no data is involved.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic_common.migration import create_index_concurrently, drop_index_concurrently

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_index_concurrently(
        "idx_appointments_entity_patient",
        "appointments",
        "healthcare_entity_id, patient_id, starts_at",
    )
    drop_index_concurrently("idx_appointments_patient")


def downgrade() -> None:
    create_index_concurrently("idx_appointments_patient", "appointments", "patient_id, starts_at")
    drop_index_concurrently("idx_appointments_entity_patient")
