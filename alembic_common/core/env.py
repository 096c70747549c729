"""The one Alembic ``env.py`` body that every service's ``migrations/env.py`` calls.

It works the same from ``migrate.py``, from ``run_migrations()`` and from plain
``alembic -c services/<name>/alembic.ini upgrade head``: each step runs in its own
transaction and ``on_version_apply`` writes its ``schema_migrations`` row inside it.
Every online run first checks the database the way ``migrate`` does (owner, shape,
legacy, ahead), so plain Alembic cannot migrate another service's database either.

``config.attributes`` may carry (all optional):
  connection       a SQLAlchemy Connection or Engine to use (pytest-alembic passes an Engine)
  guard            history.Guard: the run lock each step must still hold when it records itself
  atomic           run the whole batch in one transaction
  lock_timeout_ms, statement_timeout_ms   session timeouts for the migration connection
  on_step          callback receiving each step's event as it commits (events.Applied,
                   events.RolledBack)
  on_progress      callback for progress inside a step (events.Backfill)
  compare_models   False when nothing will autogenerate (up/down): skip loading models.py
  state            state.DbState read under the run lock just before (skips reading it again)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

from psycopg import sql

from alembic_common.authoring import checksums
from alembic_common.core import history, state
from alembic_common.core.history import OWN_TABLES
from alembic_common.core.services import Service, service_for_env
from alembic_common.errors import MigrationError, StateError
from alembic_common.online import partial, releases

DEFAULT_LOCK_TIMEOUT_MS = 5000
HELPER_TABLE_PREFIX = "_migrate_"
# Limits that would end a migration session between two statements of a long step.
IDLE_LIMITS = ("idle_session_timeout", "idle_in_transaction_session_timeout")


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Keep the toolkit's own tables out of autogenerate and ``check``."""
    if type_ == "table" and name is not None:
        return name not in OWN_TABLES and not name.startswith(HELPER_TABLE_PREFIX)
    return True


def configure_options(service: Service, attributes: dict[str, Any]) -> dict[str, Any]:
    """The ``context.configure`` options shared by online and offline runs."""
    # The version schemas for a revision, for a step that commits part-way (safe.py); a
    # service without contract steps has none.
    clear = attributes["views_clear"] = releases.clear_sql(service)
    attributes["views_now"] = (
        None
        if clear is None
        else lambda revision: releases.sync_sql(
            service, int(revision) if revision else None, OWN_TABLES
        )
    )
    # Only autogenerate reads the models; runs that just migrate skip importing the ORM.
    compare = attributes.get("compare_models", True)
    return {
        "target_metadata": service.metadata() if compare else None,
        "transaction_per_migration": not attributes.get("atomic", False),
        "on_version_apply": history.Recorder(
            service.schema,
            guard=attributes.get("guard"),
            descriptions=service.descriptions,
            checksums=attributes.get("checksums"),
            on_step=attributes.get("on_step"),
            views=lambda current: releases.sync_sql(service, current, OWN_TABLES),
            finish=lambda: _finish_partial(service, attributes),
        ),
        "include_name": include_name,
        "compare_type": True,
        "version_table_schema": service.schema,
        "process_revision_directives": attributes.get("process_revision_directives"),
    }


def _finish_partial(service: Service, attributes: dict[str, Any]) -> str | None:
    """What a step's final transaction adds once a part of a step has committed: the step
    is part-way no more (partial.py). None when nothing was part-way."""
    if not attributes.get("in_progress_table"):
        return None
    return partial.finish_sql(service.schema)


def session_settings(service: Service, attributes: dict[str, Any]) -> list[str]:
    """The settings every migration session runs under (shown in plans too)."""
    lock_ms = int(attributes.get("lock_timeout_ms", DEFAULT_LOCK_TIMEOUT_MS))
    statement_ms = int(attributes.get("statement_timeout_ms", 0))
    schema = '"' + service.schema.replace('"', '""') + '"'
    return [
        f"SET lock_timeout = {lock_ms}",
        f"SET statement_timeout = {statement_ms}",
        f"SET search_path TO {schema}",
    ]


def prepare_session(conn: Any, service: Service, attributes: dict[str, Any]) -> None:
    """Set the session up, check the database is this service's to migrate, then commit.

    Committing matters: Alembic treats an already-open transaction as external and
    would silently stop running one transaction per migration. Everything here runs on
    the driver connection, so SQLAlchemy has not begun anything of its own.
    """
    raw = conn.connection.driver_connection
    if service.schema != "public":
        raw.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(service.schema))
        )
    for statement in session_settings(service, attributes):
        raw.execute(statement)
    raw.execute(
        "SELECT pg_catalog.set_config(s.name, '0', false) FROM pg_catalog.pg_settings s"
        " WHERE s.name = ANY(%s)",
        [list(IDLE_LIMITS)],
    )
    raw.commit()  # session settings first: reading the state ends its transaction
    # migrate's runner hands over the state it has just read and checked under the lock.
    found_state = attributes.get("state") or state.read(raw, service.schema)
    found = state.assess(
        [m.version for m in service.migrations], found_state, service.name, service.descriptions
    )
    state.refuse(service.name, found)
    attributes["part_way"] = found_state.in_progress
    attributes["in_progress_table"] = found_state.in_progress is not None
    if found.legacy:
        raise StateError(
            f"{service.name}: this database was made by the previous migration system; "
            f"adopt it with 'migrate {service.name} up' first",
            service=service.name,
        )
    shape = found_state.shape
    history.ensure(
        raw,
        service.name,
        service.schema,
        exists=found_state.history_table,
        columns={c.name for c in shape.columns} if shape else set(),
        owner=found.owner,
    )
    raw.commit()


class _Step:
    """A migration step whose body runs between ``before`` and ``after``."""

    def __init__(self, step: Any, before: Callable[[], None], after: Callable[[], None]):
        self._step, self._before, self._after = step, before, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._step, name)

    def __str__(self) -> str:  # Alembic logs "Running upgrade 0001 -> 0002, ..." with it
        return str(self._step)

    @property
    def migration_fn(self) -> Callable[..., None]:
        def run(**kw: Any) -> None:
            self._before()
            self._step.migration_fn(**kw)
            self._after()

        return run


def wrap_steps(service: Service, recorder: history.Recorder) -> None:
    """Every step starts by dropping the version schemas' views, in its own transaction, so
    it may change any column they show (the recorder makes them again at its end). Once its
    body has run, its history write is readied, to ride on Alembic's version-table write:
    the recorder sends that statement, with the write, when Alembic does."""
    from alembic import context

    from alembic_common.online.ddl import literal_sql

    clear = releases.clear_sql(service)
    migration = context.get_context()
    # Alembic has no public hook around a step's body, nor on its version-table write.
    steps, send = migration._migrations_fn, migration.impl._exec
    if steps is None:
        return

    def execute(construct: Any, *args: Any, **kwargs: Any) -> Any:
        rows = None if args or kwargs else recorder.version_write(construct)
        return rows if rows is not None else send(construct, *args, **kwargs)

    migration.impl._exec = execute  # type: ignore[method-assign]

    attributes = context.config.attributes
    contracts = set(service.contract_versions([m.version for m in service.migrations]))

    def wrapped(heads: Any, ctx: Any) -> Iterator[Any]:
        for step in steps(heads, ctx):

            def before(step: Any = step) -> None:
                info = step.info
                version, up = int(info.up_revision_ids[0]), info.is_upgrade
                _refuse_other_step(service, attributes.get("part_way"), version, up)
                attributes["part_way"] = None  # this is the step: it finishes, or the run ends
                attributes["step_now"] = (version, "up" if up else "down", True)
                if clear is None:
                    return
                # A step that commits part-way (a backfill) shows the views of the version it
                # leaves the database at: the new release may start during a long backfill. A
                # contract step renames in its final transaction, so until then its parts show
                # the views of the version it starts from.
                starts = int(info.down_revision_ids[0]) if info.down_revision_ids else None
                attributes["views_leaving_at"] = (
                    (starts if up else version) if version in contracts else history.left_at(info)
                )
                ctx.execute(literal_sql(clear))

            def after(step: Any = step) -> None:
                recorder.ready(step.info, ctx)

            yield _Step(step, before, after)

    migration._migrations_fn = wrapped


def _refuse_other_step(
    service: Service, part_way: partial.InProgress | None, version: int, up: bool
) -> None:
    """While a step is part-way, the only step that may run is that one, the same way
    (migrate turns it first for a run going the other way; plain alembic cannot)."""
    if part_way is None or (part_way.version, part_way.direction == "up") == (version, up):
        return
    raise StateError(
        f"{service.name}: {part_way.describe()}; no other step may run until it is finished "
        f"or undone (with 'migrate {service.name} up' or 'migrate {service.name} down')",
        service=service.name,
        version=part_way.version,
    )


def run(env_file: str) -> None:
    """Run the migrations of the service whose ``env.py`` is ``env_file``.

    Under plain ``alembic`` a refusal (another service's database, a lost lock...) is
    Alembic's own one-line ``FAILED: ...``, not a traceback; ``migrate`` reports it itself.
    """
    from alembic import context

    attributes = context.config.attributes
    try:
        _run(env_file, attributes)
    except MigrationError as exc:
        if isinstance(attributes.get("service_object"), Service):
            raise
        from alembic.util import CommandError

        raise CommandError(str(exc)) from exc


def _run(env_file: str, attributes: dict[str, Any]) -> None:
    from alembic import context

    given = attributes.get("service_object")
    found = service_for_env(env_file)
    # The Service that started this run has its history parsed already: use it.
    service = given if isinstance(given, Service) and given.path == found.path else found
    if context.is_offline_mode():
        options = configure_options(service, attributes)
        context.configure(
            dialect_name="postgresql",
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **options,
        )
        for statement in session_settings(service, attributes):
            context.execute(statement)  # what prepare_session does online, shown in the plan
        context.execute(history.create_sql(service.schema))
        wrap_steps(service, options["on_version_apply"])
        with context.begin_transaction():
            context.run_migrations()
        return
    with ExitStack() as stack:
        conn = _connection(service, attributes, context.get_x_argument(as_dictionary=True), stack)
        prepare_session(conn, service, attributes)
        # What each step runs, recorded with it (migrate passes them; plain alembic reads them).
        attributes.setdefault("checksums", checksums.listed(service))
        options = configure_options(service, attributes)
        context.configure(connection=conn, **options)
        recorder = options["on_version_apply"]
        wrap_steps(service, recorder)
        with context.begin_transaction():
            context.run_migrations()
            _after_purge(context.get_context(), recorder)
        conn.commit()


def _after_purge(migration: Any, recorder: history.Recorder) -> None:
    """``stamp --purge`` empties ``alembic_version`` behind the recorder's back (and a
    purge to base runs no step at all): the history then follows what that table holds."""
    if not migration.purge:
        return
    heads = migration.get_current_heads()
    if len(heads) <= 1:
        at = int(heads[0]) if heads else None
        recorder.settle(migration, at, at or 0)


def _connection(
    service: Service, attributes: dict[str, Any], x_args: dict[str, str], stack: ExitStack
) -> Any:
    """The connection to migrate on: the one handed in, or our own under the service lock."""
    from sqlalchemy import Connection, Engine

    given = attributes.get("connection")
    if isinstance(given, Connection):
        return given
    if isinstance(given, Engine):
        return stack.enter_context(given.connect())
    # Plain `alembic` from the command line: resolve settings and take the lock ourselves.
    from alembic_common.core import db, locking, settings

    logging.basicConfig(format="%(levelname)-5.5s [%(name)s] %(message)s")
    logging.getLogger("alembic").setLevel(logging.INFO)

    resolved = settings.resolve(service.name, url=x_args.get("url"))
    lock_conn = stack.enter_context(db.connect(resolved))
    pid = stack.enter_context(locking.advisory_lock(lock_conn, service.name))
    attributes["guard"] = history.Guard(service.name, pid)
    engine = db.engine(db.pinned(resolved, lock_conn))  # the lock's own server
    stack.callback(engine.dispose)
    return stack.enter_context(engine.connect())
