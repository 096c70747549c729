"""Options shared by commands, each checked when parsed: bad values never reach a database.

The connection flags of every command are gathered into one ``Connection`` value by
``with_connection``; numbers are checked by small parsers (finite, in range), and file
options are checked to point into a writable folder before any work starts.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from alembic_common import files, settings, urls
from alembic_common.errors import UsageError
from alembic_common.locking import DEFAULT_LOCK_WAIT
from alembic_common.services import Service
from alembic_common.settings import HostOptions, Settings, explicit_url, resolve

# --- value parsers -------------------------------------------------------------------------


def seconds(minimum: float = 0.0) -> Callable[[str], float]:
    """A parser of a finite number of seconds, at least ``minimum``."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not a number of seconds") from None
        if not math.isfinite(number):
            raise typer.BadParameter("must be a finite number of seconds")
        if number < minimum:
            raise typer.BadParameter(f"must be at least {minimum:g}")
        return number

    parse.__name__ = "seconds"  # what --help shows: '--lock-wait <seconds>'
    return parse


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A parser of a whole number within ``minimum``..``maximum``."""

    def parse(value: str) -> int:
        try:
            number = int(str(value).strip())
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not a whole number") from None
        if number < minimum or (maximum is not None and number > maximum):
            span = f"{minimum}-{maximum}" if maximum is not None else f"at least {minimum}"
            raise typer.BadParameter(f"must be {span}")
        return number

    parse.__name__ = "integer"
    return parse


# --- connection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
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

    def targets(self, service: Service, say: Callable[[str], None] | None = None) -> list[Settings]:
        """Every database of the service: --url given more than once, or <SERVICE>_DATABASE_URLS."""
        listed = list(self.url)
        variable = f"{service.name.upper()}_DATABASE_URLS"
        if not listed and variable in os.environ:
            listed = urls.split_list(os.environ[variable])
            if not listed:
                raise UsageError(f"{variable} is empty (an unset shell variable?)")
        if len(listed) <= 1:
            return [self.settings(service, listed[0] if listed else None, say=say)]
        return [self.settings(service, u) for u in listed]


_CONNECTION_OPTIONS: list[tuple[str, Any, Any]] = [
    (
        "url",
        list[str] | None,
        typer.Option(
            "--url",
            help="postgresql:// or postgres:// URL; overrides the environment. "
            "Repeat it to run against several databases of one service.",
        ),
    ),
    ("host", str | None, typer.Option(help="Database host (default localhost).")),
    (
        "port",
        int | None,
        typer.Option(help="Database port, 1-65535 (default 5432).", parser=whole(1, 65535)),
    ),
    ("user", str | None, typer.Option(help="Database user (default postgres).")),
    (
        "password",
        str | None,
        typer.Option(help="Password (default postgres); prefer PGPASSWORD or --password-file."),
    ),
    (
        "password_file",
        Path | None,
        typer.Option(help="Read the password from this file's first line."),
    ),
    ("database", str | None, typer.Option(help="Database name (default <service>_service_db).")),
    (
        "connect_timeout",
        int,
        typer.Option(help="Seconds before a connection attempt gives up (>= 1).", parser=whole(1)),
    ),
    ("debug", bool, typer.Option("--debug", help="Show the traceback of an error.")),
]


def with_connection(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared connection options, gathered into ``conn: Connection``."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "conn"]
    defaults = {f.name: f.default for f in Connection.__dataclass_fields__.values()}
    defaults |= {"debug": False, "url": None}
    added = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=defaults[name],
            annotation=Annotated[kind, option],
        )
        for name, kind, option in _CONNECTION_OPTIONS
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("debug", None)  # read from argv by the frame, before parsing can fail
        fields = {name: kwargs.pop(name) for name, _, _ in _CONNECTION_OPTIONS if name != "debug"}
        fields["url"] = tuple(fields["url"] or ())
        return command(*args, conn=Connection(**fields), **kwargs)

    params = own + added
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


# --- options of some commands --------------------------------------------------------------

Json = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]
Wait = Annotated[
    float,
    typer.Option(
        help="Keep retrying for up to this many seconds while the database starts.",
        parser=seconds(),
    ),
]
LockWait = Annotated[
    float,
    typer.Option(
        help="Seconds to wait for another runner's migration lock before failing.",
        parser=seconds(),
    ),
]
LockTimeout = Annotated[
    float,
    typer.Option(
        help="lock_timeout per statement, in seconds: fail fast behind traffic.",
        parser=seconds(0.001),
    ),
]
StatementTimeout = Annotated[
    float, typer.Option(help="statement_timeout in seconds (0: none).", parser=seconds())
]
Retries = Annotated[
    int, typer.Option(help="Retries of a migration that hit lock_timeout (>= 0).", parser=whole(0))
]
Jobs = Annotated[
    int,
    typer.Option(
        help="Databases migrated in parallel (all, or several --url; >= 1).", parser=whole(1)
    ),
]
Env = Annotated[
    str | None,
    typer.Option(
        "--env",
        help="Environment: development (dev, local), test (testing, ci), staging (stage, "
        "preprod) or production (prod). Default: $APP_ENV, else development.",
    ),
]
Events = Annotated[
    str | None,
    typer.Option("--events", help="Write run events as JSON lines to this file ('-' for stderr)."),
]
MetricsFile = Annotated[
    Path | None,
    typer.Option(help="Write Prometheus textfile metrics here (node_exporter textfile collector)."),
]

DEFAULTS = {"lock_wait": DEFAULT_LOCK_WAIT, "lock_timeout": 5.0, "retries": 3, "jobs": 4}


def environment(env: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """``--env`` if given, else ``APP_ENV``: a documented name, or a usage error."""
    if env is not None:
        return settings.environment(env, "--env")
    return settings.environment(environ.get("APP_ENV"), "APP_ENV")


def outputs(events: str | None, metrics_file: Path | None) -> None:
    """Check, before any work, that the files a run will write can be written."""
    if events is not None and events != "-":
        files.check_target(Path(events), "--events")
    if metrics_file is not None:
        files.check_target(metrics_file, "--metrics-file")
