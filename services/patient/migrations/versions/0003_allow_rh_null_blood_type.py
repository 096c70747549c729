"""Allow the Rh-null blood type

Widens patients_blood_type_check with 'Rh-null'. The wider constraint replaces the old
one NOT VALID (a brief lock), then is validated in its own transaction, so reads and
writes to patients go on during the scan.

Downgrade refuses, changing nothing, while any patient has blood type 'Rh-null': the
narrower constraint would either reject those rows or, brought back NOT VALID, freeze
them (every later update of such a row would fail). The refusal names how many and a
few ids. An operator who accepts losing the value says so explicitly:
'migrate patient down --version 3 -x rh_null=NULL' sets those blood types to NULL
(unknown) and then restores the narrower constraint, validated.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from alembic_common.migration import (
    PRESERVE_UPDATED_AT,
    UsageError,
    add_check_constraint,
    refuse_if,
    validate_constraint,
    x_argument,
)

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
x_arguments = {"rh_null": ["NULL"]}  # read by downgrade()

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
    # The narrower rule binds new writes first; the ACCESS EXCLUSIVE lock this takes is held
    # until commit, so no Rh-null row can slip in between the count and the validation.
    op.execute("ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_blood_type_check")
    op.execute(
        "ALTER TABLE patients ADD CONSTRAINT patients_blood_type_check"
        f" CHECK ({check(BASE_TYPES)}) NOT VALID"
    )
    mapping = x_argument("rh_null")
    if mapping is None:
        refuse_if(
            "SELECT count(*) FROM patients WHERE blood_type = 'Rh-null'",
            "patients have blood type Rh-null, which version 2 does not allow",
            ids_sql="SELECT id FROM patients WHERE blood_type = 'Rh-null' ORDER BY id LIMIT 6",
            hint="review them, or map them to NULL with '-x rh_null=NULL'",
        )
    elif mapping.strip().upper() == "NULL":
        op.execute(PRESERVE_UPDATED_AT)
        op.execute("UPDATE patients SET blood_type = NULL WHERE blood_type = 'Rh-null'")
    else:
        raise UsageError(
            f"patient: version 3: -x rh_null={mapping!r} is not a mapping version 2 can hold: use -x rh_null=NULL",
            service="patient",
            version=3,
        )
    validate_constraint("patients", "patients_blood_type_check")
