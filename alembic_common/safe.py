"""Safe DDL sequences for migrations on busy tables (call them from ``upgrade()``).

Each keeps the strong lock short and moves the long scan into its own transaction, so
reads and writes go on. Every step is idempotent: a run killed between two steps simply
repeats them on the next ``up``. Under ``--atomic`` (one transaction for the batch) the
separate transaction is impossible, so the steps run inline instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def own_transaction() -> Iterator[None]:
    """Commit what the migration did so far, then run the block in a transaction of its own.

    Under ``--atomic`` the block runs inline, inside the batch's single transaction.
    """
    from alembic import op

    ctx = op.get_context()
    if not ctx.opts.get("transaction_per_migration", False):
        yield
        return
    with ctx.autocommit_block():
        op.execute("BEGIN")
        try:
            yield
        except BaseException:
            op.execute("ROLLBACK")
            raise
        op.execute("COMMIT")


def validate_constraint(table: str, name: str) -> None:
    """VALIDATE CONSTRAINT in its own transaction (SHARE UPDATE EXCLUSIVE: traffic goes on)."""
    from alembic import op

    with own_transaction():
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def add_check_constraint(table: str, name: str, condition: str, *, replace: bool = False) -> None:
    """Add a CHECK as NOT VALID (a brief lock), then validate it in its own transaction.

    ``replace`` drops an existing constraint of that name first, in the same short step.
    """
    from alembic import op

    if replace:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
    validate_constraint(table, name)
