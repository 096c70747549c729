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
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperGroup

from alembic_common import runner, services
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


@dataclass
class Context:
    service: Service


def _service(ctx: typer.Context) -> Service:
    return ctx.ensure_object(Context).service  # type: ignore[no-any-return]


@app.callback()
def _main(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="Service name: a folder under services/.")],
) -> None:
    ctx.obj = Context(services.get(service))


# --- connection options, shared by every command -----------------------------------------


@dataclass(frozen=True)
class Connection:
    """The connection flags as typed; resolved only when a command needs a database."""

    url: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    password_file: Path | None = None
    database: str | None = None
    connect_timeout: int = 10

    def _hosts(self) -> HostOptions:
        return HostOptions(self.host, self.port, self.user, self.password, self.database)

    def settings(self, service: Service) -> Settings:
        """Resolve in the documented order, down to the embedded server (and say so)."""
        resolved = resolve(
            service.name,
            url=self.url,
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
        if explicit_url(service.name, url=self.url, host=self._hosts()) is None:
            return None
        return self.settings(service)


_CONNECTION_OPTIONS = [
    (
        "url",
        str | None,
        typer.Option("--url", help="postgresql:// or postgres:// URL; overrides the environment."),
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
    defaults = {f.name: f.default for f in Connection.__dataclass_fields__.values()} | {
        "debug": False
    }
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

    return Console(highlight=False, soft_wrap=False)


def _progress(event: dict[str, Any]) -> None:
    """Render runner events as short lines on stderr."""
    kind = event["event"]
    svc = event.get("service", "")
    if kind == "lock_wait":
        _err(
            f"waiting up to {event['wait_s']:g}s for the migration lock held by pid {event['holder_pid']}"
        )
    elif kind == "applied":
        _err(f"{svc}: applied version {event['version']} ({event['duration_ms']} ms)")
    elif kind == "rolled_back":
        _err(f"{svc}: rolled back version {event['version']} ({event['duration_ms']} ms)")
    elif kind == "adopted":
        _err(f"{svc}: adopted legacy history {event['versions']} from schema_migrations")
    elif kind == "lock_retry":
        _err(
            f"{svc}: version {event['version']} hit lock_timeout; retry {event['attempt']} "
            f"in {event['delay_s']:g}s"
        )


def _emit(result: runner.RunResult, as_json: bool) -> None:
    if as_json:
        _json(result.to_dict())
        return
    name = result.service
    if result.noop:
        typer.echo(f"{name}: at version {result.after}; nothing to do")
        return
    verb = "applied" if result.action == "up" else "rolled back"
    steps = ", ".join(map(str, result.steps)) or "nothing"
    before, after = (v if v is not None else "empty" for v in (result.before, result.after))
    typer.echo(f"{name}: {before} -> {after} ({verb} {steps})")


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
    as_json: Json = False,
) -> None:
    """Apply pending migrations (all, or up to --version)."""
    service = _service(ctx)
    if version is not None:  # usage errors come before any connection is made
        runner.check_version(service, service.disk_versions(), version)
    options = runner.RunOptions(
        wait=wait,
        lock_wait=lock_wait,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        retries=retries,
        atomic=atomic,
    )
    _emit(runner.up(service, conn.settings(service), version, options, _progress), as_json)


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
    _emit(runner.down(service, conn.settings(service), version, options, _progress), as_json)


@app.command()
@with_connection
def status(ctx: typer.Context, conn: Connection, as_json: Json = False) -> None:
    """List every version with its state; exit 1 if the database is ahead or inconsistent."""
    service = _service(ctx)
    report = runner.status(service, conn.settings(service))
    if as_json:
        _json(report.to_dict())
    else:
        _print_status(report)
    if not report.ok:
        raise typer.Exit(1)


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
