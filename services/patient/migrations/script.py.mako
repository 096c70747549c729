"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision: str = "${up_revision}"
down_revision: str | None = ${'"%s"' % down_revision if down_revision else None}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}

# Declarations the toolkit reads from this file (literal values only; uncomment to use):
#
# phase = "contract"
#     This step drops or renames what the running release still uses: a plain 'up' holds
#     it back until 'up --contract' (see "Big tables without downtime" in docs/blue-green.md).
# requires = {"patient": 1}
#     Other services' databases must have reached these versions before this step runs.
# lint_accepted = {"ban-drop-column": "why this is safe here"}
#     squawk findings accepted for this step, each with its reason (printed by 'lint').
#
# After editing, run 'migrate SERVICE hash' so checksums.txt lists what this step runs.


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    # A drop of a column or table that holds data refuses first, changing nothing, until
    # '-x NAME=drop' accepts the loss: refuse_to_drop(table, column) from alembic_common.migration
    # (autogenerate writes one before each of its drops; 'lint' flags a drop without one).
    ${downgrades if downgrades else "pass"}
