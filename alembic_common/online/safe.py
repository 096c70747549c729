"""Safe DDL sequences for migrations on busy tables (call them from ``upgrade()``).

Each keeps the strong lock short and moves the long scan into its own transaction, so
reads and writes go on. Every step is idempotent: a run killed between two steps simply
repeats them on the next ``up``. Under ``--atomic`` (one transaction for the batch) the
separate transaction is impossible, so the steps run inline instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_UNSAID = object()


@contextmanager
def committed_so_far() -> Iterator[None]:
    """Alembic's ``autocommit_block``: commit the step so far, run the block outside any
    transaction, then go on in a new one. The version schemas' views, dropped when the step
    began (releases.py), are made again first, so other sessions never see them missing, and
    dropped again after it, in the step's new transaction."""
    from alembic import context, op

    from alembic_common.online import partial
    from alembic_common.online.ddl import literal_sql

    ctx = op.get_context()
    attributes = context.config.attributes
    restore = attributes.get("views_now")
    statement = None
    if restore is not None:  # the version table is read only if env.py did not say where
        at = attributes.get("views_leaving_at", _UNSAID)
        statement = restore(ctx.get_current_revision() if at is _UNSAID else at)
    if statement is not None:
        op.execute(literal_sql(statement))
    step = attributes.get("step_now")
    if step is not None and not ctx.as_sql:
        # What commits now is part of a step, not the step: say so with it (partial.py).
        version, direction, first = step
        op.execute(
            literal_sql(
                partial.mark_sql(ctx.version_table_schema or "public", version, direction, first)
            )
        )
        attributes["step_now"] = (version, direction, False)
        attributes["in_progress_table"] = True
    with ctx.autocommit_block():
        yield
    clear = attributes.get("views_clear")
    if statement is not None and clear is not None:
        op.execute(literal_sql(clear))  # the rest of the step may change any column again


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
    Otherwise a constraint of that name already there (a run stopped after adding it) is
    kept and validated: the step can be run again from where it stopped.
    """
    from alembic import op

    from alembic_common.online.ddl import literal_sql

    add = f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID"
    if replace:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
        op.execute(add)
    else:
        op.execute(literal_sql(_unless_constraint(table, name, add)))
    validate_constraint(table, name)


def _unless_constraint(table: str, name: str, statement: str) -> str:
    """``statement`` unless ``table`` has a constraint called ``name`` already."""
    return (
        "DO $migrate$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint"
        f" WHERE conrelid = {_literal(table)}::regclass AND conname = {_literal(name)}) THEN"
        f" {statement}; END IF; END $migrate$"
    )


def has_column(table: str, column: str, *, planned: bool) -> bool:
    """Whether ``table`` has ``column`` now, for a step that must run again from wherever a
    stopped run left it. A plan (offline) has no database to ask: ``planned`` is the answer
    for a database where the step has not started."""
    from alembic import op
    from sqlalchemy import text

    if op.get_context().as_sql:
        return planned
    found = op.get_bind().execute(
        text(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid ="
            " pg_catalog.to_regclass(:table) AND attname = :column AND NOT attisdropped)"
        ),
        {"table": table, "column": column},
    )
    return bool(found.scalar())


def _atomic() -> bool:
    """True under ``--atomic``: the whole run is one transaction, nothing commits on its own."""
    from alembic import op

    return not op.get_context().opts.get("transaction_per_migration", False)


@contextmanager
def outside_transaction() -> Iterator[None]:
    """Run the block in autocommit mode (CONCURRENTLY cannot run inside a transaction)."""

    if _atomic():
        raise RuntimeError("CONCURRENTLY needs its own transaction: do not run this under --atomic")
    with committed_so_far():
        yield


def create_index_concurrently(
    name: str, table: str, columns: str, *, unique: bool = False, where: str | None = None
) -> None:
    """CREATE INDEX CONCURRENTLY, first dropping an INVALID index a failed attempt left behind.

    ``columns`` is the SQL between the parentheses, e.g. ``"healthcare_entity_id, email"``.
    Under ``--atomic`` (all or nothing, the operator's choice) it is a plain CREATE INDEX
    inside the batch's transaction: it blocks writes to the table while it builds.
    """
    from alembic import op

    kind = "UNIQUE INDEX" if unique else "INDEX"
    predicate = f" WHERE {where}" if where else ""
    if _atomic():
        op.execute(f"CREATE {kind} IF NOT EXISTS {name} ON {table} ({columns}){predicate}")
        return
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
        op.execute(
            f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {name} ON {table} ({columns}){predicate}"
        )


def drop_index_concurrently(name: str) -> None:
    """DROP INDEX CONCURRENTLY: readers and writers of the table go on (plain under --atomic)."""
    from alembic import op

    if _atomic():
        op.execute(f"DROP INDEX IF EXISTS {name}")
        return
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
    add_check_constraint(table, check, f"{column} IS NOT NULL")
    op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL")


# --- refusals: a step that would lose data, or cannot map it, changes nothing -------------

IDS_SHOWN = 5


def _running_migration() -> tuple[str | None, int | None]:
    """The service and version of the migration step being run (for the refusal's message)."""
    import inspect

    from alembic import context

    service = context.config.attributes.get("service")
    frame = inspect.currentframe()
    while frame is not None:
        names = frame.f_globals
        if "revision" in names and "down_revision" in names:
            try:
                return service, int(names["revision"])
            except (TypeError, ValueError):
                break
        frame = frame.f_back
    return service, None


def refuse_if(
    count_sql: str,
    message: str,
    *,
    ids_sql: str | None = None,
    hint: str | None = None,
    shown_as: str = "ids",
) -> None:
    """Refuse the step, changing nothing, when ``count_sql`` counts more than zero rows.

    ``count_sql`` is a query returning one number; ``message`` names what it counts as a
    plural noun phrase ("patients whose country maps to none of ..."); ``ids_sql``, when
    given, lists ids of such rows (its first column, in its own order; a few are shown,
    after ``shown_as``);
    ``hint`` says what the operator can do. Online it raises ``RefusedError`` (exit 1) in
    one line, ``patient: version 6 refused: 3 patients whose ... (ids 4, 9, 12); ...``, and
    the step's transaction rolls back. Call it before anything the step commits on its own
    (``own_transaction``, ``create_index_concurrently``, ``backfill``). Offline (``--sql``)
    it emits a DO block that raises the same refusal when the script is run.
    """
    from alembic import op

    from alembic_common.errors import RefusedError

    ctx = op.get_context()
    service, version = _running_migration()
    where = f"{service}: version {version}" if service and version else "migration"
    tail = f"; {hint}" if hint else ""
    if ctx.as_sql:
        # RAISE's format: the one % placeholder is the count; any other % is doubled.
        body = f"{message}{tail}".replace("'", "''").replace("%", "%%")
        literal = f"'{where} refused: % {body}'"
        op.execute(
            f"""
            DO $$
            DECLARE
                found bigint := ({count_sql});
            BEGIN
                IF found > 0 THEN
                    RAISE EXCEPTION {literal}, found;
                END IF;
            END
            $$"""
        )
        return
    # The step's own psycopg connection, without parameters: a % in the SQL stays a %.
    raw: Any = op.get_bind().connection.dbapi_connection
    found = raw.execute(count_sql).fetchone()
    count = found[0] if found else 0
    if not count:
        return
    shown = ""
    if ids_sql is not None:
        cursor = raw.execute(ids_sql)
        rows = cursor.fetchmany(IDS_SHOWN + 1)
        cursor.close()
        ids = [str(r[0]) for r in rows[:IDS_SHOWN]]
        more = ", ..." if len(rows) > IDS_SHOWN or count > len(ids) else ""
        shown = f" ({shown_as} {', '.join(ids)}{more})" if ids else ""
    raise RefusedError(
        f"{where} refused: {count} {message}{shown}{tail}; version {version} changed nothing",
        service=service,
        version=version,
    )


def x_argument(name: str) -> str | None:
    """The value of ``-x NAME=VALUE`` given to this run (``migrate ... -x`` or plain alembic)."""
    from alembic import context

    return context.get_x_argument(as_dictionary=True).get(name)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def refuse_to_drop(table: str, column: str | None = None) -> None:
    """A downgrade's guard before it drops ``column`` of ``table`` (or, without a column,
    the whole table): while the column holds any value (the table any row), refuse,
    changing nothing of the step, unless the operator accepts the loss with
    ``-x COLUMN=drop`` (``-x TABLE=drop``). ``revision --autogenerate`` writes one before
    every drop in a downgrade; the key is read from this call, so it needs no
    ``x_arguments`` declaration (``services`` derives it), and ``lint`` flags a drop
    without a guard."""
    from alembic_common.errors import UsageError

    key = column or table
    service, version = _running_migration()
    accepted = x_argument(key)
    if accepted is not None:
        if accepted.strip().lower() != "drop":
            raise UsageError(
                f"{service}: version {version}: -x {key}={accepted!r}: the only choice is 'drop'",
                service=service,
                version=version,
            )
        return
    if column is None:
        what = f"rows in {table}, which the version before has no table for"
        count = f"SELECT count(*) FROM {_quoted(table)}"
    else:
        what = (
            f"rows of {table} hold a value of {column}, which the version before has no column for"
        )
        count = f"SELECT count(*) FROM {_quoted(table)} WHERE {_quoted(column)} IS NOT NULL"
    refuse_if(count, what, hint=f"drop them knowingly with '-x {key}=drop'")
