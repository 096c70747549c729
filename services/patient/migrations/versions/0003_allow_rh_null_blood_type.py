"""Allow the Rh-null blood type

Widens patients_blood_type_check with 'Rh-null'. The wider constraint replaces the old
one NOT VALID (a brief lock), then is validated in its own transaction, so reads and
writes to patients go on during the scan.

Downgrade keeps every row: patients whose blood_type is already 'Rh-null' are left as
they are, and the narrower constraint is put back NOT VALID, so it binds every new
insert and update while tolerating those existing rows. It is validated (and the schema
is then exactly that of version 2) only when no 'Rh-null' row exists. Nothing is erased
or rewritten to fit the older list.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from alembic_common.safe import add_check_constraint, own_transaction

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

lint_accepted = {
    "ban-drop-constraint": "the CHECK is replaced in the same step by a wider one; "
    "no guarantee that clients rely on is lost",
}

BASE_TYPES = "'A+', 'A-', 'B+', 'B-', 'AB+', 'AB-', 'O+', 'O-'"


def check(types: str) -> str:
    return f"blood_type IS NULL OR blood_type = '' OR blood_type IN ({types})"


def upgrade() -> None:
    add_check_constraint(
        "patients", "patients_blood_type_check", check(BASE_TYPES + ", 'Rh-null'"), replace=True
    )


def downgrade() -> None:
    op.execute("ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_blood_type_check")
    op.execute(
        "ALTER TABLE patients ADD CONSTRAINT patients_blood_type_check"
        f" CHECK ({check(BASE_TYPES)}) NOT VALID"
    )
    with own_transaction():
        op.execute(
            """
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM patients WHERE blood_type = 'Rh-null') THEN
                    ALTER TABLE patients VALIDATE CONSTRAINT patients_blood_type_check;
                ELSE
                    RAISE NOTICE 'patients with blood_type Rh-null kept; '
                        'patients_blood_type_check stays NOT VALID until they are reviewed';
                END IF;
            END
            $$
            """
        )
