"""What a migration may import: the toolkit's stable API for migration authors.

``upgrade()`` and ``downgrade()`` call these; everything else in ``alembic_common`` is
internal and may move. Names here keep their meaning across releases; the older paths
(``alembic_common.ddl``, ``.safe``, ``.backfill``, ``.identity``, ``.tenancy``) still import.

- Safe DDL on busy tables: :func:`create_index_concurrently`, :func:`add_check_constraint`
  then :func:`validate_constraint`, :func:`set_not_null`, :func:`refuse_if`,
  :func:`refuse_to_drop`.
- Data: :func:`backfill` (batched, resumable), :func:`run_sql_file`, :func:`literal_sql`,
  the ``updated_at`` trigger helpers.
- Tenancy: :func:`create_roles`, :func:`isolate`, :func:`grant`, :func:`release`,
  :func:`drop_roles`, :func:`service_of`; clinical identity: :func:`unique_by_identity`.
- ``-x NAME=VALUE`` arguments: :func:`x_argument`; a refusal the user can fix:
  :class:`UsageError`.
"""

from alembic_common.errors import RefusedError, UsageError
from alembic_common.online.backfill import backfill
from alembic_common.online.ddl import (
    NOT_BACKFILL,
    PRESERVE_UPDATED_AT,
    SET_BACKFILL,
    create_updated_at_trigger,
    drop_updated_at_trigger,
    literal_sql,
    run_sql_file,
    sql_statements,
)
from alembic_common.online.safe import (
    add_check_constraint,
    committed_so_far,
    create_index_concurrently,
    drop_index_concurrently,
    has_column,
    outside_transaction,
    own_transaction,
    refuse_if,
    refuse_to_drop,
    set_not_null,
    validate_constraint,
    x_argument,
)
from alembic_common.tenancy.identity import unique_by_identity, unique_by_lower
from alembic_common.tenancy.rls import (
    SETTING,
    TENANT_COLUMN,
    app_role,
    create_roles,
    drop_roles,
    grant,
    isolate,
    release,
    service_of,
    set_entity,
)

__all__ = [
    "NOT_BACKFILL",
    "PRESERVE_UPDATED_AT",
    "SETTING",
    "SET_BACKFILL",
    "TENANT_COLUMN",
    "RefusedError",
    "UsageError",
    "add_check_constraint",
    "app_role",
    "backfill",
    "committed_so_far",
    "create_index_concurrently",
    "create_roles",
    "create_updated_at_trigger",
    "drop_index_concurrently",
    "drop_roles",
    "drop_updated_at_trigger",
    "grant",
    "has_column",
    "isolate",
    "literal_sql",
    "outside_transaction",
    "own_transaction",
    "refuse_if",
    "refuse_to_drop",
    "release",
    "run_sql_file",
    "service_of",
    "set_entity",
    "set_not_null",
    "sql_statements",
    "unique_by_identity",
    "unique_by_lower",
    "validate_constraint",
    "x_argument",
]
