"""Developer workflow: new revisions, and comparing models, migrations and live databases.

``check`` and ``diff`` look two ways: the models against the database (Alembic's
autogenerate), and, for a live database, the database against what the migrations make
at its version (a catalog snapshot, which also sees CHECKs, triggers and functions that
autogenerate ignores). Throwaway databases live on ``MIGRATE_SCRATCH_SERVER`` or the
embedded server, and are always dropped.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from alembic_common.authoring import schema
from alembic_common.core import db, embedded, paths, runner
from alembic_common.core.env import include_name
from alembic_common.core.plan import assess_for
from alembic_common.core.services import Service, revision_id
from alembic_common.core.settings import Settings, normalize_url
from alembic_common.core.state import read
from alembic_common.errors import MigrationError, StateError, UsageError
from alembic_common.online import releases


def major(settings: Settings) -> int:
    """The PostgreSQL major version of the server behind ``settings`` (15, 18, ...)."""
    with db.connect(settings) as conn:
        return int(conn.info.server_version) // 10000


def _may_create_databases(settings: Settings) -> bool:
    with db.connect(settings) as conn:
        row = conn.execute(
            "SELECT rolcreatedb OR rolsuper FROM pg_catalog.pg_roles"
            " WHERE rolname = pg_catalog.current_user()"
        ).fetchone()
    return bool(row and row[0])


def scratch_server(service: Service, like: Settings | None) -> Settings:
    """A server to build a throwaway reference database on, of the same major as ``like``.

    Catalogs differ between major versions, so a reference built on another major would
    report drift that is not there. In order: ``MIGRATE_SCRATCH_SERVER`` (which must match),
    the target's own server when its role may create databases, the embedded server when
    its major matches; otherwise a clear error.
    """
    raw = os.environ.get("MIGRATE_SCRATCH_SERVER")
    wanted = major(like) if like is not None else None
    if raw:
        server = Settings(service.name, normalize_url(raw), "MIGRATE_SCRATCH_SERVER")
        found = major(server)
        if wanted is not None and found != wanted:
            raise MigrationError(
                f"{service.name}: MIGRATE_SCRATCH_SERVER is PostgreSQL {found} but "
                f"{like.label if like else 'the target'} is PostgreSQL {wanted}; "
                "point it at a server of the same major version",
                service=service.name,
            )
        return server
    if like is not None and _may_create_databases(like):
        return like
    pgdata = paths.data_dir(service.root)
    found = embedded.major(pgdata)  # read before it is started: it may not be of use
    if wanted is not None and found != wanted:
        raise MigrationError(
            f"{service.name}: comparing {like.label if like else 'the target'} (PostgreSQL "
            f"{wanted}) needs a scratch database on a PostgreSQL {wanted} server; its role "
            f"cannot create databases and the embedded server is PostgreSQL {found}. Set "
            f"MIGRATE_SCRATCH_SERVER to a PostgreSQL {wanted} server where it can",
            service=service.name,
        )
    return Settings(service.name, embedded.server_url(pgdata), "embedded")


@contextlib.contextmanager
def scratch_database(service: Service, like: Settings | None = None) -> Iterator[Settings]:
    """A throwaway empty database for ``service`` (the same major as ``like``), always dropped."""
    admin = scratch_server(service, like)
    name = f"scratch_{service.name}_{uuid.uuid4().hex[:10]}"
    with db.connect(admin) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.for_database(name)
    finally:
        with db.connect(admin) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def at_version(service: Service, settings: Settings, version: int | None) -> None:
    """Bring an empty scratch database to ``version`` (None: leave it empty).

    Plain Alembic, on purpose: a throwaway copy needs no lock, no held contract steps and
    no other service's database.
    """
    if version is None:
        return
    from alembic import command

    engine = db.engine(settings)
    try:
        with engine.connect() as connection:
            command.upgrade(
                service.config(connection=connection, compare_models=False), revision_id(version)
            )
    finally:
        engine.dispose()


# --- models against a database ----------------------------------------------------------


@contextlib.contextmanager
def _autogenerate_context(service: Service, settings: Settings) -> Iterator[Any]:
    """An Alembic MigrationContext on the database, configured as the shared env.py does."""
    from alembic.runtime.migration import MigrationContext

    engine = db.engine(settings)
    try:
        with engine.connect() as connection:
            yield MigrationContext.configure(
                connection,
                opts={
                    "target_metadata": service.metadata(),
                    "include_name": include_name,
                    "compare_type": True,
                },
            )
    finally:
        engine.dispose()


def model_diffs(service: Service, settings: Settings) -> list[str]:
    """How the database differs from the models, one readable line per difference."""
    from alembic.autogenerate import compare_metadata

    with _autogenerate_context(service, settings) as context:
        diffs = compare_metadata(context, service.metadata())
    return [describe_diff(d) for d in _flatten(diffs)]


def model_ops_code(service: Service, settings: Settings) -> str:
    """Alembic operations that would bring the database to match the models ('' if none)."""
    from alembic.autogenerate import produce_migrations, render_python_code

    with _autogenerate_context(service, settings) as context:
        ops = produce_migrations(context, service.metadata())
    if ops.upgrade_ops is None or ops.upgrade_ops.is_empty():
        return ""
    code = render_python_code(ops.upgrade_ops)
    return "\n".join(line.strip() for line in code.splitlines() if line.strip())


def _flatten(diffs: list[Any]) -> list[tuple[Any, ...]]:
    flat: list[tuple[Any, ...]] = []
    for d in diffs:
        flat.extend(d if isinstance(d, list) else [d])
    return flat


def describe_diff(diff: tuple[Any, ...]) -> str:
    """One autogenerate difference in words."""
    kind = diff[0]
    in_models, in_db = (
        "in the models, missing from the database",
        "in the database, not in the models",
    )
    if kind in ("add_table", "remove_table"):
        return f"table {diff[1].name}: {in_models if kind == 'add_table' else in_db}"
    if kind in ("add_column", "remove_column"):
        column = diff[3]
        where = in_models if kind == "add_column" else in_db
        return f"column {diff[2]}.{column.name} ({column.type}): {where}"
    if kind in ("add_index", "remove_index"):
        index = diff[1]
        columns = ", ".join(c.name for c in index.columns) or "expressions"
        where = in_models if kind == "add_index" else in_db
        return f"index {index.name} on {index.table.name}({columns}): {where}"
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = diff[1]
        where = in_models if kind.startswith("add") else in_db
        return f"constraint {constraint.name} on {constraint.table.name}: {where}"
    if kind.startswith("modify_"):
        _, _, table, column, _, old, new = diff
        what = kind.removeprefix("modify_")
        return f"column {table}.{column}: {what} is {old} in the database, {new} in the models"
    return f"{kind}: {diff[1:]}"


# --- check and diff ---------------------------------------------------------------------


@dataclass
class Comparison:
    """What ``check``/``diff`` found."""

    service: str
    database: str
    version: int | None
    head: int | None
    model_differences: list[str] = field(default_factory=list)
    schema_drift: list[schema.Drift] = field(default_factory=list)
    operations: str = ""
    at_risk: dict[tuple[str, str, str], str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.version == self.head and not self.model_differences and not self.schema_drift

    @property
    def repair(self) -> schema.Script:
        """The SQL that mends the schema drift without losing data, and what it leaves out."""
        return schema.script(self.schema_drift, self.at_risk)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        repair = self.repair
        data.pop("at_risk")
        data["schema_drift"] = [d.describe() for d in self.schema_drift]
        data["drift_sql"] = repair.statements
        data["repair_script"] = repair.text()
        data["destructive"] = [{"sql": sql, "destroys": what} for sql, what in repair.destroys]
        data["not_repaired"] = repair.notes
        data["ok"] = self.ok
        return data


def compare(service: Service, settings: Settings | None, *, operations: bool = False) -> Comparison:
    """Compare the models with a database at head (a scratch one when ``settings`` is None).

    With a live database, also compare its catalog with what the migrations make at its
    version, to catch hand-made drift that autogenerate cannot see.
    """
    head = service.head
    if settings is None:
        with scratch_database(service) as scratch:
            at_version(service, scratch, head)
            return _compare_models(service, scratch, head, head, operations)
    with db.connect(settings) as conn:
        found = assess_for(service, read(conn, service.schema))
        actual = schema.snapshot(conn, service.schema)
    if found.unknown or found.problem or found.legacy:
        runner.refuse_unusable(service, found)
        raise StateError(f"{service.name}: run 'up' once to adopt the legacy history first")
    result = _compare_models(service, settings, found.current, head, operations)
    with scratch_database(service, like=settings) as scratch:
        at_version(service, scratch, found.current)
        with db.connect(scratch) as conn:
            expected = schema.snapshot(conn, service.schema)
    result.schema_drift = schema.compare(expected, actual)
    with db.connect(settings) as conn:
        result.at_risk = schema.at_risk(conn, service.schema, result.schema_drift)
    return result


def _compare_models(
    service: Service, settings: Settings, version: int | None, head: int | None, operations: bool
) -> Comparison:
    result = Comparison(service.name, settings.display, version, head)
    result.model_differences = model_diffs(service, settings)
    if operations:
        result.operations = model_ops_code(service, settings)
    return result


# --- revision ---------------------------------------------------------------------------


def revision(
    service: Service, message: str, *, autogenerate: bool, settings: Settings | None = None
) -> Path:
    """Write the next numbered migration; with ``autogenerate``, fill it from the models.

    Refuses when the history has more than one head (two branches numbered alike).
    """
    if not message.strip():
        raise UsageError(f"{service.name}: revision needs a message (-m 'what it does')")
    if any(_unwritable(ch) for ch in message):
        raise UsageError(
            f"{service.name}: the revision message holds a control character; write it as "
            "plain text (-m 'what it does')"
        )
    migrations = service.migrations  # raises on multiple heads
    version = (migrations[-1].version if migrations else 0) + 1
    if not autogenerate:
        return _write_revision(service, message, version, None)
    if settings is None:
        with scratch_database(service) as scratch:
            at_version(service, scratch, service.head)
            return _write_revision(service, message, version, scratch)
    with db.connect(settings) as conn:
        found = assess_for(service, read(conn, service.schema))
    if found.current != service.head or not found.consistent:
        raise StateError(
            f"{service.name}: autogenerate needs a database at head ({service.head}); "
            f"{settings.display} is at {found.current}: run 'up' first or omit --url",
            service=service.name,
        )
    return _write_revision(service, message, version, settings)


def _write_revision(
    service: Service, message: str, version: int, settings: Settings | None
) -> Path:
    from alembic import command

    empty: list[bool] = []

    def skip_empty(context: Any, revision: Any, directives: list[Any]) -> None:
        if directives and directives[0].upgrade_ops.is_empty():
            empty.append(True)
            directives[:] = []
        elif directives:
            guard_drops(directives[0])

    before = set(service.versions_dir.iterdir())
    with contextlib.ExitStack() as stack:
        stack.push(functools.partial(_unwritten, before, service.versions_dir))
        attributes: dict[str, Any] = {}
        if settings is not None:
            engine = db.engine(settings)
            stack.callback(engine.dispose)
            attributes = {
                "connection": stack.enter_context(engine.connect()),
                "process_revision_directives": skip_empty,
            }
        cfg = service.config(**attributes)
        cfg.set_main_option("file_template", "%%(rev)s_" + file_slug(message))
        _format_when_written(cfg)
        with contextlib.redirect_stdout(io.StringIO()):
            script = command.revision(
                cfg,
                message=docstring_text(message),
                autogenerate=settings is not None,
                rev_id=revision_id(version),
            )
    if empty or script is None:
        raise StateError(
            f"{service.name}: the models match the migrations; nothing to generate "
            "(omit --autogenerate for an empty migration)",
            service=service.name,
        )
    return Path(script.path)  # type: ignore[union-attr]


def _unwritten(before: set[Path], folder: Path, kind: type | None, *_: Any) -> bool:
    """A revision that failed (its file would not load) leaves no file behind: every later
    command would trip over it."""
    if kind is not None:
        for made in set(folder.iterdir()) - before:
            if made.is_file():
                made.unlink(missing_ok=True)
    return False


# Bidirectional overrides and isolates: they make a line read otherwise than it runs.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unwritable(ch: str) -> bool:
    """A character a message may not hold: a control character (but a line break or a
    tab), a line or paragraph separator, undecodable bytes, a bidirectional override."""
    kind = unicodedata.category(ch)
    return (kind == "Cc" and ch not in "\n\t") or kind in ("Cs", "Zl", "Zp") or ch in _BIDI


def file_slug(message: str, longest: int = 40) -> str:
    """The new file's name after its number: the message's words in ASCII (accents folded,
    other scripts left out), as every history's file names are; ``step`` when none is left."""
    folded = (
        unicodedata.normalize("NFKD", w).encode("ascii", "ignore").decode().lower()
        for w in re.findall(r"[^\W_]+", message)
    )
    slug = "_".join(w for w in (re.sub(r"[^a-z0-9]", "", f) for f in folded) if w)
    if len(slug) > longest:
        slug = slug[: longest + 1].rsplit("_", 1)[0] if "_" in slug[:longest] else slug[:longest]
    return slug or "step"


def docstring_text(message: str) -> str:
    """The message as it goes between the new file's triple quotes: its backslashes and
    quotes escaped, so it reads back (the step's description) as typed and can close
    nothing."""
    return message.replace("\\", "\\\\").replace('"', '\\"')


def _format_when_written(cfg: Any) -> None:
    """Alembic's post-write hooks: ruff formats the new file and fixes what it can, so it
    passes the project's ``ruff format --check`` and ``ruff check`` (when ruff is installed,
    as it is with the test extras; an install without it writes the file as rendered)."""
    import importlib.util

    if importlib.util.find_spec("ruff") is None:
        return
    hooks = {
        "ruff_check": "check --fix --silent REVISION_SCRIPT_FILENAME",
        "ruff_format": "format --quiet REVISION_SCRIPT_FILENAME",
    }
    cfg.set_section_option("post_write_hooks", "hooks", ", ".join(hooks))
    for name, options in hooks.items():
        cfg.set_section_option("post_write_hooks", f"{name}.type", "module")
        cfg.set_section_option("post_write_hooks", f"{name}.module", "ruff")
        cfg.set_section_option("post_write_hooks", f"{name}.options", options)


@functools.cache
def _refuse_to_drop_op() -> type:
    """The autogenerate operation that renders as ``refuse_to_drop(table[, column])``."""
    from alembic.autogenerate import renderers
    from alembic.operations.ops import MigrateOperation

    class RefuseToDrop(MigrateOperation):
        def __init__(self, table: str, column: str | None) -> None:
            self.table, self.column = table, column

    @renderers.dispatch_for(RefuseToDrop)
    def render(autogen_context: Any, op: RefuseToDrop) -> str:
        autogen_context.imports.add("from alembic_common.online.safe import refuse_to_drop")
        args = ", ".join(repr(a) for a in (op.table, op.column) if a is not None)
        return f"refuse_to_drop({args})"

    return RefuseToDrop


def guard_drops(script: Any) -> None:
    """Begin each autogenerated downgrade with a ``refuse_to_drop`` for every column or
    table it drops: a downgrade that would lose data refuses, changing nothing, until the
    operator accepts the loss with ``-x NAME=drop``."""
    from alembic.operations import ops

    guard = _refuse_to_drop_op()

    def drops(container: Any) -> list[Any]:
        found = []
        for item in container.ops:
            if isinstance(item, ops.ModifyTableOps):
                found += drops(item)
            elif isinstance(item, ops.DropColumnOp):
                found.append(guard(item.table_name, item.column_name))
            elif isinstance(item, ops.DropTableOp):
                found.append(guard(item.table_name, None))
        return found

    for downgrade in script.downgrade_ops_list:
        downgrade.ops[:0] = drops(downgrade)


def table_estimates(settings: Settings, tables: set[str]) -> dict[str, int | None]:
    """Estimated rows per table: planner statistics, else the live-tuple counter."""
    if not tables:
        return {}
    with db.connect(settings) as conn:
        rows = conn.execute(
            "SELECT c.relname, CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint"
            " ELSE coalesce(s.n_live_tup, 0) END"
            " FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)",
            [sorted(tables)],
        ).fetchall()
    return dict.fromkeys(tables) | dict(rows)


def current_version(service: Service, settings: Settings) -> tuple[int | None, releases.Seen]:
    """The database's version (refusing a database ahead of the code or inconsistent), and
    the sessions that judge a pending contract step."""
    with db.connect(settings) as conn:
        found = assess_for(service, read(conn, service.schema))
        runner.refuse_unusable(service, found)
        sessions = releases.sessions(conn, service.name)
    return found.current, sessions
