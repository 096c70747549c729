"""Service discovery and each service's history as declared in its migration files.

Each ``services/<name>/alembic.ini`` is one service; adding a service is adding a
folder. A migration file's facts (revision, parent, description, ``phase``, ``requires``,
``lint_accepted``, ``contract``) are read once per process from the file's syntax tree, never by
importing it and never from free text, so the no-op start and ``status`` stay free of
Alembic. Alembic's own ScriptDirectory is built only when something will run.
"""

from __future__ import annotations

import ast
import configparser
import hashlib
import importlib.util
import json
import os
import re
import sys
import traceback
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from alembic_common.core.paths import project_root
from alembic_common.errors import ConfigError, ScriptError, StateError
from alembic_common.online import releases

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import MetaData

VERSION_FILE = re.compile(r"^([0-9]{4,})_[a-z0-9_]+\.py$")
# What Alembic's ScriptDirectory loads from a versions folder (its _only_source_rev_file).
ALEMBIC_LOADS = re.compile(r"^(?!\.\#|__init__).*\.py$")
PHASES = ("expand", "contract")
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED = {"all"}
DECLARED = (
    "revision",
    "down_revision",
    "phase",
    "requires",
    "lint_accepted",
    "contract",
    "x_arguments",
    "branch_labels",
    "depends_on",
)


def revision_id(version: int) -> str:
    """The revision id for an integer version: 4 is ``"0004"``."""
    return f"{version:04d}"


def describe_doc(doc: str | None, revision: str) -> str:
    """The one-line description of a revision: its docstring's first paragraph."""
    first = re.split(r"\n\s*\n", (doc or "").strip(), maxsplit=1)[0]
    return " ".join(first.split()) or f"revision {revision}"


class Migration(NamedTuple):
    """One revision file as the platform sees it."""

    version: int
    revision: str
    description: str
    path: Path
    requires: dict[str, int]  # other service -> version
    phase: str  # "expand", or "contract": held back from a plain up (RunOptions.contract)
    down_revision: str | None
    lint_accepted: dict[str, str]  # squawk rule -> reason
    # A contract step's columns after it, per table: {"rename": {old: new}, "hide": [new]}
    # (see releases.py: the version schema a release built for it runs against).
    contract: dict[str, dict[str, Any]]
    # The -x KEY=VALUE its downgrade reads: key -> accepted values (case and spaces ignored).
    x_arguments: dict[str, list[str]]
    # Alembic's own declarations, passed on as written (None when the file has none).
    branch_labels: Any
    depends_on: Any
    # It calls tenancy.create_roles: the migrating role must be able to create roles.
    creates_roles: bool = False
    # Its downgrade cannot undo it: it declares ``irreversible = True`` (``down`` refuses it),
    # or its ``downgrade()`` does nothing (only ``pass``, ``...`` or a docstring: ``down``
    # runs it as Alembic does, but ``up --on-failure rollback`` restores the backup instead).
    irreversible: bool = False
    empty_downgrade: bool = False


def _literal(path: Path, name: str, node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ScriptError(f"{path.name}: {name} must be a literal value") from None


def _declared(path: Path) -> tuple[str | None, dict[str, Any]]:
    """A migration file's docstring and its top-level declarations, from its syntax tree."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ScriptError(f"{path.name}: cannot be parsed: {exc.msg} (line {exc.lineno})") from None
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in DECLARED:
            found[target.id] = _literal(path, target.id, value)
    if any(_calls(node, "create_roles") for node in ast.walk(tree)):
        found[CREATES_ROLES] = True
    guards = sorted({key for node in ast.walk(tree) if (key := _drop_guard(node))})
    if guards:
        found[DROP_GUARDS] = guards
    for node in tree.body:
        if _declares_irreversible(node):
            found[IRREVERSIBLE] = True
        if isinstance(node, ast.FunctionDef) and node.name == "downgrade" and _does_nothing(node):
            found[EMPTY_DOWNGRADE] = True
    return ast.get_docstring(tree), found


def _declares_irreversible(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "irreversible" for t in node.targets)
        and isinstance(node.value, ast.Constant)
        and node.value.value is True
    )


def _does_nothing(function: ast.FunctionDef) -> bool:
    """Only ``pass``, ``...`` or a docstring."""
    return all(
        isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        for s in function.body
    )


def _drop_guard(node: ast.AST) -> str | None:
    """The ``-x`` key of a ``refuse_to_drop(table[, column])`` call written with literals."""
    if not _calls(node, "refuse_to_drop"):
        return None
    assert isinstance(node, ast.Call)
    args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return args[-1] if args and len(args) == len(node.args) else None


def _calls(node: ast.AST, name: str) -> bool:
    """``node`` is a call of ``name`` (``name(...)`` or ``module.name(...)``)."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == name) or (
        isinstance(func, ast.Attribute) and func.attr == name
    )


def _check_declared(path: Path, values: dict[str, Any]) -> None:
    """Refuse malformed declarations, naming the file (Django's BadMigrationError)."""
    if values.get("phase", "expand") not in PHASES:
        raise ScriptError(f"{path.name}: phase must be one of {', '.join(map(repr, PHASES))}")
    requires = values.get("requires") or {}
    if not isinstance(requires, dict) or not all(
        isinstance(k, str) and type(v) is int and v > 0 for k, v in requires.items()
    ):
        raise ScriptError(
            f'{path.name}: requires must map service names to versions, e.g. requires = {{"patient": 1}}'
        )
    accepted = values.get("lint_accepted") or {}
    if not isinstance(accepted, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in accepted.items()
    ):
        raise ScriptError(
            f"{path.name}: lint_accepted must map each squawk rule to a non-empty reason"
        )
    if "contract" in values:
        if values.get("phase") != "contract":
            raise ScriptError(f'{path.name}: a contract declaration needs phase = "contract"')
        releases.check_declaration(path.name, values["contract"])
    x_args = values.get("x_arguments") or {}
    if not isinstance(x_args, dict) or not all(
        isinstance(k, str) and isinstance(v, list | tuple) and all(isinstance(i, str) for i in v)
        for k, v in x_args.items()
    ):
        raise ScriptError(
            f'{path.name}: x_arguments must map each -x key to its accepted values, e.g. {{"rh_null": ["NULL"]}}'
        )
    down = values.get("down_revision")
    if down is not None and not isinstance(down, str):
        raise ScriptError(f"{path.name}: down_revision must be one revision id (or None)")


# Each file's docstring and declarations, kept beside Python's own bytecode cache and
# reused while the file's bytes are unchanged (hashing a file costs a tenth of parsing it):
# a history of thousands of files is parsed once, not on every run. A cache that cannot
# be written is simply skipped.
CACHE = Path("__pycache__") / "migrate-declarations-5.json"
# Facts derived from the code, kept with the declarations.
CREATES_ROLES = "(creates roles)"
DROP_GUARDS = "(drop guards)"  # the -x keys of its refuse_to_drop calls
IRREVERSIBLE = "(irreversible)"
EMPTY_DOWNGRADE = "(empty downgrade)"


class _DeclarationCache:
    def __init__(self, versions_dir: Path, hashes: dict[str, str]) -> None:
        self.path = versions_dir / CACHE
        self.hashes = hashes  # file name -> sha256 of its bytes
        try:
            self.entries: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def declared(self, path: Path) -> tuple[str | None, dict[str, Any]]:
        stamp = self.hashes.get(path.name) or hashlib.sha256(path.read_bytes()).hexdigest()
        entry = self.entries.get(path.name)
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            return entry.get("doc"), dict(entry.get("values") or {})
        doc, values = _declared(path)
        try:
            json.dumps(values)
        except (TypeError, ValueError):
            return doc, values  # not JSON (a tuple key...): parsed each time, never cached
        self.entries[path.name] = {"stamp": stamp, "doc": doc, "values": values}
        self.changed = True
        return doc, values

    def save(self, names: set[str]) -> None:
        if not self.changed and set(self.entries) <= names:
            return
        kept = {k: v for k, v in self.entries.items() if k in names}
        try:
            self.path.parent.mkdir(exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(kept, sort_keys=True))
            temporary.replace(self.path)
        except OSError:
            pass  # a read-only checkout: parse again next time


def load_migration(path: Path, version: int, cache: _DeclarationCache | None = None) -> Migration:
    """Read one migration file's declarations; refuse it if they are malformed."""
    doc, values = cache.declared(path) if cache is not None else _declared(path)
    revision = values.get("revision")
    if revision != revision_id(version):
        raise ScriptError(
            f"{path.name}: revision must be {revision_id(version)!r}, matching the file name "
            f"(found {revision!r})"
        )
    _check_declared(path, values)
    return Migration(
        version,
        revision,
        describe_doc(doc, revision),
        path,
        dict(values.get("requires") or {}),
        values.get("phase", "expand"),
        values.get("down_revision"),
        dict(values.get("lint_accepted") or {}),
        dict(values.get("contract") or {}),
        {
            **{key: ["drop"] for key in values.get(DROP_GUARDS) or []},
            **{k: list(v) for k, v in (values.get("x_arguments") or {}).items()},
        },
        values.get("branch_labels"),
        values.get("depends_on"),
        bool(values.get(CREATES_ROLES)),
        bool(values.get(IRREVERSIBLE)),
        bool(values.get(EMPTY_DOWNGRADE)),
    )


def chain(name: str, migrations: list[Migration]) -> list[Migration]:
    """Check that the migrations form one line from a single base; return them oldest first."""
    by_revision = {m.revision: m for m in migrations}
    children: dict[str | None, list[str]] = {}
    for m in migrations:
        if m.down_revision is not None and m.down_revision not in by_revision:
            raise ScriptError(
                f"{name}: {m.path.name} revises {m.down_revision!r}, which no file has"
            )
        children.setdefault(m.down_revision, []).append(m.revision)
    heads = sorted(r for r in by_revision if r not in children)
    if len(heads) > 1:
        raise ScriptError(
            f"{name}: the history has {len(heads)} heads ({', '.join(heads)}); it must be one "
            "line: give the newer revision a higher number and one parent"
        )
    bases = children.get(None, [])
    if migrations and len(bases) != 1:
        raise ScriptError(f"{name}: the history must have exactly one base revision, found {bases}")
    ordered: list[Migration] = []
    nxt = bases[0] if bases else None
    while nxt is not None:
        ordered.append(by_revision[nxt])
        following = children.get(nxt, [])
        if len(following) > 1:
            raise ScriptError(
                f"{name}: the history branches after {nxt} ({', '.join(sorted(following))}); "
                "it must be one line"
            )
        nxt = following[0] if following else None
    if len(ordered) != len(migrations) or [m.version for m in ordered] != sorted(
        m.version for m in ordered
    ):
        raise ScriptError(f"{name}: the history is not one line of increasing versions")
    return ordered


# Services loaded in this process, so that a forked worker finds the parent's instance
# (its history already parsed and its ScriptDirectory already built) instead of a copy.
_LOADED: dict[tuple[str, str], Service] = {}


def remember(service: Service) -> None:
    """Make ``service`` (with whatever it has loaded) the one workers forked later will use."""
    _LOADED[(service.name, str(service.path))] = service


def _restore(name: str, path: str) -> Service:
    return _LOADED.get((name, path)) or Service(name, Path(path))


@dataclass(frozen=True)
class Service:
    """A service's migration environment: its folder, its Alembic config and its models."""

    name: str
    path: Path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # Sent to a worker by name and folder: the loaded history (modules included)
        # does not pickle, and the worker has it already if the parent remembered it.
        return _restore, (self.name, str(self.path))

    @property
    def root(self) -> Path:
        """The project folder that holds ``services/``."""
        return self.path.parent.parent

    @property
    def ini(self) -> Path:
        return self.path / "alembic.ini"

    @property
    def versions_dir(self) -> Path:
        return self.path / "migrations" / "versions"

    @cached_property
    def schema(self) -> str:
        """The schema of the version tables: ``version_table_schema`` in alembic.ini, or public."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.ini)
        return parser.get("alembic", "version_table_schema", fallback="").strip() or "public"

    @cached_property
    def _files(self) -> dict[int, Path]:
        """One file per version. Every file Alembic would load (any ``*.py`` but
        ``__init__.py``) must be one the toolkit places, ``NNNN_words.py``, and no two may
        hold one version: else the toolkit and plain Alembic could disagree on the history.
        Listed once, like the history parsed from it: a long history's folder is not read
        again by every step of a run or every target of a fleet."""
        files: dict[int, Path] = {}
        for path in sorted(self.versions_dir.iterdir()):
            if not ALEMBIC_LOADS.match(path.name):
                continue
            match = VERSION_FILE.match(path.name)
            if match is None:
                raise ScriptError(
                    f"{self.name}: {path.name} in {self.versions_dir} is not named like a "
                    "migration (NNNN_words.py: ASCII digits, lower-case words), yet plain Alembic "
                    "would load it: rename it or move it out of the folder",
                    service=self.name,
                )
            version = int(match.group(1))
            if version in files:
                raise ScriptError(
                    f"{self.name}: {files[version].name} and {path.name} both hold version "
                    f"{version}: keep one",
                    service=self.name,
                    version=version,
                )
            files[version] = path
        return files

    def disk_versions(self) -> list[int]:
        """Version numbers read off the file names alone."""
        return sorted(self._files)

    @cached_property
    def file_hashes(self) -> dict[int, str]:
        """The sha256 of each migration file's bytes, by version, taken once: the declaration
        cache and the checksums' fingerprints both use it."""
        return {v: hashlib.sha256(p.read_bytes()).hexdigest() for v, p in self._files.items()}

    @cached_property
    def migrations(self) -> list[Migration]:
        """Every migration, oldest first, checked to be one line of integer versions."""
        files = self._files
        hashes = self.file_hashes
        cache = _DeclarationCache(self.versions_dir, {p.name: hashes[v] for v, p in files.items()})
        try:
            loaded = [load_migration(files[v], v, cache) for v in sorted(files)]
            cache.save({p.name for p in files.values()})
            return chain(self.name, loaded)
        except ScriptError as exc:
            exc.service = self.name
            raise

    @property
    def head(self) -> int | None:
        return self.migrations[-1].version if self.migrations else None

    @property
    def descriptions(self) -> dict[int, str]:
        return {m.version: m.description for m in self.migrations}

    @cached_property
    def contract_steps(self) -> list[tuple[Migration, int | None]]:
        """Each contract step, oldest first, with the version just before it."""
        return releases.contract_steps(self.migrations)

    def contract_versions(self, versions: list[int]) -> list[int]:
        """Which of ``versions`` are contract steps."""
        if not versions:
            return []
        phases = {m.version: m.phase for m in self.migrations}
        return [v for v in versions if phases.get(v) == "contract"]

    def irreversible(self, versions: list[int], *, declared: bool = False) -> list[int]:
        """Which of ``versions`` their downgrade cannot undo: declared so, or (unless only
        ``declared``) with a ``downgrade()`` that does nothing."""
        stuck = {
            m.version
            for m in self.migrations
            if m.irreversible or (m.empty_downgrade and not declared)
        }
        return [v for v in versions if v in stuck]

    def config(self, output_buffer: Any = None, **attributes: Any) -> Config:
        """A fresh Alembic Config for this service, with ``attributes`` for the shared env.py."""
        import argparse

        from alembic.config import Config

        from alembic_common.core import xargs

        given = xargs.current()
        # Migrations read -x through Alembic's own get_x_argument, as with plain alembic.
        cmd_opts = argparse.Namespace(x=given) if given else None
        cfg = Config(str(self.ini), output_buffer=output_buffer, cmd_opts=cmd_opts)
        cfg.attributes.update(attributes)
        cfg.attributes.setdefault("service", self.name)
        cfg.attributes.setdefault("service_object", self)  # env.py reuses its parsed history
        return cfg

    @cached_property
    def modules(self) -> dict[int, _Deferred]:
        """Each migration file's module, by version, imported only when a step of it runs."""
        return {m.version: _Deferred(self, m) for m in self.migrations}

    @cached_property
    def scripts(self) -> ScriptDirectory:
        """Alembic's view of the history, built once per process from the history already
        parsed: no file is imported to build it (see ``modules``)."""
        from alembic.script import Script, ScriptDirectory
        from alembic.script.revision import RevisionMap

        script = ScriptDirectory.from_config(self.config())
        modules = self.modules
        script.revision_map = RevisionMap(
            lambda: [Script(modules[m.version], m.revision, m.path) for m in self.migrations]  # type: ignore[arg-type]
        )
        script.revision_map.heads  # noqa: B018 - the map is built now, before workers fork
        return script

    def load(self, versions: Iterable[int]) -> None:
        """Import the files of ``versions`` now, so a broken one is named before any change."""
        modules = self.modules
        for version in versions:
            if version in modules:
                modules[version].module()

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {m.revision: i for i, m in enumerate(self.migrations)}

    def walk(self, heads: Any, destination: str, *, down: bool = False) -> list[str] | None:
        """The revisions, in running order, that take the database from ``heads`` to
        ``destination`` along this service's one line of history; None when that is not
        such a walk (several heads, an unknown revision, the wrong direction)."""
        heads = (heads,) if isinstance(heads, str) else tuple(heads or ())
        at = self._positions
        if len(heads) > 1 or (heads and heads[0] not in at):
            return None
        here = at[heads[0]] if heads else -1
        there = -1 if destination == "base" else at.get(destination)
        if there is None or (there > here if down else there < here):
            return None
        line = [m.revision for m in self.migrations]
        return line[there + 1 : here + 1][::-1] if down else line[here + 1 : there + 1]

    def run_alembic(
        self, cfg: Config, revisions: list[str], *, down: bool = False, start: str | None = None
    ) -> None:
        """Run ``revisions`` (a plan's steps, in running order) through Alembic, on the
        history as loaded once per process (``command.upgrade`` would build and import every
        file again, and walk every ancestor to find the steps).

        Alembic reads the version table as it starts; the steps it runs are the plan's from
        there on (all of them, or, on a retry, those after the ones that committed). A
        database found anywhere else than on the plan's way is refused: it moved under the
        run. ``start`` asks for offline SQL from that revision (``upgrade start:end --sql``).
        """
        from alembic.runtime.environment import EnvironmentContext
        from alembic.runtime.migration import MigrationStep

        script = self.scripts
        destination = revisions[-1] if revisions else start or "base"
        if down and revisions:  # down to the revision below the last one undone
            below = self._positions[destination] - 1
            destination = self.migrations[below].revision if below >= 0 else "base"
        build = MigrationStep.downgrade_from_script if down else MigrationStep.upgrade_from_script

        def steps(heads: Any, _context: Any) -> Any:
            walk = self.walk(heads, destination, down=down)
            if walk is None or walk != revisions[len(revisions) - len(walk) :]:
                at = ", ".join(heads) if heads and not isinstance(heads, str) else heads
                raise StateError(
                    f"{self.name}: the database is at {at or 'no version'}, which is not on "
                    "the way this run planned; nothing more was run (run 'status')",
                    service=self.name,
                )
            return [build(script.revision_map, script.get_revision(r)) for r in walk]

        with EnvironmentContext(
            cfg,
            script,
            fn=steps,
            as_sql=start is not None,
            starting_rev=start,
            destination_rev=destination,
        ):
            script.run_env()

    def metadata(self) -> MetaData:
        """The service's SQLAlchemy metadata (``target_metadata`` in ``models.py``)."""
        # Unique per file and version of it: two checkouts of one service, or a model edited
        # while a process runs (revision --autogenerate in tests), must not share a module.
        path = self.path / "models.py"
        stamp = f"{path}:{path.stat().st_mtime_ns if path.exists() else 0}"
        module_name = f"_migrate_models_{self.name}_{zlib.crc32(stamp.encode()):08x}"
        if module_name not in sys.modules:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ScriptError(f"{self.path / 'models.py'} is missing", service=self.name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise ScriptError(_load_failure(self, exc), service=self.name) from exc
        return sys.modules[module_name].target_metadata  # type: ignore[no-any-return]


class _Deferred:
    # A migration file's module as Alembic's ``Script`` sees it. The revision ids Alembic
    # builds its map from are the ones our own parse read; the file itself is imported
    # (as Alembic would import it) only when something asks for more, such as a step's
    # ``upgrade``. With a long history, running one step imports one file, not all.

    def __init__(self, service: Service, migration: Migration) -> None:
        self.revision = migration.revision
        self.down_revision = migration.down_revision
        self.branch_labels = migration.branch_labels
        self.depends_on = migration.depends_on
        self._service, self._path = service, migration.path
        self._module: ModuleType | None = None

    def module(self) -> ModuleType:
        if self._module is None:
            from alembic.util import load_python_file

            try:
                self._module = load_python_file(self._path.parent, self._path.name)
            except Exception as exc:
                raise ScriptError(
                    _load_failure(self._service, exc), service=self._service.name
                ) from exc
        return self._module

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]  # Script.longdoc reads it
        return self.module().__doc__

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.module(), name)


def _load_failure(service: Service, exc: BaseException) -> str:
    """Name the file inside the service that failed to import, and why."""
    files = [getattr(exc, "filename", None)]
    files += [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]
    inside = [f for f in files if f and Path(f).resolve().is_relative_to(service.path.resolve())]
    where = inside[-1] if inside else str(service.path)
    detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return f"{service.name}: cannot load {where}: {detail}"


def services_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "services"


def discover(root: Path | None = None) -> dict[str, Service]:
    """Every service folder under ``services/`` that holds an ``alembic.ini``, by name."""
    base = services_dir(root)
    found = {}
    for ini in sorted(base.glob("*/alembic.ini")):
        name = ini.parent.name
        if SERVICE_NAME.match(name) and name not in RESERVED:
            found[name] = Service(name, ini.parent)
    return found


def get(name: str, root: Path | None = None) -> Service:
    """The service called ``name``, or a usage error that lists the valid names."""
    known = discover(root)
    if name not in known:
        raise ConfigError(f"unknown service {name!r}; valid services: {', '.join(known) or 'none'}")
    return known[name]


def service_for_env(env_file: str) -> Service:
    """The service whose ``migrations/env.py`` this is."""
    folder = Path(env_file).resolve().parent.parent
    return Service(folder.name, folder)
