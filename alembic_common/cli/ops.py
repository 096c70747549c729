"""The operations commands: ``seed`` (demo and fixture data)."""

from __future__ import annotations

from typing import Annotated

import typer

from alembic_common import runner
from alembic_common.cli import options
from alembic_common.cli.app import app, service_of
from alembic_common.cli.options import Connection, Env, Json, with_connection
from alembic_common.cli.render import err, out, print_json


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
