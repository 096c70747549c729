"""The ``migrate`` command line: parse, call ``alembic_common.runner``, render, exit.

This is the only module that prints or exits. Every failure becomes one line on stderr
(``migrate: error: ...``) with exit 2 for bad usage and 1 for operational failures;
``--debug`` adds the traceback. Known secrets are scrubbed from everything shown.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperGroup

from alembic_common import fleet, runner, services
from alembic_common.errors import MigrationError, UsageError
from alembic_common.locking import DEFAULT_LOCK_WAIT
from alembic_common.services import Service
from alembic_common.settings import HostOptions, Settings, explicit_url, mask, resolve

PROG = "migrate"


def secrets_in(argv: Sequence[str], environ: Mapping[str, str]) -> set[str]:
    """Every password the user may have handed us, so that no output can carry it."""
    from urllib.parse import urlsplit

    found: set[str] = set()
    urls = [
        v for k, v in environ.items() if k.endswith("DATABASE_URL") or k.endswith("DATABASE_URLS")
    ]
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if name == "--password":
            found.add(value)
        elif name == "--url":
            urls.append(value)
        elif name == "--password-file":
            with contextlib.suppress(OSError):
                found.update(Path(value).read_text().splitlines()[:1])
    for url in urls:
        for part in url.split(","):
            with contextlib.suppress(ValueError):
                found.add(urlsplit(part.strip()).password or "")
    found.add(environ.get("PGPASSWORD", ""))
    return {s for s in found if len(s) >= 3}


def redact(text: str, secrets: Iterable[str]) -> str:
    """Mask URL passwords and every known secret in ``text``."""
    text = mask(text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class OneLineErrors(TyperGroup):
    """A typer group whose every error is a single redacted line on stderr."""

    def main(self, args: Sequence[str] | None = None, *a: Any, **kw: Any) -> Any:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv or bool(os.environ.get("MIGRATE_DEBUG"))
        secrets = secrets_in(argv, os.environ)
        if not debug:  # library warnings would break the one-line error contract
            warnings.simplefilter("ignore")

        def fail(message: str, code: int) -> None:
            if debug:
                sys.stderr.write(redact(traceback.format_exc(), secrets))
            sys.stderr.write(redact(f"{PROG}: error: {message}", secrets).replace("\n", " ") + "\n")
            sys.exit(code)

        kw["standalone_mode"] = False
        try:
            code = super().main(argv, *a, **kw)
        except NoArgsIsHelpError as exc:
            sys.stdout.write((exc.ctx.get_help() if exc.ctx else "") + "\n")
            sys.exit(2)
        except ClickException as exc:
            hint = f" (see '{' '.join([PROG, *argv[:2]])} --help')" if len(argv) >= 2 else ""
            fail(exc.format_message() + hint, exc.exit_code)
        except MigrationError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:
            fail(
                f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1
            )
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help=(
        "Bring a service's PostgreSQL database to the right schema version.\n\n"
        "SERVICE is a folder under services/ (user, patient, appointment). Connection: --url, "
        "then <SERVICE>_DATABASE_URL, then DATABASE_URL, then --host/--port/--user/--password/"
        "--database (seed defaults), else an embedded PostgreSQL under .pgdata/. "
        "Exit codes: 0 ok, 1 operation failed, 2 bad usage."
    ),
)


ALL = "all"


@dataclass
class Context:
    service: Service | None  # None for "all"


def _service(ctx: typer.Context) -> Service:
    """The command's service; 'all' is refused by commands that work on one service."""
    service = ctx.ensure_object(Context).service
    if service is None:
        raise UsageError(f"'all' works with 'up' and 'status' only, not '{ctx.info_name}'")
    return service  # type: ignore[no-any-return]


def _is_all(ctx: typer.Context) -> bool:
    return ctx.ensure_object(Context).service is None


@app.callback()
def _main(
    ctx: typer.Context,
    service: Annotated[
        str,
        typer.Argument(
            metavar="SERVICE",
            help="Service name (a folder under services/), or 'all' for up/status.",
        ),
    ],
) -> None:
    ctx.obj = Context(None if service == ALL else services.get(service))


# --- connection options, shared by every command -----------------------------------------


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

    def settings(self, service: Service, url: str | None = None) -> Settings:
        """Resolve in the documented order, down to the embedded server (and say so)."""
        if url is None and len(self.url) > 1:
            raise UsageError(f"{service.name}: this command takes one --url, not {len(self.url)}")
        resolved = resolve(
            service.name,
            url=url or (self.url[0] if self.url else None),
            host=self._hosts(),
            password_file=self.password_file,
            connect_timeout=self.connect_timeout,
            root=service.path.parent.parent,
        )
        if resolved.embedded_dir is not None:
            _err(
                f"{service.name}: using the embedded PostgreSQL in {resolved.embedded_dir} "
                f"(database {resolved.database}); set --url or DATABASE_URL to use your own"
            )
        return resolved

    def explicit(self, service: Service) -> Settings | None:
        """The settings only if the user named a database; never the embedded default."""
        first = self.url[0] if self.url else None
        if explicit_url(service.name, url=first, host=self._hosts()) is None:
            return None
        return self.settings(service)

    def targets(self, service: Service) -> list[Settings]:
        """Every database of the service: --url given more than once, or <SERVICE>_DATABASE_URLS."""
        urls = list(self.url)
        if not urls:
            listed = os.environ.get(f"{service.name.upper()}_DATABASE_URLS", "")
            urls = [u.strip() for u in listed.split(",") if u.strip()]
        if len(urls) <= 1:
            return [self.settings(service, urls[0] if urls else None)]
        return [self.settings(service, u) for u in urls]


_CONNECTION_OPTIONS = [
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
    ("port", int | None, typer.Option(help="Database port (default 5432).")),
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
        typer.Option(help="Seconds before a connection attempt gives up.", min=1),
    ),
    ("debug", bool, typer.Option("--debug", help="Show the traceback of an error.")),
]


def with_connection(command: Callable[..., None]) -> Callable[..., None]:
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
    def wrapper(*args: Any, **kwargs: Any) -> None:
        kwargs.pop("debug", None)  # read from argv by OneLineErrors, before parsing can fail
        fields = {name: kwargs.pop(name) for name, _, _ in _CONNECTION_OPTIONS if name != "debug"}
        fields["url"] = tuple(fields["url"] or ())
        command(*args, conn=Connection(**fields), **kwargs)

    params = own + added
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


# --- output -------------------------------------------------------------------------------


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, default=str))


def _console() -> Any:
    from rich.console import Console

    # Piped output is never wrapped: a line is a record.
    width = None if sys.stdout.isatty() else 10_000
    return Console(highlight=False, soft_wrap=width is not None, width=width)


@dataclass(frozen=True)
class Reporter:
    """Turns runner events into short lines on stderr and, with --events, JSON lines.

    Picklable, so worker processes of 'all up' and multi-target runs report the same way.
    Each JSON line is one write to a file opened for appending: lines from several
    processes never interleave.
    """

    events: str | None = None
    quiet: bool = False

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.quiet:
            line = _describe(event)
            if line:
                _err(line)
        if self.events:
            record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), **event}
            text = mask(json.dumps(record, default=str)) + "\n"
            if self.events == "-":
                sys.stderr.write(text)
            else:
                with open(self.events, "a", encoding="utf-8") as sink:
                    sink.write(text)

    def emit(self, name: str, **fields: Any) -> None:
        self({"event": name, **fields})


def _describe(event: dict[str, Any]) -> str | None:
    """The human line for an event, if it deserves one."""
    kind = event["event"]
    svc = event.get("service", "")
    where = f" [{event['target']}]" if event.get("target") else ""
    if kind == "lock_wait":
        return f"waiting up to {event['wait_s']:g}s for the migration lock held by pid {event['holder_pid']}"
    if kind == "applied":
        return f"{svc}{where}: applied version {event['version']} ({event['duration_ms']} ms)"
    if kind == "rolled_back":
        return f"{svc}{where}: rolled back version {event['version']} ({event['duration_ms']} ms)"
    if kind == "adopted":
        return f"{svc}{where}: adopted legacy history {event['versions']} from schema_migrations"
    if kind == "backfill":
        filled = int(event["fraction"] * 20)
        eta = f", ETA {event['eta_s']:g}s" if event.get("eta_s") is not None else ""
        return (
            f"{svc}{where}: backfill {event['table']} [{'#' * filled}{'.' * (20 - filled)}] "
            f"{event['fraction']:.0%} {event['rows_done']:,} rows, {event['rows_per_s']:,} rows/s{eta}"
        )
    if kind == "lock_retry":
        return (
            f"{svc}{where}: version {event['version']} hit lock_timeout; retry {event['attempt']} "
            f"in {event['delay_s']:g}s"
        )
    return None


def _emit(result: runner.RunResult, as_json: bool) -> None:
    if as_json:
        _json(result.to_dict())
        return
    name = result.service
    held = (
        f"; version(s) {', '.join(map(str, result.held))} held for contract "
        "(run 'up --contract' once no old release is running)"
        if result.held
        else ""
    )
    if result.noop:
        typer.echo(f"{name}: at version {result.after}; nothing to do{held}")
        return
    if result.adopted and not result.steps:
        typer.echo(
            f"{name}: adopted the legacy history {result.adopted}; at version {result.after}{held}"
        )
        return
    verb = "applied" if result.action == "up" else "rolled back"
    steps = ", ".join(map(str, result.steps)) or "nothing"
    before, after = (v if v is not None else "empty" for v in (result.before, result.after))
    typer.echo(f"{name}: {before} -> {after} ({verb} {steps}){held}")


def _cause(exc: BaseException) -> str:
    """What an error says, for events and summaries (a bug says what kind it is)."""
    if isinstance(exc, MigrationError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def _environment(env: str | None) -> str:
    return (env or os.environ.get("APP_ENV") or "development").strip().lower()


# --- options specific to some commands ----------------------------------------------------

Json = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]
Wait = Annotated[
    float,
    typer.Option(
        help="Keep retrying for up to this many seconds while the database starts.", min=0
    ),
]
LockWait = Annotated[
    float,
    typer.Option(help="Seconds to wait for another runner's migration lock before failing.", min=0),
]
LockTimeout = Annotated[
    float,
    typer.Option(
        help="lock_timeout per statement, in seconds: fail fast behind traffic.", min=0.001
    ),
]
StatementTimeout = Annotated[
    float, typer.Option(help="statement_timeout in seconds (0: none).", min=0)
]
Retries = Annotated[int, typer.Option(help="Retries of a migration that hit lock_timeout.", min=0)]
Env = Annotated[
    str | None,
    typer.Option("--env", help="Environment name (default: $APP_ENV, else development)."),
]


# --- commands -----------------------------------------------------------------------------


Events = Annotated[
    str | None,
    typer.Option("--events", help="Write run events as JSON lines to this file ('-' for stderr)."),
]
MetricsFile = Annotated[
    Path | None,
    typer.Option(help="Write Prometheus textfile metrics here (node_exporter textfile collector)."),
]
Jobs = Annotated[
    int, typer.Option(help="Databases migrated in parallel (all, or several --url).", min=1)
]


@app.command()
@with_connection
def up(
    ctx: typer.Context,
    conn: Connection,
    version: Annotated[
        int | None, typer.Option("--version", help="Apply up to and including this version.")
    ] = None,
    wait: Wait = 0,
    lock_wait: LockWait = DEFAULT_LOCK_WAIT,
    lock_timeout: LockTimeout = 5.0,
    statement_timeout: StatementTimeout = 0,
    retries: Retries = 3,
    atomic: Annotated[
        bool,
        typer.Option("--atomic", help="Apply the whole batch in one transaction: all or none."),
    ] = False,
    contract: Annotated[
        bool,
        typer.Option(
            "--contract",
            help="Also run contract steps (drop/rename old columns): only once no old release runs.",
        ),
    ] = False,
    jobs: Jobs = 4,
    events: Events = None,
    metrics_file: MetricsFile = None,
    as_json: Json = False,
) -> None:
    """Apply pending migrations (all, or up to --version); 'all up' does every service in order."""
    options = runner.RunOptions(
        wait=wait,
        lock_wait=lock_wait,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        retries=retries,
        atomic=atomic,
        contract=contract,
    )
    reporter = Reporter(events, quiet=as_json)
    if _is_all(ctx):
        if version is not None or conn.url:
            raise UsageError(
                "'all up' takes neither --version nor --url: each service uses its own settings"
            )
        _all_up(conn, options, jobs, reporter, metrics_file, as_json)
        return
    service = _service(ctx)
    if version is not None:  # usage errors come before any connection is made
        runner.check_version(service, service.disk_versions(), version)
    targets = conn.targets(service)
    started = time.time()
    reporter.emit(
        "run_started", action="up", service=service.name, targets=[t.label for t in targets]
    )
    if len(targets) > 1:
        jobs_list = [fleet.Job(service.name, t, version) for t in targets]
        outcomes = _fleet(
            jobs_list, fleet.up_work, jobs, reporter, stop_on_failure=False, options=options
        )
        _finish(reporter, "up", outcomes, started, metrics_file, as_json)
        return
    try:
        result = runner.up(service, targets[0], version, options, reporter)
    except Exception as exc:
        outcome = fleet.Outcome(
            service.name,
            targets[0].display,
            "failed",
            error=_cause(exc),
            exit_code=getattr(exc, "exit_code", 1),
            seconds=time.time() - started,
        )
        _record(reporter, "up", [(targets[0], outcome)], started, metrics_file)
        raise
    outcome = fleet.Outcome(
        service.name, targets[0].display, "ok", result.to_dict(), seconds=time.time() - started
    )
    _record(reporter, "up", [(targets[0], outcome)], started, metrics_file)
    _emit(result, as_json)


def _fleet(
    jobs_list: list[fleet.Job],
    work: Any,
    parallel: int,
    reporter: Reporter,
    *,
    stop_on_failure: bool,
    **extra: Any,
) -> list[tuple[Settings, fleet.Outcome]]:
    """Run jobs with a progress bar on stderr; pair each outcome with its target."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # No auto-refresh thread: workers are forked, and a thread holding a lock at fork time
    # would leave that lock held forever in the child.
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
        transient=True,
        disable=reporter.quiet or not sys.stderr.isatty(),
    )
    with bar:
        task = bar.add_task("databases", total=len(jobs_list))

        def advance(index: int, outcome: fleet.Outcome) -> None:
            bar.advance(task)
            bar.refresh()

        root = Path(services.services_dir()).parent
        outcomes = fleet.run(
            jobs_list,
            work,
            root=root,
            parallel=parallel,
            stop_on_failure=stop_on_failure,
            progress=reporter,
            on_outcome=advance,
            **extra,
        )
    return list(zip([j.settings for j in jobs_list], outcomes, strict=True))


def _record(
    reporter: Reporter,
    action: str,
    pairs: list[tuple[Settings, fleet.Outcome]],
    started: float,
    metrics_file: Path | None,
) -> None:
    """Emit failure and finish events, and write the metrics file."""
    for settings, outcome in pairs:
        if not outcome.ok:
            reporter.emit(
                "failed",
                action=action,
                service=outcome.service,
                target=settings.label,
                state=outcome.state,
                cause=outcome.error,
            )
    ok = all(o.ok for _, o in pairs)
    reporter.emit(
        "run_finished",
        action=action,
        ok=ok,
        seconds=round(time.time() - started, 3),
        failed=sum(not o.ok for _, o in pairs),
        targets=len(pairs),
    )
    if metrics_file is not None:
        _write_metrics(metrics_file, pairs)


def _write_metrics(path: Path, pairs: list[tuple[Settings, fleet.Outcome]]) -> None:
    """Re-read each target's state and write the textfile atomically (rename into place)."""
    from alembic_common import metrics

    samples = []
    for settings, outcome in pairs:
        service = services.get(outcome.service)
        head = service.head
        try:
            report = runner.status(service, settings)
            current, pending = report.current, len(report.pending)
        except MigrationError:
            current, pending = None, None
        samples.append(
            metrics.Sample(
                service.name,
                settings.label,
                current,
                head,
                pending,
                outcome.ok,
                outcome.seconds,
                time.time(),
            )
        )
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(metrics.render(samples))
    temporary.replace(path)


def _finish(
    reporter: Reporter,
    action: str,
    pairs: list[tuple[Settings, fleet.Outcome]],
    started: float,
    metrics_file: Path | None,
    as_json: bool,
) -> None:
    """Summarise a fleet run per target; exit 1 if any target failed."""
    _record(reporter, action, pairs, started, metrics_file)
    if as_json:
        _json(
            {
                "action": action,
                "ok": all(o.ok for _, o in pairs),
                "targets": [{"target": s.label, **o.to_dict()} for s, o in pairs],
            }
        )
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"{action}: {len(pairs)} database(s)", title_justify="left")
        for column in ("service", "target", "result", "versions", "seconds", "detail"):
            table.add_column(column, overflow="fold")
        for settings, o in pairs:
            r = o.result or {}
            before, after = (
                ("empty" if v is None else v) for v in (r.get("before"), r.get("after"))
            )
            moved = f"{before} -> {after}" if r else "-"
            table.add_row(
                o.service, settings.label, o.state, moved, f"{o.seconds:.2f}", escape(o.error or "")
            )
        _console().print(table)
    failed = [o for _, o in pairs if not o.ok]
    if failed:
        worst = max(o.exit_code for o in failed) or 1
        raise typer.Exit(worst)


def _platform_targets(conn: Connection, known: dict[str, Service]) -> dict[str, Settings]:
    """Each service's own database; two services resolving to one database is refused."""
    targets = {name: conn.settings(service) for name, service in known.items()}
    seen: dict[tuple[str, int, str], str] = {}
    for name, target in targets.items():
        key = (target.host, target.port, target.database)
        if key in seen:
            raise UsageError(
                f"{seen[key]} and {name} both resolve to the database {target.label}: each service "
                f"needs its own (set {name.upper()}_DATABASE_URL; DATABASE_URL names one database)"
            )
        seen[key] = name
    return targets


def _all_up(
    conn: Connection,
    options: runner.RunOptions,
    jobs: int,
    reporter: Reporter,
    metrics_file: Path | None,
    as_json: bool,
) -> None:
    """Every service to head, in dependency order, independent ones in parallel."""
    from alembic_common import deps

    known = services.discover()
    targets = _platform_targets(conn, known)
    pending = {}
    for name, service in known.items():
        report = runner.status(service, targets[name])
        pending[name] = report.pending
    started = time.time()
    reporter.emit(
        "run_started", action="up", service=ALL, targets=[t.label for t in targets.values()]
    )
    segments = deps.segments(known, pending)
    jobs_list = [
        fleet.Job(seg.service, targets[seg.service], seg.target, frozenset(seg.after))
        for seg in segments
    ]
    done = _fleet(jobs_list, fleet.up_work, jobs, reporter, stop_on_failure=True, options=options)
    per_service = {name: [o for _, o in done if o.service == name] for name in known}
    pairs = [
        (targets[name], fleet.merge(name, targets[name], found, known[name].head))
        for name, found in per_service.items()
    ]
    _finish(reporter, "up", pairs, started, metrics_file, as_json)


@app.command()
@with_connection
def down(
    ctx: typer.Context,
    conn: Connection,
    version: Annotated[
        int | None, typer.Option("--version", help="Roll back this version and every later one.")
    ] = None,
    env: Env = None,
    allow_production: Annotated[
        bool,
        typer.Option(
            "--allow-production", help="Permit 'down' when the environment is production."
        ),
    ] = False,
    lock_wait: LockWait = DEFAULT_LOCK_WAIT,
    lock_timeout: LockTimeout = 5.0,
    statement_timeout: StatementTimeout = 0,
    retries: Retries = 3,
    events: Events = None,
    metrics_file: MetricsFile = None,
    as_json: Json = False,
) -> None:
    """Roll back --version N and every later version, newest first (development only)."""
    service = _service(ctx)
    if version is None:
        raise UsageError(
            f"{service.name}: down needs --version N (the oldest version to roll back)",
            service=service.name,
        )
    options = runner.RunOptions(
        lock_wait=lock_wait,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        retries=retries,
        environment=_environment(env),
        allow_production=allow_production,
    )
    # Usage errors and the production guard come before any connection is made.
    runner.check_version(service, service.disk_versions(), version)
    runner.refuse_production(service, "down", options)
    settings = conn.settings(service)
    reporter = Reporter(events, quiet=as_json)
    started = time.time()
    reporter.emit("run_started", action="down", service=service.name, targets=[settings.label])
    try:
        result = runner.down(service, settings, version, options, reporter)
    except Exception as exc:
        failed = fleet.Outcome(
            service.name,
            settings.display,
            "failed",
            error=_cause(exc),
            exit_code=getattr(exc, "exit_code", 1),
            seconds=time.time() - started,
        )
        _record(reporter, "down", [(settings, failed)], started, metrics_file)
        raise
    done = fleet.Outcome(
        service.name, settings.display, "ok", result.to_dict(), seconds=time.time() - started
    )
    _record(reporter, "down", [(settings, done)], started, metrics_file)
    _emit(result, as_json)


@app.command()
@with_connection
def status(
    ctx: typer.Context,
    conn: Connection,
    jobs: Jobs = 4,
    metrics_file: MetricsFile = None,
    as_json: Json = False,
) -> None:
    """List every version with its state; exit 1 if the database is ahead or inconsistent.

    'all status' shows every service in one table and exits 1 if any is behind, ahead,
    inconsistent or waiting on another service.
    """
    if _is_all(ctx):
        if conn.url:
            raise UsageError(
                "'all status' takes no --url: each service uses its own settings "
                "(<SERVICE>_DATABASE_URL)"
            )
        _all_status(conn, metrics_file, as_json)
        return
    service = _service(ctx)
    targets = conn.targets(service)
    if len(targets) > 1:
        jobs_list = [fleet.Job(service.name, t) for t in targets]
        pairs = _fleet(
            jobs_list, fleet.status_work, jobs, Reporter(quiet=True), stop_on_failure=False
        )
        _print_target_status(service, pairs, as_json)
        if metrics_file is not None:
            _write_metrics(metrics_file, pairs)
        if not all(o.ok and not o.result["unknown"] and o.result["consistent"] for _, o in pairs):
            raise typer.Exit(1)
        return
    report = runner.status(service, targets[0])
    if metrics_file is not None:
        _write_metrics(
            metrics_file, [(targets[0], fleet.Outcome(service.name, targets[0].display, "ok"))]
        )
    if as_json:
        _json(report.to_dict())
    else:
        _print_status(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_target_status(
    service: Service, pairs: list[tuple[Settings, fleet.Outcome]], as_json: bool
) -> None:
    if as_json:
        _json(
            {
                "service": service.name,
                "head": service.head,
                "targets": [{"target": s.label, **o.to_dict()} for s, o in pairs],
            }
        )
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"{service.name}: {len(pairs)} database(s), head {service.head}", title_justify="left"
    )
    for column in ("target", "current", "pending", "state"):
        table.add_column(column)
    for settings, o in pairs:
        r = o.result or {}
        state = o.error or ("ahead" if r.get("unknown") else r.get("problem") or "ok")
        table.add_row(
            settings.label,
            str(r.get("current", "-")),
            str(r.get("pending", "-")),
            escape(str(state)),
        )
    _console().print(table)


def _platform_state(row: dict[str, Any]) -> str:
    """One service's state in words, worst first."""
    if row["unknown"]:
        return f"AHEAD {row['unknown']}"
    if row["problem"]:
        return str(row["problem"])
    if row["unmet"]:
        return "; ".join(row["unmet"])
    if set(row["pending"]) - set(row["held"]):
        return "behind"
    if row["held"]:
        return f"at head but contract {row['held']} held ('up --contract')"
    return "at head"


def _all_status(conn: Connection, metrics_file: Path | None, as_json: bool) -> None:
    """One table for the whole platform: versions, pending work and unmet requirements."""
    from alembic_common import deps

    known = services.discover()
    deps.graph(known)  # declared dependencies are valid and acyclic
    targets = _platform_targets(conn, known)
    rows = []
    for name, service in known.items():
        try:
            report = runner.status(service, targets[name])
        except MigrationError as exc:
            rows.append(
                {"service": name, "database": targets[name].display, "error": str(exc), "ok": False}
            )
            continue
        runnable = [v for v in report.pending if v not in report.held]
        waiting = [
            str(u) for u in deps.unmet(service, runnable, lambda other: targets[other], known)
        ]
        behind = report.behind
        rows.append(
            {
                "service": name,
                "database": report.database,
                "current": report.current,
                "head": report.head,
                "pending": report.pending,
                "unknown": report.unknown,
                "problem": report.problem,
                "legacy": report.legacy,
                "unmet": waiting,
                "held": report.held,
                "ok": report.ok and not behind and not waiting,
            }
        )
    if metrics_file is not None:
        pairs = [
            (
                targets[r["service"]],
                fleet.Outcome(
                    r["service"],
                    targets[r["service"]].display,
                    "ok" if "error" not in r else "failed",
                ),
            )
            for r in rows
        ]
        _write_metrics(metrics_file, pairs)
    if as_json:
        _json({"ok": all(r["ok"] for r in rows), "services": rows})
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="platform", title_justify="left")
        for column in ("service", "current", "head", "pending", "state"):
            table.add_column(column)
        for r in rows:
            if "error" in r:
                table.add_row(r["service"], "-", "-", "-", escape(r["error"]))
                continue
            state = _platform_state(r)
            current = "-" if r["current"] is None else str(r["current"])
            table.add_row(
                r["service"],
                current,
                str(r["head"]),
                escape(str(r["pending"] or "-")),
                escape(state),
            )
        _console().print(table)
    if not all(r["ok"] for r in rows):
        raise typer.Exit(1)


@app.command()
@with_connection
def seed(
    ctx: typer.Context,
    conn: Connection,
    profile: Annotated[
        str, typer.Option(help="Seed profile: a file in services/<name>/seeds/.")
    ] = "demo",
    env: Env = None,
    allow_production: Annotated[
        bool,
        typer.Option(
            "--allow-production", help="Permit seeding when the environment is production."
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Load idempotent demo data; running it twice changes nothing the second time."""
    from alembic_common import seeding

    service = _service(ctx)
    options = runner.RunOptions(environment=_environment(env), allow_production=allow_production)
    runner.refuse_production(service, "seed", options)
    seeding.load(service, profile)  # a missing profile is a usage error, before connecting
    result = seeding.seed(service, conn.settings(service), profile, options)
    if as_json:
        _json(result.to_dict())
    else:
        typer.echo(f"{service.name}: seed {profile!r} inserted {result.inserted} row(s)")


def _print_status(report: runner.Status) -> None:
    from rich.markup import escape
    from rich.table import Table

    current = report.current if report.current is not None else "-"
    table = Table(
        title=f"{report.service}: version {current} of {report.head}", title_justify="left"
    )
    for column in ("version", "state", "applied at", "description"):
        table.add_column(column, justify="right" if column == "version" else "left")
    for m in report.migrations:
        state = "applied" if m.applied else "[yellow]pending[/]"
        if m.version in report.held:
            state = "[cyan]held (contract)[/]"
        applied_at = m.applied_at[:19].replace("T", " ") if m.applied_at else "-"
        table.add_row(str(m.version), state, applied_at, escape(m.description))
    console = _console()
    console.print(f"database: {report.database}", markup=False)
    console.print(table)
    if report.legacy:
        console.print(
            "note: made by the previous migration system (no alembic_version); 'up' will adopt it"
        )
    if report.unknown:
        console.print(
            f"[red]AHEAD[/]: the database has versions this code does not know: {report.unknown}"
        )
    if report.problem:
        console.print(f"[red]INCONSISTENT[/]: {report.problem}", markup=True)
    if report.renamed:
        console.print(
            f"note: the recorded description of version(s) {report.renamed} differs from "
            "the code's docstring"
        )


@app.command()
@with_connection
def revision(
    ctx: typer.Context,
    conn: Connection,
    message: Annotated[str, typer.Option("--message", "-m", help="What the migration does.")],
    autogenerate: Annotated[
        bool, typer.Option("--autogenerate", help="Fill it in from the models' differences.")
    ] = False,
) -> None:
    """Write the next numbered migration file (0005_add_patient_allergies.py)."""
    from alembic_common import authoring

    service = _service(ctx)
    settings = conn.explicit(service) if autogenerate else None
    path = authoring.revision(service, message, autogenerate=autogenerate, settings=settings)
    typer.echo(str(path))


@app.command()
@with_connection
def check(ctx: typer.Context, conn: Connection, as_json: Json = False) -> None:
    """Exit 0 when a database at head matches the models (and, with --url, the migrations)."""
    from alembic_common import authoring

    service = _service(ctx)
    result = authoring.compare(service, conn.explicit(service))
    if as_json:
        _json(result.to_dict())
    else:
        _print_comparison(result)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
@with_connection
def diff(ctx: typer.Context, conn: Connection, as_json: Json = False) -> None:
    """Print what would bring the database to match the models (and the migrations)."""
    from alembic_common import authoring

    service = _service(ctx)
    result = authoring.compare(service, conn.explicit(service), operations=True)
    if as_json:
        _json(result.to_dict())
        return
    _print_comparison(result)
    if result.operations:
        typer.echo("\n# Alembic operations to match the models:")
        typer.echo(result.operations)
    if result.schema_drift:
        typer.echo("\n-- SQL to match what the migrations make:")
        for drift in result.schema_drift:
            typer.echo(drift.sql())


def _print_comparison(result: Any) -> None:
    where = f"{result.service} ({result.database}, version {result.version}, head {result.head})"
    if result.version != result.head:
        typer.echo(f"{where}: not at head; run 'up' first")
    for line in result.model_differences:
        typer.echo(f"models vs database: {line}")
    for drift in result.schema_drift:
        typer.echo(f"migrations vs database: {drift.describe()}")
    if result.ok:
        typer.echo(f"{where}: the database matches the models")


@app.command()
@with_connection
def plan(
    ctx: typer.Context,
    conn: Connection,
    version: Annotated[
        int | None,
        typer.Option("--version", help="Plan up to (or with --down, back to) this version."),
    ] = None,
    to_down: Annotated[
        bool, typer.Option("--down", help="Plan the rollback of --version and later.")
    ] = False,
    contract: Annotated[
        bool, typer.Option("--contract", help="Include contract steps, as 'up --contract' would.")
    ] = False,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print a plain SQL script instead of a table.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Show the exact SQL that up (or down) would run, with each statement's lock. Changes nothing."""
    from alembic_common import authoring
    from alembic_common import plan as planning

    service = _service(ctx)
    disk = service.disk_versions()
    if version is not None:
        runner.check_version(service, disk, version)
    if to_down and version is None:
        raise UsageError(f"{service.name}: plan --down needs --version N", service=service.name)
    settings = conn.explicit(service)
    current = (
        authoring.current_version(service, settings)
        if settings
        else (max(disk) if to_down else None)
    )
    if to_down:
        below = [v for v in disk if v < version]  # type: ignore[operator]
        start, end = current, (below[-1] if below else None)
    else:
        start, end = current, (version if version is not None else max(disk))
        # Plan what 'up' would run: it holds contract steps back unless --contract.
        steps = [m.version for m in service.migrations if m.phase == "contract"]
        wanted = [v for v in disk if (start or 0) < v <= end]
        runnable, _ = runner.split_held(wanted, steps, contract)
        end = runnable[-1] if runnable else start
    if (start or 0) == (end or 0) or (not to_down and (start or 0) > (end or 0)):
        result = planning.Plan(service.name, "down" if to_down else "up", start, end, [], [])
    else:
        result = planning.plan(service, start, end, down=to_down)
        if settings is not None:
            estimates = authoring.table_estimates(settings, planning.tables_named(result))
            for vp in result.versions:
                for st in vp.statements:
                    st.rows = estimates.get(st.table) if st.table else None
    if as_json:
        _json(result.to_dict())
    elif sql:
        typer.echo(result.sql(), nl=False)
    else:
        _print_plan(result)


def _print_plan(result: Any) -> None:
    from rich.table import Table

    console = _console()
    if not result.versions:
        console.print(f"{result.service}: nothing to {result.direction} (at {result.start})")
        return
    for vp in result.versions:
        table = Table(
            title=f"{result.service} {vp.direction} version {vp.version}: {vp.description}",
            title_justify="left",
            show_lines=True,
        )
        table.add_column("statement", overflow="fold", ratio=3)
        table.add_column("lock", ratio=1)
        table.add_column("rows (est.)", justify="right")
        for st in vp.statements:
            lock = "-" if st.lock == "-" else f"{st.lock} on {st.table}\n{st.effect}"
            rows = "-" if st.rows is None else f"{st.rows:,}"
            table.add_row(st.sql, lock, rows)
        console.print(table, markup=False)


@app.command()
@with_connection
def lint(
    ctx: typer.Context,
    conn: Connection,
    all_versions: Annotated[
        bool, typer.Option("--all", help="Lint every migration, not only pending ones.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Run squawk over the SQL of pending (or all) migrations; exit 1 on unaccepted findings."""
    from alembic_common import authoring
    from alembic_common import plan as planning

    service = _service(ctx)
    disk = service.disk_versions()
    settings = None if all_versions else conn.explicit(service)
    current = authoring.current_version(service, settings) if settings else None
    versions = [v for v in disk if current is None or v > current]
    findings = planning.lint(service, versions)
    rejected = [f for f in findings if f.accepted is None]
    if as_json:
        _json(
            {
                "service": service.name,
                "versions": versions,
                "findings": [f.__dict__ for f in findings],
                "ok": not rejected,
            }
        )
    else:
        for f in findings:
            first = " ".join(f.statement.split())[:100]
            if f.accepted:
                typer.echo(f"{service.name} {f.version}: accepted {f.rule}: {f.accepted}")
            else:
                typer.echo(f"{service.name} {f.version}: {f.rule}: {f.message}\n    {first}")
        verdict = "clean" if not rejected else f"{len(rejected)} finding(s) to fix or accept"
        typer.echo(f"{service.name}: linted versions {versions or 'none'}: {verdict}")
    if rejected:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app(prog_name=PROG)
