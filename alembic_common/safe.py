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
def committed_so_far() -> Iterator[None]:
    """Alembic's ``autocommit_block``: commit the step so far, run the block outside any
    transaction, then go on in a new one. The version schemas' views, dropped when the step
    began (releases.py), are made again first, so other sessions never see them missing."""
    from alembic import context, op

    from alembic_common.ddl import literal_sql

    ctx = op.get_context()
    restore = context.config.attributes.get("views_now")
    statement = restore(ctx.get_current_revision()) if restore is not None else None
    if statement is not None:
        op.execute(literal_sql(statement))
    with ctx.autocommit_block():
        yield


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
    with committed_so_far():
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


@contextmanager
def outside_transaction() -> Iterator[None]:
    """Run the block in autocommit mode (CONCURRENTLY cannot run inside a transaction)."""
    from alembic import op

    ctx = op.get_context()
    if not ctx.opts.get("transaction_per_migration", False):
        raise RuntimeError("CONCURRENTLY needs its own transaction: do not run this under --atomic")
    with committed_so_far():
        yield


def create_index_concurrently(
    name: str, table: str, columns: str, *, unique: bool = False, where: str | None = None
) -> None:
    """CREATE INDEX CONCURRENTLY, first dropping an INVALID index a failed attempt left behind.

    ``columns`` is the SQL between the parentheses, e.g. ``"healthcare_entity_id, email"``.
    """
    from alembic import op

    with outside_transaction():
        # A failed CONCURRENTLY build leaves an INVALID index that IF NOT EXISTS would keep.
        op.execute(
            f"""
            DO $$
            BEGIN
                IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE c.relname = '{name}' AND NOT i.indisvalid) THEN
                    RAISE NOTICE 'dropping invalid index {name} left by an earlier attempt';
                    EXECUTE 'DROP INDEX IF EXISTS {name}';
                END IF;
            END
            $$"""
        )
        kind = "UNIQUE INDEX" if unique else "INDEX"
        predicate = f" WHERE {where}" if where else ""
        op.execute(
            f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {name} ON {table} ({columns}){predicate}"
        )


def drop_index_concurrently(name: str) -> None:
    """DROP INDEX CONCURRENTLY: readers and writers of the table go on."""
    from alembic import op

    with outside_transaction():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def set_not_null(table: str, column: str) -> None:
    """NOT NULL without a long scan under ACCESS EXCLUSIVE: via a validated CHECK.

    PostgreSQL (12+) skips the table scan of SET NOT NULL when a valid CHECK proves it.
    The CHECK (``<table>_<column>_not_null``) stays: it states the same rule, costs next to
    nothing, and dropping it is what squawk's ban-drop-constraint is there to question.
    """
    from alembic import op

    check = f"{table}_{column}_not_null"
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID")
    validate_constraint(table, check)
    op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL")
