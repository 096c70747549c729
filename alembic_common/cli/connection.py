"""The connection flags as typed and the databases they choose: one, or a fleet's.

Without typer: the fast path (``fast.py``) resolves a fleet's targets with these too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from alembic_common.core import urls
from alembic_common.core.services import Service
from alembic_common.core.settings import HostOptions, Settings, explicit_url, resolve
from alembic_common.errors import UsageError
from alembic_common.fleets import targets
from alembic_common.fleets.targets import Entry


class Connection(NamedTuple):
    """The connection flags as typed; resolved only when a command needs a database."""

    url: tuple[str, ...] = ()
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    password_file: Path | None = None
    database: str | None = None
    connect_timeout: int = 10

    def _hosts(self) -> HostOptions:
        return HostOptions(self.host, self.port, self.user, self.password, self.database)

    def settings(
        self, service: Service, url: str | None = None, *, say: Callable[[str], None] | None = None
    ) -> Settings:
        """Resolve in the documented order, down to the embedded server (``say`` announces it)."""
        if url is None and len(self.url) > 1:
            raise UsageError(f"{service.name}: this command takes one --url, not {len(self.url)}")
        resolved = resolve(
            service.name,
            url=url if url is not None else (self.url[0] if self.url else None),
            host=self._hosts(),
            password_file=self.password_file,
            connect_timeout=self.connect_timeout,
            root=service.root,
        )
        if resolved.embedded_dir is not None and say is not None:
            say(
                f"{service.name}: using the embedded PostgreSQL in {resolved.embedded_dir} "
                f"(database {resolved.database}); set --url or DATABASE_URL to use your own"
            )
        return resolved

    def explicit(
        self, service: Service, say: Callable[[str], None] | None = None
    ) -> Settings | None:
        """The settings only if the user named a database; never the embedded default."""
        first = self.url[0] if self.url else None
        if explicit_url(service.name, url=first, host=self._hosts()) is None:
            return None
        return self.settings(service, say=say)

    def targets(
        self,
        service: Service,
        say: Callable[[str], None] | None = None,
        chosen: Selection | None = None,
    ) -> list[Settings]:
        """Every database of the service this run takes: from --url given more than once,
        --targets-file, the tenant registry or <SERVICE>_DATABASE_URLS, then --only and --shard.
        """
        chosen = chosen or Selection()
        entries = self._entries(service, chosen)
        if entries is None:
            return [self.settings(service, self.url[0] if self.url else None, say=say)]
        entries = targets.unique(entries)
        if chosen.only is not None:
            wanted = targets.unfinished(chosen.only)
            gone = wanted - {e.name or self._label(service, e) for e in entries}
            entries = [e for e in entries if (e.name or self._label(service, e)) in wanted]
            if gone and say is not None:
                say(f"--only: {len(gone)} target(s) of {chosen.only.name} are not listed any more")
        if chosen.shard is not None:
            index, count = targets.parse_shard(chosen.shard)
            entries = [e for e in entries if targets.in_shard(targets.shard_key(e), index, count)]
        return [
            replace(self.settings(service, e.url), source=e.source, name=e.name) for e in entries
        ]

    def _label(self, service: Service, entry: Entry) -> str:
        return Settings(service.name, entry.url, "listed").label

    def _entries(self, service: Service, chosen: Selection) -> list[Entry] | None:
        """The listed targets, or None for one database resolved the usual way."""
        sources = [
            name
            for name, used in (
                ("--url", bool(self.url)),
                ("--targets-file", chosen.targets_file is not None),
                ("--registry-url", chosen.registry_url is not None),
            )
            if used
        ]
        if len(sources) > 1:
            raise UsageError(f"give one source of targets, not {' and '.join(sources)}")
        if (chosen.registry_url is None) != (chosen.registry_query is None):
            raise UsageError("--registry-url and --registry-query go together: give both")
        variable = fleet_variable(service.name)
        if chosen.targets_file is not None:
            found = targets.from_file(chosen.targets_file)
        elif chosen.registry_url is not None:
            found = targets.from_registry(
                chosen.registry_url, chosen.registry_query or "", self.connect_timeout
            )
        elif self.url:
            if len(self.url) == 1 and not chosen.filters:
                return None
            found = targets.from_urls(self.url, "--url")
        elif variable is not None:
            found = targets.from_urls(urls.split_list(os.environ[variable]), variable)
            if not found:
                raise UsageError(f"{variable} is empty (an unset shell variable?)")
        elif chosen.filters:
            raise UsageError(
                f"--shard and --only choose among listed targets: give --targets-file, "
                f"--registry-url, several --url or {service.name.upper()}_DATABASE_URLS"
            )
        else:
            return None
        if not found:
            raise UsageError(f"no targets: {sources[0]} lists no database")
        return found


def fleet_variable(service: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The variable listing the service's databases, if one applies: the migration URLs
    (direct) before the application's; a single migration URL names one database and wins
    over the application's list, as it wins over its single URL."""
    name = service.upper()
    if f"{name}_MIGRATION_URLS" in environ:
        return f"{name}_MIGRATION_URLS"
    if f"{name}_MIGRATION_URL" in environ:
        return None
    return f"{name}_DATABASE_URLS" if f"{name}_DATABASE_URLS" in environ else None


class Selection(NamedTuple):
    """Where a fleet's targets come from, and which of them this run takes."""

    targets_file: Path | None = None
    registry_url: str | None = None
    registry_query: str | None = None
    shard: str | None = None
    only: Path | None = None

    @property
    def filters(self) -> bool:
        return self.shard is not None or self.only is not None

    def check(self) -> None:
        """Usage errors of the fleet options, before any connection."""
        if self.shard is not None:
            targets.parse_shard(self.shard)

    @property
    def given(self) -> bool:
        """A fleet option was given: the run reports as a fleet even with one target."""
        return self.filters or self.targets_file is not None or self.registry_url is not None
