"""The one Alembic ``env.py`` body that every service's ``migrations/env.py`` calls.

It works the same from ``migrate.py``, from ``run_migrations()`` and from plain
``alembic -c services/<name>/alembic.ini upgrade head``: each step runs in its own
transaction and ``on_version_apply`` writes its ``schema_migrations`` row inside it.

``config.attributes`` may carry (all optional):
  connection       a SQLAlchemy Connection or Engine to use (pytest-alembic passes an Engine)
  atomic           run the whole batch in one transaction
  lock_timeout_ms, statement_timeout_ms   session timeouts for the migration connection
  on_step          callback receiving one event dict per applied/rolled-back step
  on_progress      callback for progress inside a step (the batched backfill)
  compare_models   False when nothing will autogenerate (up/down): skip loading models.py
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

from alembic_common.history import CREATE as CREATE_HISTORY
from alembic_common.history import OWN_TABLES, ensure_table, make_recorder
from alembic_common.services import Service, service_for_env

DEFAULT_LOCK_TIMEOUT_MS = 5000
HELPER_TABLE_PREFIX = "_migrate_"


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Keep the toolkit's own tables out of autogenerate and ``check``."""
    if type_ == "table" and name is not None:
        return name not in OWN_TABLES and not name.startswith(HELPER_TABLE_PREFIX)
    return True


def configure_options(service: Service, attributes: dict[str, Any]) -> dict[str, Any]:
    """The ``context.configure`` options shared by online and offline runs."""
    # Only autogenerate reads the models; runs that just migrate skip importing the ORM.
    compare = attributes.get("compare_models", True)
    return {
        "target_metadata": service.metadata() if compare else None,
        "transaction_per_migration": not attributes.get("atomic", False),
        "on_version_apply": make_recorder(attributes.get("on_step")),
        "include_name": include_name,
        "compare_type": True,
        "process_revision_directives": attributes.get("process_revision_directives"),
    }


def session_settings(attributes: dict[str, Any]) -> list[str]:
    """The timeouts every migration session runs under."""
    lock_ms = int(attributes.get("lock_timeout_ms", DEFAULT_LOCK_TIMEOUT_MS))
    statement_ms = int(attributes.get("statement_timeout_ms", 0))
    return [f"SET lock_timeout = {lock_ms}", f"SET statement_timeout = {statement_ms}"]


def prepare_session(conn: Any, attributes: dict[str, Any]) -> None:
    """Create the history table and set the session timeouts, then commit.

    Committing matters: Alembic treats an already-open transaction as external and
    would silently stop running one transaction per migration.
    """
    for statement in session_settings(attributes):
        conn.exec_driver_sql(statement)
    ensure_table(conn)
    conn.commit()


def run(env_file: str) -> None:
    """Run the migrations of the service whose ``env.py`` is ``env_file``."""
    from alembic import context

    service = service_for_env(env_file)
    attributes = context.config.attributes
    options = configure_options(service, attributes)
    if context.is_offline_mode():
        context.configure(
            dialect_name="postgresql",
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **options,
        )
        for statement in [*session_settings(attributes), CREATE_HISTORY]:
            context.execute(statement)  # what prepare_session does online, shown in the plan
        with context.begin_transaction():
            context.run_migrations()
        return
    with ExitStack() as stack:
        conn = _connection(service, attributes, context.get_x_argument(as_dictionary=True), stack)
        prepare_session(conn, attributes)
        context.configure(connection=conn, **options)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()


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
    from alembic_common import db, locking, settings

    logging.basicConfig(format="%(levelname)-5.5s [%(name)s] %(message)s")
    logging.getLogger("alembic").setLevel(logging.INFO)

    resolved = settings.resolve(service.name, url=x_args.get("url"))
    lock_conn = stack.enter_context(db.connect(resolved))
    stack.enter_context(locking.advisory_lock(lock_conn, service.name))
    engine = db.engine(resolved)
    stack.callback(engine.dispose)
    return stack.enter_context(engine.connect())
