"""Connection settings: where a service's database is, resolved in one documented order.

Order: ``--url`` > ``<SERVICE>_MIGRATION_URL`` > ``<SERVICE>_DATABASE_URL`` > ``DATABASE_URL``
> ``--host/--port/...`` (seed defaults) > the embedded server under ``.pgdata/``. The
migration URL is the direct connection beside an application's pooled one. Passwords live
only in ``Settings.url``; everything shown to people goes through ``mask``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from alembic_common.core import embedded, paths, urls
from alembic_common.core.embedded import default_database
from alembic_common.core.urls import mask
from alembic_common.errors import ConfigError, StateError

# The seed's defaults for the individual connection flags.
SEED_HOST, SEED_PORT, SEED_USER, SEED_PASSWORD = "localhost", 5432, "postgres", "postgres"
DEFAULT_CONNECT_TIMEOUT = 10

__all__ = ["Settings", "mask", "normalize_url", "resolve"]


class HostOptions(NamedTuple):
    """The seed's individual connection flags; any one given selects this source."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None

    def given(self) -> bool:
        return any(
            v is not None for v in (self.host, self.port, self.user, self.password, self.database)
        )


@dataclass(frozen=True)
class Settings:
    """Where one service's database is and how it was chosen. ``url`` is canonical."""

    service: str
    url: str = field(repr=False)
    source: str
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    embedded_dir: Path | None = None
    name: str | None = None  # a fleet target's name (targets file or registry)

    @cached_property
    def parts(self) -> urls.Parsed:
        return urls.parse(self.url)

    @property
    def reading(self) -> dict[str, str]:
        """libpq's reading of the URL: where the connection goes, and as whom."""
        return urls.reading(self.url)

    @property
    def display(self) -> str:
        """The URL with its password masked: the only form that may be printed."""
        return mask(self.url)

    @property
    def password(self) -> str | None:
        """The password the URL carries, so that output can be checked against it."""
        return self.reading.get("password") or None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every (host, port) libpq tries, in its order: the ``host`` (else ``hostaddr``)
        list, a query parameter winning over the authority's hosts, paired with the ``port``
        list (one port serves every host); a socket directory stands as itself, no host at
        all as 'local socket'."""
        found = self.reading
        names = (found.get("host") or found.get("hostaddr") or "").split(",")
        ports = found.get("port", "").split(",")
        if len(ports) != len(names):
            ports = ports[:1] * len(names)
        return [(h.strip() or "local socket", _port(p)) for h, p in zip(names, ports, strict=True)]

    @property
    def host(self) -> str:
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    @property
    def user(self) -> str:
        return self.reading.get("user") or os.environ.get("PGUSER") or "postgres"

    @property
    def host_port(self) -> str:
        """A human description of the server address (host:port or socket dir; every host
        of a multi-host URL, in order)."""
        return ",".join(f"{h}:{p}" for h, p in self.addresses)

    @property
    def label(self) -> str:
        """The target's name, else host:port/database: never a credential (metrics, summaries)."""
        return self.name if self.name is not None else f"{self.host_port}/{self.database}"

    @property
    def database(self) -> str:
        return self.reading.get("dbname") or self.user

    def for_database(self, database: str) -> Settings:
        """The same server and login, another database."""
        params = {k: v for k, v in self.parts.params.items() if k != "dbname"}
        url = self.parts._replace(database=database, params=params).url()
        return Settings(self.service, url, self.source, self.connect_timeout, self.embedded_dir)


def _port(text: int | str | None) -> int:
    """A port as libpq would take it; 5432 when none (or none that parses) is given."""
    value = str(text or "").strip()
    return int(value) if value.isdigit() else 5432


def normalize_url(raw: str, source: str = "the URL") -> str:
    """Check a database URL (see ``urls``) and return its canonical ``postgresql://`` form."""
    return urls.parse(raw, source).url()


def url_from_parts(service: str, opts: HostOptions) -> str:
    """Build a URL from the seed's flags, filling what is missing with the seed's defaults."""
    port = opts.port or SEED_PORT
    if not 0 < int(port) < 65536:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    if opts.host is not None and (not opts.host.strip() or any(c.isspace() for c in opts.host)):
        raise ConfigError("--host is empty or contains spaces")
    parsed = urls.Parsed(
        opts.user or SEED_USER,
        opts.password if opts.password is not None else SEED_PASSWORD,
        (((opts.host or SEED_HOST).strip("[]"), int(port)),),
        opts.database or default_database(service),
        {},
    )
    return parsed.url()


def with_password(url: str, password: str) -> str:
    """Put a password (from a file) into a URL."""
    parsed = urls.parse(url)
    # The file's password, not a ?password= (which libpq would take first).
    params = {k: v for k, v in parsed.params.items() if k != "password"}
    return parsed._replace(user=parsed.user or SEED_USER, password=password, params=params).url()


# The documented values of APP_ENV (and --env), case and surrounding spaces ignored.
ENVIRONMENTS = {
    "development": ("development", "dev", "local"),
    "test": ("test", "testing", "ci"),
    "staging": ("staging", "stage", "preprod"),
    "production": ("production", "prod"),
}
PRODUCTION = "production"


def environment(value: str | None, source: str = "APP_ENV") -> str:
    """The canonical environment name; unset or empty is development, unknown is an error.

    A typo must not slip past the production guard, so only listed names are accepted.
    """
    text = (value or "").strip().lower()
    if not text:
        return "development"
    for name, spellings in ENVIRONMENTS.items():
        if text in spellings:
            return name
    listed = ", ".join(s for spellings in ENVIRONMENTS.values() for s in spellings)
    raise ConfigError(
        f"{source} {value.strip()[:30]!r} is not a known environment; use one of: {listed}"  # type: ignore[union-attr]
    )


def read_password_file(path: Path) -> str:
    """Read a password from a file (first line), as Docker and Kubernetes secrets provide."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read --password-file {path}: {exc.strerror}") from None
    return text.splitlines()[0] if text else ""


def env_var(service: str) -> str:
    """The per-service URL variable, e.g. ``PATIENT_DATABASE_URL``."""
    return f"{service.upper()}_DATABASE_URL"


def migration_var(service: str) -> str:
    """The per-service direct-connection variable, e.g. ``PATIENT_MIGRATION_URL``: it wins
    over ``PATIENT_DATABASE_URL``, which may name the application's pooler."""
    return f"{service.upper()}_MIGRATION_URL"


def explicit_url(
    service: str,
    *,
    url: str | None = None,
    host: HostOptions = HostOptions(),
    environ: Mapping[str, str] = os.environ,
) -> tuple[str, str] | None:
    """The URL from the first explicit source that is set, with that source's name."""
    if url is not None:
        return normalize_url(url, "--url"), "--url"
    for var in (migration_var(service), env_var(service), "DATABASE_URL"):
        if var in environ:
            return normalize_url(environ[var], var), var
    if host.given():
        return url_from_parts(service, host), "--host/--port/--user/--database"
    return None


def embedded_settings(service: str, connect_timeout: int, root: Path | None) -> Settings:
    """The service's own database on the embedded server (started if needed)."""
    data_dir = paths.data_dir(root)
    url = embedded.url_for(service, data_dir)
    return Settings(service, url, "embedded", connect_timeout, data_dir)


def resolve(
    service: str,
    *,
    url: str | None = None,
    host: HostOptions = HostOptions(),
    password_file: Path | None = None,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
    environ: Mapping[str, str] = os.environ,
    root: Path | None = None,
) -> Settings:
    """Resolve one service's connection settings; start the embedded server only if nothing is set."""
    if connect_timeout < 1:
        raise ConfigError("--connect-timeout must be at least 1 second")
    found = explicit_url(service, url=url, host=host, environ=environ)
    if found is None:
        return embedded_settings(service, connect_timeout, root)
    resolved, source = found
    if password_file is not None:
        resolved = with_password(resolved, read_password_file(password_file))
    return Settings(service, resolved, source, connect_timeout)


def peer(
    other: str,
    target: Settings,
    *,
    environ: Mapping[str, str] = os.environ,
    root: Path | None = None,
) -> Settings:
    """Where another service's database is, as seen from a run against ``target``.

    Only that service's own variables name it (its migration URL, else its database URL);
    the embedded server is used only when the target itself is embedded. ``DATABASE_URL``
    names one database, so it is never a peer.
    """
    for var in (migration_var(other), env_var(other)):
        if var in environ:
            return Settings(other, normalize_url(environ[var], var), var, target.connect_timeout)
    if target.source == "embedded":
        return embedded_settings(other, target.connect_timeout, root)
    raise StateError(  # nothing names it (an operational gap); a set but bad variable is usage
        f"set {env_var(other)} to the {other} service's database: it cannot be guessed when "
        f"{target.service}'s database comes from {target.source}"
    )
