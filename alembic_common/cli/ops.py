"""The operations commands: ``seed`` (demo and fixture data), ``login`` (application logins),
``wait`` (until a version is applied), and the embedded server's ``status`` and ``stop``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from alembic_common.cli import options
from alembic_common.cli.connection import Connection
from alembic_common.cli.frame import PROG, app, is_embedded, service_of
from alembic_common.cli.options import VERSION_PARSER, Env, Json, seconds, with_connection
from alembic_common.cli.render import err, out, print_json
from alembic_common.core import runner


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
    from alembic_common.authoring import seeding

    service = service_of(ctx)
    run_options = runner.RunOptions(
        environment=options.environment(env), allow_production=allow_production
    )
    runner.refuse_production(service, "seed", run_options)
    seeding.load(service, profile)  # a missing profile is a usage error, before connecting
    result = seeding.seed(service, conn.settings(service, say=err), profile, run_options)
    if as_json:
        print_json(result.to_dict())
    else:
        out(f"{service.name}: seed {profile!r} inserted {result.inserted} row(s)")


@app.command()
@with_connection
def login(
    ctx: typer.Context,
    conn: Connection,
    name: Annotated[str, typer.Argument(help="The login role to create or update.")],
    login_password_file: Annotated[
        Path | None,
        typer.Option(help="Read the password from this file (e.g. /run/secrets/...)."),
    ] = None,
    login_password_env: Annotated[
        str | None, typer.Option(help="Read the password from this environment variable.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Create or update a login role that is a member of <service>_app (idempotent).

    The password never appears in output or in the server's logs (it is sent hashed)."""
    from alembic_common.errors import UsageError
    from alembic_common.tenancy import rls as tenancy

    service = service_of(ctx)
    tenancy.plain_identifier(name)
    if (login_password_file is None) == (login_password_env is None):
        raise UsageError(
            "give the password with exactly one of --login-password-file or --login-password-env"
        )
    if login_password_file is not None:
        try:
            password = login_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read --login-password-file {login_password_file}: {exc.__class__.__name__}"
            ) from None
    else:
        assert login_password_env is not None
        if login_password_env not in os.environ:
            raise UsageError(
                f"--login-password-env {login_password_env}: no such environment variable"
            )
        password = os.environ[login_password_env]
    result = tenancy.ensure_login(service, conn.settings(service, say=err), name, password)
    if as_json:
        print_json(result.to_dict())
    else:
        verb = "created" if result.created else "updated (password and membership)"
        out(f"{service.name}: login {result.login} {verb}, member of {result.role}")


@app.command()
@with_connection
def wait(
    ctx: typer.Context,
    conn: Connection,
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            help="The version to wait for (default: the code's head).",
            parser=VERSION_PARSER,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds (exit 1).", parser=seconds())
    ] = 60.0,
    as_json: Json = False,
) -> None:
    """Wait until the database is ready for a release built for a version; for init
    containers and compose services that must not start before their schema.

    Ready: every step up to the version applied but contract steps (held for an older
    release, they do not stop a newer one), both tables agreeing, nothing part-way. Reads
    the database once a second and never migrates; a database not reachable yet is waited
    for too. Exit 0 when ready, 1 at the timeout naming what it saw last.
    """
    from alembic_common.errors import StateError

    service = service_of(ctx)
    target = version if version is not None else service.head
    if target is None:
        raise StateError(f"{service.name}: the service has no migrations to wait for")
    settings = conn.settings(service, say=err)
    found = runner.wait_for(service, settings, target, timeout, say=err)
    if as_json:
        print_json({"service": service.name, "version": target, "current": found.current})
    else:
        out(f"{service.name}: ready for version {target} (the database is at {found.current})")


def show_embedded(pgdata: Path, as_json: bool) -> None:
    """``migrate embedded status``: what is under the data folder, and whether it runs."""
    from alembic_common.core import embedded

    found = embedded.info(pgdata)
    if as_json:
        print_json(found.to_dict())
        return
    if not found.initialised:
        out(
            f"embedded: no server yet in {found.data_dir} (the first command without a URL makes it)"
        )
        return
    out(f"embedded: PostgreSQL {found.major} in {found.data_dir}")
    if not found.running:
        out("embedded: stopped (the next command without a URL starts it)")
        return
    out(f"embedded: running, pid {found.pid}, socket {found.socket_dir} port {found.port}")
    out(f"embedded: databases {', '.join(found.databases)}")
    out(f"embedded: keeps running after each command; '{PROG} embedded stop' stops it")


@app.command()
def stop(
    ctx: typer.Context,
    timeout: Annotated[
        float,
        typer.Option(help="Give up after this many seconds (exit 1).", parser=seconds()),
    ] = 60.0,
    as_json: Json = False,
) -> None:
    """Stop the embedded server ('migrate embedded stop').

    It keeps running after each command so that the next one starts fast. This ends its
    sessions and shuts it down cleanly (as 'pg_ctl stop -m fast'); the data stays, and the
    next command without a URL starts it again.
    """
    from alembic_common.cli.frame import project_of
    from alembic_common.core import embedded

    assert is_embedded(ctx)  # the command group lets 'stop' through for 'embedded' only
    pgdata = project_of(ctx).data_dir
    stopped = embedded.stop(pgdata, timeout)
    if as_json:
        print_json({"data_dir": str(pgdata), "stopped": stopped})
    else:
        out(
            f"embedded: stopped the server in {pgdata}"
            if stopped
            else f"embedded: no server running in {pgdata}"
        )
