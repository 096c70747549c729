"""The frame of the ``migrate`` command line: the app, its errors, its outputs, its signals.

This package is the only code that prints or exits. Every failure becomes one line on
stderr (``migrate: error: ...``): exit 2 for bad usage, 1 for an operation that failed,
130 or 143 for SIGINT or SIGTERM; ``--debug`` adds the traceback. Everything written to
stdout and stderr passes through the run's scrubber. A closed stdout ends the run quietly.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

import typer
import typer.main
import typer.models
from typer.core import TyperGroup

from alembic_common.cli import shell
from alembic_common.core import services, settings
from alembic_common.core.project import Project
from alembic_common.errors import ConfigError, Interrupted, UsageError
from alembic_common.safety import redact

PROG = shell.PROG
ALL = "all"
ALL_COMMANDS = ("up", "status", "report")
EMBEDDED = "embedded"  # the embedded server itself, not a service
EMBEDDED_COMMANDS = ("status", "stop")
PSEUDO = {ALL: ALL_COMMANDS, EMBEDDED: EMBEDDED_COMMANDS}  # "SERVICE" words that are not one
EMBEDDED_ONLY = ("stop",)
ALL_ONLY = ("report",)


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


class Frame(TyperGroup):
    """The command group: service validation, suggestions, and one-line errors."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        service = ctx.params.get("service")
        name = args[0] if args else ""
        every = [c for c in sorted(self.commands) if c not in EMBEDDED_ONLY + ALL_ONLY]
        valid = list(PSEUDO.get(service, every))
        if service is not None:
            check_service(service, args)
        if name and not name.startswith("-") and name not in self.commands:
            raise UsageError(
                f"no such command {name!r}{_suggest(name, valid)} (commands: {', '.join(valid)})"
            )
        if name in self.commands and name not in valid:
            raise UsageError(
                f"'{service}' works with {_listed(valid)} only, not {name!r}"
                if service in PSEUDO
                else f"{name!r} is for '{PROG} {ALL if name in ALL_ONLY else EMBEDDED} {name}' only"
            )
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        """A signal inside a command ends it as one line with 128 + its number (typer
        would return 130 for any signal, saying nothing)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            signum = int(getattr(exc, "signum", signal.SIGINT))
            raise Interrupted(
                f"interrupted ({signal.Signals(signum).name})", signum=signum
            ) from exc  # --debug shows where it landed

    def main(self, args: Sequence[str] | None = None, *a: Any, **kw: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv or redact.switched_on(redact.DEBUG)
        scrub = redact.Scrubber(redact.gather(argv, os.environ))
        code = 1
        with shell.scrubbed(scrub), shell.signals(), shell.showing_data("--show-data" in argv):
            try:
                code = self._run(argv, debug, kw)
            except redact.ReaderGone:
                code = shell.stdout_gone()
        sys.exit(code)

    def _run(self, argv: list[str], debug: bool, kw: dict[str, Any]) -> int:
        if not debug:  # library warnings would break the one-line error contract
            warnings.simplefilter("ignore")
        try:  # before anything is read or shown: a typo must not show data or tracebacks
            redact.switch(redact.DEBUG)
            redact.switch(redact.SHOW_DATA)
        except UsageError as exc:
            return shell.fail(argv, str(exc), 2, debug=False, usage=True)

        if redact.shows_data():
            sys.stderr.write(
                f"{PROG}: warning: --show-data: server messages are shown as they are, with any "
                "values from rows (patient data) they quote\n"
            )

        if not argv:
            super().main(["--help"], prog_name=PROG, standalone_mode=False)
            return 2
        kw["standalone_mode"] = False
        kw.setdefault("prog_name", PROG)
        try:
            result = super().main(argv, **kw)
        except typer.Exit as exc:
            return int(exc.exit_code)
        except typer.Abort:
            return shell.fail(argv, "aborted", 1, debug=debug)
        except typer.TyperException as exc:  # click's own usage errors
            where = [a for a in argv[:2] if not a.startswith("-")]
            hint = f" (see '{' '.join([PROG, *where])} --help')" if where else ""
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            code = int(getattr(exc, "exit_code", 2))
            return shell.fail(argv, unechoed(message, argv) + hint, code, debug=debug, usage=True)
        except redact.ReaderGone:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            return shell.failed(exc, argv, debug=debug)
        return result if isinstance(result, int) else 0


def unechoed(message: str, argv: Sequence[str]) -> str:
    """A usage error without the values typed: any of them could be a password (an unquoted
    URL whose password holds a space reaches here as two arguments). Option names,
    commands and services stay."""
    known = {*Project.find().services, *PSEUDO}
    for arg in sorted(argv, key=len, reverse=True):
        name, eq, value = arg.partition("=")
        typed = value if eq and name.startswith("-") else "" if arg.startswith("-") else arg
        if len(typed) >= 2 and typed not in known and not typed.isidentifier():
            message = message.replace(typed, "***")
        elif typed and typed not in known and typed.isidentifier() and "argument" in message:
            message = message.replace(f"({typed})", "(***)").replace(f"'{typed}'", "'***'")
    if "unexpected extra argument" in message:
        message += "; a URL holding spaces or shell characters must be quoted"
    return message


def _listed(words: Sequence[str]) -> str:
    """'a', 'b' and 'c'."""
    quoted = [repr(w) for w in words]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def check_service(name: str, args: Sequence[str] = ()) -> None:
    """Refuse an unknown service, suggesting the nearest one (or the right word order)."""
    if name in PSEUDO:
        return
    project = Project.find()
    known = project.services
    if name in known:
        return
    if not known:
        raise ConfigError(
            f"unknown service {name!r}: no service folder (services/<name>/alembic.ini) under "
            f"{project.root}; run from the repository, or set MIGRATE_ROOT to the folder that "
            "holds services/"
        )
    if args and args[0] in known:
        raise ConfigError(
            f"unknown service {name!r}: the service comes first, as in '{PROG} {args[0]} {name}'"
        )
    raise ConfigError(
        f"unknown service {name!r}{_suggest(name, sorted(known))} "
        f"(valid services: {', '.join(known) or 'none'})"
    )


app = typer.Typer(
    cls=Frame,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=True,
    help=(
        "Bring a service's PostgreSQL database to the right schema version.\n\n"
        "SERVICE is a folder under services/ (user, patient, appointment), 'all' for up, "
        "status and report, or 'embedded' for the embedded server's status and stop. Connection: --url, then <SERVICE>_MIGRATION_URL (a direct connection "
        "beside the application's pooled one), then <SERVICE>_DATABASE_URL, then "
        "DATABASE_URL, then --host/--port/--user/--password/--database (seed defaults), else "
        "an embedded PostgreSQL under .pgdata/. migrate talks to the primary directly: a "
        "connection that reaches PgBouncer or a standby is refused. MIGRATE_POOLER_URLS lists "
        "PgBouncer admin consoles whose clients the contract gate counts. Exit codes: 0 ok, "
        "1 operation failed, 2 bad usage, 130/143 interrupted by SIGINT/SIGTERM."
    ),
)


class Chosen(NamedTuple):
    """What the command line chose before the command runs (kept in ``ctx.obj``)."""

    project: Project
    service: services.Service | None  # None for "all" and "embedded"
    embedded: bool = False  # "embedded": the embedded server itself


@app.callback()
def _main(
    ctx: typer.Context,
    service: Annotated[
        str,
        typer.Argument(
            metavar="SERVICE",
            help="Service name (a folder under services/), 'all' for up/status/report, or "
            "'embedded' for status/stop of the embedded server.",
        ),
    ],
) -> None:
    check_service(service)
    # A typo in APP_ENV must not slip past the production guard: every command checks it.
    settings.environment(os.environ.get("APP_ENV"), "APP_ENV")
    if "MIGRATE_POOLER_URLS" in os.environ:  # checked before anything connects
        from alembic_common.fleets import poolers

        poolers.configured()
    project = Project.find()
    one = None if service in PSEUDO else project.service(service)
    ctx.obj = Chosen(project, one, service == EMBEDDED)


def service_of(ctx: typer.Context) -> services.Service:
    """The command's service; 'all' is refused by commands that work on one service."""
    chosen = ctx.find_object(Chosen)
    if chosen is None or chosen.service is None:
        raise UsageError(
            f"'all' works with 'up', 'status' and 'report' only, not '{ctx.info_name}'"
        )
    return chosen.service


def is_all(ctx: typer.Context) -> bool:
    chosen = ctx.find_object(Chosen)
    return chosen is not None and chosen.service is None and not chosen.embedded


def is_embedded(ctx: typer.Context) -> bool:
    chosen = ctx.find_object(Chosen)
    return chosen is not None and chosen.embedded


def project_of(ctx: typer.Context) -> Project:
    chosen = ctx.find_object(Chosen)
    return chosen.project if chosen is not None else Project.find()


def main() -> None:
    """The CLI; it ends with SystemExit, so that a caller may go on afterwards."""
    named(sys.argv[1:])(prog_name=PROG)


COMMANDS = {
    "migrate": ("up", "down", "status"),
    "authoring": ("revision", "check", "diff", "plan", "lint", "hash"),
    "backup": ("backup", "backups", "restore"),
    "rehearse": ("rehearse",),
    "ops": ("seed", "login", "wait", "stop"),
    "platform": ("report",),
}
"""Each module of this package that registers commands, and its commands in help's order."""
ORDER = [name for names in COMMANDS.values() for name in names]


def command_name(command: typer.models.CommandInfo) -> str:
    return command.name or typer.main.get_command_name(getattr(command.callback, "__name__", ""))


def load(command: str | None = None) -> typer.Typer:
    """The app, with the commands of the module that registers ``command`` (of every
    module when it is None or not one of ``COMMANDS``): a run imports only what its own
    command needs, so a no-op ``up`` skips the authoring, backup and fleet code."""
    known = command in ORDER
    for module, names in COMMANDS.items():
        if not known or command in names:
            importlib.import_module(f"alembic_common.cli.{module}")
    if not known:  # help lists them in one order, whatever was loaded first
        app.registered_commands.sort(key=lambda c: ORDER.index(command_name(c)))
    return app


def named(argv: Sequence[str]) -> typer.Typer:
    """The app with only the command that ``argv`` names (``SERVICE COMMAND ...``), else
    the whole app. Typer turns every command's signature into options before it parses
    anything, about 1 ms a command, and a run needs its own command's alone; help for the
    whole CLI, completion and a mistyped command still see every command."""
    name = argv[1] if len(argv) > 1 and not argv[0].startswith("-") else None
    if name not in ORDER:
        return load()
    only = copy.copy(load(name))
    only.registered_commands = [c for c in app.registered_commands if command_name(c) == name]
    return only


def run() -> None:
    """The whole CLI as the process's entry point (see ``shell.finish``)."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        if isinstance(exc.code, str):
            sys.stderr.write(exc.code + "\n")
    shell.finish(code)
