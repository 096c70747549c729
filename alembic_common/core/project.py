"""The project on disk: its root, its services, and where each service's database is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from alembic_common.core import paths, services, settings
from alembic_common.core.services import Service
from alembic_common.core.settings import Settings
from alembic_common.errors import ConfigError


@dataclass(frozen=True)
class Project:
    """One checkout: ``services/*`` under ``root``, and the lookups every command needs."""

    root: Path

    @classmethod
    def find(cls) -> Project:
        """The project this process works on (``MIGRATE_ROOT``, else the package's checkout)."""
        return cls(paths.project_root())

    @classmethod
    def of(cls, service: Service) -> Project:
        return cls(service.root)

    @cached_property
    def services(self) -> dict[str, Service]:
        """Every service folder that holds an ``alembic.ini``, by name."""
        return services.discover(self.root)

    def service(self, name: str) -> Service:
        """The service called ``name``, or a usage error that lists the valid names."""
        if name not in self.services:
            known = ", ".join(self.services) or "none"
            raise ConfigError(f"unknown service {name!r}; valid services: {known}")
        return self.services[name]

    def settings(self, name: str, **given: Any) -> Settings:
        """Where ``name``'s database is, resolved in the documented order."""
        return settings.resolve(name, root=self.root, **given)

    def peers(self, target: Settings) -> Callable[[str], Settings]:
        """How a run against ``target`` finds other services' databases: never by a guess."""
        return lambda other: settings.peer(other, target, root=self.root)

    @property
    def data_dir(self) -> Path:
        return paths.data_dir(self.root)
