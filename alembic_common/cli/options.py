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
from pathlib import Path
from typing import Annotated, Any

import typer

from alembic_common.cli.connection import Connection
from alembic_common.core import settings
from alembic_common.core.locking import DEFAULT_LOCK_WAIT
from alembic_common.fleets import targets
from alembic_common.safety import files

# --- value parsers -------------------------------------------------------------------------


def _ascii(value: object) -> str:
    """A number as typed: ASCII only (Python's int() and float() also read other scripts'
    digits, which no other tool reading the same setting would)."""
    text = str(value)
    if not text.isascii():
        raise ValueError(text)
    return text


def seconds(minimum: float = 0.0, unit: str = "seconds") -> Callable[[str], float]:
    """A parser of a finite number of seconds (or of ``unit``), at least ``minimum``."""

    def parse(value: str) -> float:
        try:
            number = float(_ascii(value))
        except (TypeError, ValueError):
            raise typer.BadParameter(f"is not a number of {unit} (ASCII digits 0-9)") from None
        if not math.isfinite(number):
            raise typer.BadParameter(f"must be a finite number of {unit}")
        if number < minimum:
            raise typer.BadParameter(f"must be at least {minimum:g}")
        return number

    parse.__name__ = unit  # what --help shows: '--lock-wait <seconds>'
    return parse


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A parser of a whole number within ``minimum``..``maximum``."""

    def parse(value: str) -> int:
        try:
            number = int(_ascii(value).strip())
        except (TypeError, ValueError):
            raise typer.BadParameter("is not a whole number (ASCII digits 0-9)") from None
        if number < minimum or (maximum is not None and number > maximum):
            span = f"{minimum}-{maximum}" if maximum is not None else f"at least {minimum}"
            raise typer.BadParameter(f"must be {span}")
        return number

    parse.__name__ = "integer"
    return parse


# --- connection ----------------------------------------------------------------------------


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
    (
        "show_data",
        bool,
        typer.Option(
            "--show-data",
            help="Show server messages as they are, values from rows included (by default "
            "every value a message quotes is ***; a warning on stderr says they are shown).",
        ),
    ),
]


def with_connection(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared connection options, gathered into ``conn: Connection``."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "conn"]
    defaults = dict(Connection._field_defaults)
    defaults |= {"debug": False, "show_data": False, "url": None}
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
        for frames in ("debug", "show_data"):  # read from argv by the frame, before parsing
            kwargs.pop(frames, None)
        fields = {
            name: kwargs.pop(name)
            for name, _, _ in _CONNECTION_OPTIONS
            if name not in ("debug", "show_data")
        }
        fields["url"] = tuple(fields["url"] or ())
        return command(*args, conn=Connection(**fields), **kwargs)

    params = own + added
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


# --- options of some commands --------------------------------------------------------------

VERSION_PARSER = whole(0)  # a version number: ASCII digits; check_version says if it exists

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

# --- fleets: where the targets come from, which of them, and how they are rolled out -------

TargetsFile = Annotated[
    Path | None,
    typer.Option(
        "--targets-file",
        metavar="FILE",
        help="The databases to run against: one postgresql:// URL or name=URL a line; "
        "'#' starts a comment.",
        rich_help_panel="Fleet",
    ),
]
RegistryUrl = Annotated[
    str | None,
    typer.Option(
        "--registry-url",
        metavar="URL",
        help="A control database holding the tenant registry (with --registry-query).",
        rich_help_panel="Fleet",
    ),
]
RegistryQuery = Annotated[
    str | None,
    typer.Option(
        "--registry-query",
        metavar="SQL",
        help="Lists the tenants, read-only: columns name and url, or name, host, port and "
        "database. No passwords in it: use PGPASSFILE or PGPASSWORD.",
        rich_help_panel="Fleet",
    ),
]
Shard = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N|auto",
        help="Take shard I of N (a stable hash of each target); auto: JOB_COMPLETION_INDEX "
        "of JOB_COMPLETIONS, as in a Kubernetes Indexed Job.",
        rich_help_panel="Fleet",
    ),
]
Only = Annotated[
    Path | None,
    typer.Option(
        "--only",
        metavar="REPORT",
        help="Rerun only the targets an earlier --json report lists as failed, not run or skipped.",
        rich_help_panel="Fleet",
    ),
]
PerHost = Annotated[
    int,
    typer.Option(
        "--per-host",
        help="Migrations at once on one PostgreSQL server (host:port), >= 1.",
        parser=whole(1),
        rich_help_panel="Fleet",
    ),
]
Canary = Annotated[
    str | None,
    typer.Option(
        "--canary",
        metavar="N|P%",
        help="Migrate this many targets (or percent) first; if any fails, stop there.",
        rich_help_panel="Fleet",
    ),
]
WaveSize = Annotated[
    int | None,
    typer.Option(
        "--wave-size",
        help="Then migrate the rest in waves of this many (default: all at once).",
        parser=whole(1),
        rich_help_panel="Fleet",
    ),
]
MaxFailures = Annotated[
    str | None,
    typer.Option(
        "--max-failures",
        metavar="N|P%",
        help="Start no new work once more targets than this (or percent) have failed; "
        "running work finishes (default: no limit).",
        rich_help_panel="Fleet",
    ),
]
MetricsPerTarget = Annotated[
    bool,
    typer.Option(
        "--metrics-per-target",
        help="With --metrics-file over many targets: also write one series per target "
        "(the default is aggregates per service).",
        rich_help_panel="Fleet",
    ),
]


def share(text: str | None, option: str) -> str | None:
    """Check a count-or-percent option when parsed (its value needs the target count)."""
    if text is not None:
        targets.limit(text, 100, option)
    return text


DEFAULTS = {"lock_wait": DEFAULT_LOCK_WAIT, "lock_timeout": 5.0, "retries": 3, "jobs": 4}


def environment(env: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """``--env`` if given, else ``APP_ENV``: a documented name, or a usage error."""
    if env is not None:
        return settings.environment(env, "--env")
    return settings.environment(environ.get("APP_ENV"), "APP_ENV")


def outputs(events: str | None, metrics_file: Path | None) -> None:
    """Check, before any work, that the files a run will write can be written."""
    if events is not None and events != "-":
        files.check_target(Path(events), "--events", replaced=False)
    if metrics_file is not None:
        files.check_target(metrics_file, "--metrics-file")


# --- how up runs its steps (also rehearse's) ------------------------------------------

Atomic = Annotated[
    bool,
    typer.Option("--atomic", help="Apply the whole batch in one transaction: all or none."),
]
Contract = Annotated[
    bool,
    typer.Option(
        "--contract",
        help="Run contract steps even while sessions announce an older release "
        "(application_name SERVICE@VERSION); a plain 'up' runs them once none does.",
    ),
]
HoldContract = Annotated[
    bool,
    typer.Option(
        "--hold-contract",
        help="Hold contract steps even when no old release is connected; later steps "
        "then make 'up' exit 1.",
    ),
]
AcceptChanged = Annotated[
    bool,
    typer.Option(
        "--accept-changed",
        help="Build on applied steps whose SQL changed since they ran, and record them as accepted.",
    ),
]
