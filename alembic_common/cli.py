"""The ``migrate`` command line: parse, call ``alembic_common.runner``, render, exit.

This is the only module that prints or exits. Every failure becomes one line on stderr
(``migrate: error: ...``) with exit 2 for bad usage and 1 for operational failures;
``--debug`` adds the traceback. Known secrets are scrubbed from everything shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
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
from alembic_common.settings import HostOptions, Settings, mask, resolve

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


# Options shared by every command; each command lists the ones it takes.
Url = Annotated[
    str | None,
    typer.Option("--url", help="postgresql:// or postgres:// URL (overrides the environment)."),
]
Host = Annotated[str | None, typer.Option(help="Database host (default localhost).")]
Port = Annotated[int | None, typer.Option(help="Database port (default 5432).")]
User = Annotated[str | None, typer.Option(help="Database user (default postgres).")]
Password = Annotated[
    str | None,
    typer.Option(help="Password (default postgres). Prefer PGPASSWORD or --password-file."),
]
PasswordFile = Annotated[
    Path | None, typer.Option(help="Read the password from this file's first line.")
]
Database = Annotated[str | None, typer.Option(help="Database name (default <service>_service_db).")]
ConnectTimeout = Annotated[
    int, typer.Option(help="Seconds to wait for a TCP connection before giving up.", min=1)
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
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


def _settings(
    service: Service,
    url: str | None,
    host: str | None,
    port: int | None,
    user: str | None,
    password: str | None,
    password_file: Path | None,
    database: str | None,
    connect_timeout: int,
) -> Settings:
    resolved = resolve(
        service.name,
        url=url,
        host=HostOptions(host, port, user, password, database),
        password_file=password_file,
        connect_timeout=connect_timeout,
        root=service.path.parent.parent,
    )
    if resolved.embedded_dir is not None:
        _err(
            f"{service.name}: using the embedded PostgreSQL in {resolved.embedded_dir} "
            f"(database {resolved.database}); set --url or DATABASE_URL to use your own"
        )
    return resolved


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


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
        typer.echo(json.dumps(result.to_dict()))
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


@app.command()
def up(
    ctx: typer.Context,
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
    url: Url = None,
    host: Host = None,
    port: Port = None,
    user: User = None,
    password: Password = None,
    password_file: PasswordFile = None,
    database: Database = None,
    connect_timeout: ConnectTimeout = 10,
    debug: Debug = False,
) -> None:
    """Apply pending migrations (all, or up to --version)."""
    service = _service(ctx)
    if version is not None:  # usage errors come before any connection is made
        runner.check_version(service, service.disk_versions(), version)
    settings = _settings(
        service, url, host, port, user, password, password_file, database, connect_timeout
    )
    options = runner.RunOptions(
        wait=wait,
        lock_wait=lock_wait,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        retries=retries,
        atomic=atomic,
    )
    _emit(runner.up(service, settings, version, options, _progress), as_json)


@app.command()
def down(
    ctx: typer.Context,
    version: Annotated[
        int | None,
        typer.Option("--version", help="Roll back this version and every later one."),
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
    url: Url = None,
    host: Host = None,
    port: Port = None,
    user: User = None,
    password: Password = None,
    password_file: PasswordFile = None,
    database: Database = None,
    connect_timeout: ConnectTimeout = 10,
    debug: Debug = False,
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
    settings = _settings(
        service, url, host, port, user, password, password_file, database, connect_timeout
    )
    _emit(runner.down(service, settings, version, options, _progress), as_json)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Json = False,
    url: Url = None,
    host: Host = None,
    port: Port = None,
    user: User = None,
    password: Password = None,
    password_file: PasswordFile = None,
    database: Database = None,
    connect_timeout: ConnectTimeout = 10,
    debug: Debug = False,
) -> None:
    """List every version with its state; exit 1 if the database is ahead or inconsistent."""
    service = _service(ctx)
    settings = _settings(
        service, url, host, port, user, password, password_file, database, connect_timeout
    )
    report = runner.status(service, settings)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        _print_status(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_status(report: runner.Status) -> None:
    typer.echo(f"service:  {report.service}")
    typer.echo(f"database: {report.database}")
    typer.echo(
        f"current:  {report.current if report.current is not None else '-'}   head: {report.head}"
    )
    typer.echo(f"{'version':>7}  {'state':<8}  {'applied at':<26}  description")
    for m in report.migrations:
        state = "applied" if m.applied else "pending"
        typer.echo(f"{m.version:>7}  {state:<8}  {m.applied_at or '-':<26}  {m.description}")
    if report.legacy:
        typer.echo(
            "note: made by the previous migration system (no alembic_version); 'up' will adopt it"
        )
    if report.unknown:
        typer.echo(f"AHEAD: the database has versions this code does not know: {report.unknown}")
    if report.problem:
        typer.echo(f"INCONSISTENT: {report.problem}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name=PROG)
