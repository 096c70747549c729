"""Service discovery and loading: each ``services/<name>/alembic.ini`` is one service.

Adding a service means adding a folder; nothing here names one. Loading the history
(Alembic's ScriptDirectory) is kept apart from reading version numbers off file names,
which is all the no-op fast path needs.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic_common.embedded import project_root
from alembic_common.errors import ConfigError, ScriptError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory
    from sqlalchemy import MetaData

VERSION_FILE = re.compile(r"^(\d{4,})_[a-z0-9_]+\.py$")
PHASES = {"expand", "contract"}
# Read straight from a file's text, so a no-op start knows without importing Alembic.
_CONTRACT_LINE = re.compile(r"""^phase(\s*:\s*str)?\s*=\s*["']contract["']""", re.MULTILINE)
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED = {"all"}


def version_of(revision: str) -> int:
    """The integer version a revision id stands for: ``"0004"`` is 4."""
    if not revision.isdigit():
        raise ScriptError(f"revision id {revision!r} is not a zero-padded integer such as '0004'")
    return int(revision)


def revision_id(version: int) -> str:
    """The revision id for an integer version: 4 is ``"0004"``."""
    return f"{version:04d}"


@dataclass(frozen=True)
class Migration:
    """One revision file as the platform sees it."""

    version: int
    revision: str
    description: str
    path: Path
    requires: dict[str, int] = field(default_factory=dict)  # other service -> version
    phase: str = "expand"  # "contract": held back from a plain up (see RunOptions.contract)


def describe(script: Script) -> str:
    """The one-line description of a revision: its docstring's first paragraph."""
    return " ".join((script.doc or "").split()) or f"revision {script.revision}"


@dataclass(frozen=True)
class Service:
    """A service's migration environment: its folder, its Alembic config and its models."""

    name: str
    path: Path

    @property
    def ini(self) -> Path:
        return self.path / "alembic.ini"

    @property
    def versions_dir(self) -> Path:
        return self.path / "migrations" / "versions"

    def _files(self) -> dict[int, Path]:
        found = ((VERSION_FILE.match(p.name), p) for p in self.versions_dir.iterdir())
        return {int(m.group(1)): p for m, p in found if m}

    def disk_versions(self) -> list[int]:
        """Version numbers read off the file names alone, without importing anything."""
        return sorted(self._files())

    def contract_versions(self, versions: list[int]) -> list[int]:
        """Which of ``versions`` are contract steps, read from the files' text."""
        files = self._files()
        return [v for v in versions if v in files and _CONTRACT_LINE.search(files[v].read_text())]

    def config(self, output_buffer: Any = None, **attributes: Any) -> Config:
        """A fresh Alembic Config for this service, with ``attributes`` for the shared env.py."""
        from alembic.config import Config

        cfg = Config(str(self.ini), output_buffer=output_buffer)
        cfg.attributes.update(attributes)
        cfg.attributes.setdefault("service", self.name)
        return cfg

    def script_directory(self) -> ScriptDirectory:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.config())

    @cached_property
    def migrations(self) -> list[Migration]:
        """Every revision, oldest first, checked to be a single line of integer versions."""
        script = self.script_directory()
        try:
            revisions = list(script.walk_revisions())
        except Exception as exc:  # a revision file that does not import
            raise ScriptError(_load_failure(self, exc), service=self.name) from exc
        heads = script.get_heads()
        if len(heads) > 1:
            raise ScriptError(
                f"{self.name}: the history has {len(heads)} heads ({', '.join(sorted(heads))}); "
                "it must be one line: give the newer revision a higher number and one parent",
                service=self.name,
            )
        result = []
        for rev in reversed(revisions):
            version = version_of(rev.revision)
            path = Path(rev.path)
            if not path.name.startswith(rev.revision + "_"):
                raise ScriptError(
                    f"{path.name}: revision id {rev.revision!r} must match the file name's number",
                    service=self.name,
                )
            requires = _requires(rev, self.name)
            phase = getattr(rev.module, "phase", "expand")
            if phase not in PHASES:
                raise ScriptError(
                    f"{path.name}: phase must be one of {sorted(PHASES)}", service=self.name
                )
            result.append(Migration(version, rev.revision, describe(rev), path, requires, phase))
        return result

    @property
    def head(self) -> int | None:
        return self.migrations[-1].version if self.migrations else None

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
        return sys.modules[module_name].target_metadata


def _requires(script: Script, service: str) -> dict[str, int]:
    """A revision's ``requires = {"patient": 1}``: versions other services must have reached."""
    declared = getattr(script.module, "requires", None) or {}
    if not isinstance(declared, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in declared.items()
    ):
        raise ScriptError(
            f"{Path(script.path).name}: requires must map service names to versions, "
            f'e.g. requires = {{"patient": 1}}',
            service=service,
        )
    return dict(declared)


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
