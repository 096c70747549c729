"""Which migrations are plain SQL, and their SQL each way (``core/sqlsteps.py`` runs it).

A migration is plain SQL when nothing in it runs Python against the database at run time,
judged from its source, conservatively: it imports only ``alembic.op``, SQLAlchemy, typing
helpers and the helpers of ``alembic_common.migration`` that only send statements; it
calls only ``op`` operations that only send statements; and it never asks for the
migration context, the connection, ``-x`` arguments or whether it runs offline. Anything
else (a backfill, ``refuse_if``, an index built concurrently, a file read) keeps the step
on Alembic's path. Its SQL is Alembic's offline SQL of the step without the run's own
bookkeeping, which ``sqlsteps.run_step`` sends itself; a step whose offline SQL does not
hold exactly the bookkeeping expected stays on Alembic's path too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from alembic_common.authoring import offline
from alembic_common.core import sqlsteps
from alembic_common.core.history import OWN_TABLES
from alembic_common.core.services import Service
from alembic_common.errors import MigrationError
from alembic_common.online import releases

# Helpers of alembic_common.migration that only send statements, online and offline alike.
PLAIN_HELPERS = frozenset(
    {
        "literal_sql",
        "sql_statements",
        "create_updated_at_trigger",
        "drop_updated_at_trigger",
        "create_roles",
        "drop_roles",
        "isolate",
        "grant",
        "release",
        "service_of",
        "app_role",
    }
)
# Operations of alembic.op that only send statements.
PLAIN_OPS = frozenset(
    {
        "execute",
        "create_table",
        "drop_table",
        "rename_table",
        "add_column",
        "drop_column",
        "alter_column",
        "create_index",
        "drop_index",
        "create_unique_constraint",
        "create_primary_key",
        "create_foreign_key",
        "create_check_constraint",
        "drop_constraint",
        "create_table_comment",
        "drop_table_comment",
        "create_exclude_constraint",
        "f",
    }
)
PLAIN_MODULES = frozenset({"sqlalchemy", "collections.abc", "typing", "__future__"})
# Names that reach the run's context, connection or arguments.
RUNTIME_NAMES = frozenset(
    {
        "context",
        "get_context",
        "get_bind",
        "is_offline_mode",
        "as_sql",
        "autocommit_block",
        "get_x_argument",
        "run_async",
        "invoke",
        "migration_context",
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "getattr",
        "setattr",
        "globals",
        "locals",
        "vars",
        "__builtins__",
    }
)


def plain_source(path: Path) -> bool:
    """Whether the migration file at ``path`` only sends statements (see the module)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if not all(_plain_module(a.name) for a in node.names):
                return False
        elif isinstance(node, ast.ImportFrom):
            if not _plain_import(node):
                return False
        elif isinstance(node, ast.Attribute):
            on_op = isinstance(node.value, ast.Name) and node.value.id == "op"
            if node.attr in RUNTIME_NAMES or (on_op and node.attr not in PLAIN_OPS):
                return False
        elif isinstance(node, ast.Name) and node.id in RUNTIME_NAMES:
            return False
    return True


def _plain_import(node: ast.ImportFrom) -> bool:
    module = node.module or ""
    names = {a.name for a in node.names}
    if module == "alembic":
        return names == {"op"}
    if module == "alembic_common.migration":
        return names <= PLAIN_HELPERS
    return node.level == 0 and _plain_module(module)


def _plain_module(name: str) -> bool:
    return name in PLAIN_MODULES or name.split(".")[0] == "sqlalchemy"


def _bookkeeping(service: Service, version: int, below: int | None, down: bool) -> int:
    """How many of a step's offline statements are the run's own: BEGIN and COMMIT, the
    version table's and the history's write, the views dropped and rebuilt, and the
    version table made before the first step."""
    cleared = releases.clear_sql(service) is not None
    rebuilt = releases.sync_sql(service, below if down else version, OWN_TABLES) is not None
    first = not down and below is None
    return 4 + cleared + rebuilt + first


def _bodies(service: Service, versions: list[int], down: bool) -> dict[int, tuple[str, ...]]:
    """Each of ``versions``' own statements, one way, from one offline rendering of them all
    (versions whose rendering fails, or holds unexpected bookkeeping, are left out)."""
    disk = service.disk_versions()
    try:
        if down:
            rendered = offline.sql_plan(service, disk[-1], None, down=True).versions
        else:
            rendered = offline.sql_plan(service, None, disk[-1]).versions
    except MigrationError:
        if len(versions) <= 1:
            return {}
        return {  # one that cannot render offline (it needs -x) must not cost the others
            v: body for one in versions for v, body in _one(service, one, down).items()
        }
    return _split(service, {p.version: p for p in rendered}, versions, down)


def _one(service: Service, version: int, down: bool) -> dict[int, tuple[str, ...]]:
    disk = service.disk_versions()
    below = disk[disk.index(version) - 1] if disk.index(version) > 0 else None
    try:
        if down:
            rendered = offline.sql_plan(service, version, below, down=True).versions
        else:
            rendered = offline.sql_plan(service, below, version).versions
    except MigrationError:
        return {}
    return _split(service, {p.version: p for p in rendered}, [version], down)


def _split(
    service: Service, rendered: dict[int, offline.VersionPlan], versions: list[int], down: bool
) -> dict[int, tuple[str, ...]]:
    disk = service.disk_versions()
    found = {}
    for version in versions:
        plan = rendered.get(version)
        if plan is None:
            continue
        below = disk[disk.index(version) - 1] if disk.index(version) > 0 else None
        own = [s.sql for s in plan.statements if s.bookkeeping]
        if len(own) != _bookkeeping(service, version, below, down):
            continue  # a statement of its own looks like bookkeeping: leave it to Alembic
        found[version] = tuple(s.sql for s in plan.statements if not s.bookkeeping)
    return found


def compile_service(service: Service) -> dict[int, sqlsteps.Compiled]:
    """Every plain-SQL migration of ``service`` with its statements each way."""
    plain = [m.version for m in service.migrations if plain_source(m.path)]
    if not plain:
        return {}
    ups, downs = _bodies(service, plain, down=False), _bodies(service, plain, down=True)
    prints = service.file_hashes
    return {
        v: sqlsteps.Compiled(prints[v], ups.get(v), downs.get(v))
        for v in plain
        if v in ups or v in downs
    }
