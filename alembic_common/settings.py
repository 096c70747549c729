"""Connection settings: where a service's database is, resolved in one documented order.

Order: ``--url`` > ``<SERVICE>_DATABASE_URL`` > ``DATABASE_URL`` > ``--host/--port/...``
(seed defaults) > the embedded server under ``.pgdata/``. Passwords live only in
``Settings.url``; everything shown to people goes through ``mask``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

from alembic_common import embedded, paths
from alembic_common.embedded import default_database
from alembic_common.errors import ConfigError

SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "postgresql+psycopg": "postgresql"}
SEED_DEFAULTS = {"host": "localhost", "port": 5432, "user": "postgres", "password": "postgres"}
DEFAULT_CONNECT_TIMEOUT = 10

_USERINFO_PASSWORD = re.compile(r"(://[^/@:\s]*:)([^@\s]*)(@)")
_QUERY_PASSWORD = re.compile(r"((?:^|[?&\s])password=)([^&\s]*)", re.IGNORECASE)


def mask(text: str) -> str:
    """Hide every password that a URL or conninfo string in ``text`` carries."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***\3", text))


@dataclass(frozen=True)
class HostOptions:
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
    """Where one service's database is and how it was chosen."""

    service: str
    url: str = field(repr=False)
    source: str
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    embedded_dir: Path | None = None

    @property
    def display(self) -> str:
        """The URL with its password masked: the only form that may be printed."""
        return mask(self.url)

    @property
    def password(self) -> str | None:
        """The password the URL carries, so that output can be checked against it."""
        parts = urlsplit(self.url)
        query = dict(parse_qsl(parts.query))
        return parts.password or query.get("password") or None

    @property
    def host(self) -> str:
        parts = urlsplit(self.url)
        return parts.hostname or dict(parse_qsl(parts.query)).get("host") or "localhost"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or int(dict(parse_qsl(parts.query)).get("port", 5432))

    @property
    def user(self) -> str:
        return urlsplit(self.url).username or os.environ.get("PGUSER") or "postgres"

    @property
    def host_port(self) -> str:
        """A human description of the server address (host:port or socket dir)."""
        return f"{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """host:port/database: names the target without any credential (metrics, summaries)."""
        return f"{self.host_port}/{self.database}"

    @property
    def database(self) -> str:
        return urlsplit(self.url).path.lstrip("/") or "postgres"

    def sqlalchemy_url(self) -> str:
        """The same URL spelled for SQLAlchemy's psycopg 3 dialect."""
        return "postgresql+psycopg" + self.url[len("postgresql") :]

    def for_database(self, database: str) -> Settings:
        """The same server and login, another database."""
        parts = urlsplit(self.url)
        url = parts._replace(path="/" + quote(database)).geturl()
        return Settings(self.service, url, self.source, self.connect_timeout, self.embedded_dir)


def normalize_url(raw: str) -> str:
    """Check a database URL and return it with the scheme spelled ``postgresql://``."""
    text = raw.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ConfigError(
            f"malformed database URL {mask(text)!r}: expected postgresql://USER@HOST/DB"
        )
    if scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"unsupported URL scheme {scheme!r} in {mask(text)!r}: use postgresql:// or postgres://"
        )
    url = "postgresql://" + rest
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"malformed database URL {mask(text)!r}: {exc}") from None
    if any(ch.isspace() for ch in url):
        raise ConfigError(f"malformed database URL {mask(text)!r}: it contains whitespace")
    host_in_query = "host" in dict(parse_qsl(parts.query))
    if not (parts.hostname or host_in_query):
        raise ConfigError(f"malformed database URL {mask(text)!r}: it names no host")
    if port == 0:
        raise ConfigError(f"malformed database URL {mask(text)!r}: port 0 is not a port")
    return url


def url_from_parts(service: str, opts: HostOptions) -> str:
    """Build a URL from the seed's flags, filling what is missing with the seed's defaults."""
    host = opts.host or SEED_DEFAULTS["host"]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    user = opts.user or SEED_DEFAULTS["user"]
    password = opts.password if opts.password is not None else SEED_DEFAULTS["password"]
    port = opts.port or SEED_DEFAULTS["port"]
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    database = opts.database or default_database(service)
    creds = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgresql://{creds}@{host}:{port}/{quote(database, safe='')}"


def with_password(url: str, password: str) -> str:
    """Put a password (from a file) into a URL that has none."""
    parts = urlsplit(url)
    user = parts.username or SEED_DEFAULTS["user"]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return parts._replace(netloc=netloc).geturl()


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


def _given(name: str, value: str) -> str:
    """A URL setting that is present must not be empty: an unset shell variable is not a choice."""
    if not value.strip():
        raise ConfigError(
            f"{name} is empty (an unset shell variable?); give a postgresql:// URL, "
            "or leave it out to use the next setting"
        )
    return value


def explicit_url(
    service: str,
    *,
    url: str | None = None,
    host: HostOptions = HostOptions(),
    environ: Mapping[str, str] = os.environ,
) -> tuple[str, str] | None:
    """The URL from the first explicit source that is set, with that source's name."""
    if url is not None:
        return normalize_url(_given("--url", url)), "--url"
    for var in (env_var(service), "DATABASE_URL"):
        if var in environ:
            return normalize_url(_given(var, environ[var])), var
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

    Only that service's own variable names it; the embedded server is used only when the
    target itself is embedded. ``DATABASE_URL`` names one database, so it is never a peer.
    """
    var = env_var(other)
    if var in environ:
        return Settings(
            other, normalize_url(_given(var, environ[var])), var, target.connect_timeout
        )
    if target.source == "embedded":
        return embedded_settings(other, target.connect_timeout, root)
    raise ConfigError(
        f"set {var} to the {other} service's database: it cannot be guessed when "
        f"{target.service}'s database comes from {target.source}"
    )
