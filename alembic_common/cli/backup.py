"""The backup commands: ``backup``, ``backups`` (list, prune) and ``restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alembic_common.cli import options
from alembic_common.cli.connection import Connection
from alembic_common.cli.frame import app, service_of
from alembic_common.cli.options import Env, Json, LockWait, whole, with_connection
from alembic_common.cli.render import Reporter, err, out, print_json, table, wrapped
from alembic_common.core import runner
from alembic_common.core.locking import DEFAULT_LOCK_WAIT
from alembic_common.errors import UsageError

To = Annotated[
    Path | None,
    typer.Option(
        "--to",
        metavar="DIR",
        help="Backup folder (default $MIGRATE_BACKUP_DIR, else backups/ in the project).",
    ),
]
DumpJobs = Annotated[
    int,
    typer.Option(
        "--jobs",
        help="Parallel pg_dump/pg_restore workers (>= 1). Above 1 the backup is a "
        "directory-format dump: worth it for databases of several GB with several large "
        "tables, on a server with cores to spare.",
        parser=whole(1, 64),
    ),
]


def _folder(to: Path | None) -> Path | None:
    if to is not None and to.exists() and not to.is_dir():
        raise UsageError(f"--to {to} is not a folder")
    return to


@app.command()
@with_connection
def backup(
    ctx: typer.Context,
    conn: Connection,
    to: To = None,
    jobs: DumpJobs = 1,
    as_json: Json = False,
) -> None:
    """Write a verified pg_dump of the service's database and its manifest; print its path."""
    service = service_of(ctx)
    folder = _folder(to)
    settings = conn.settings(service, say=err)
    from alembic_common.safety import backup as backups_mod  # pg_dump and co.: only here

    taken = backups_mod.take(service, settings, folder, jobs=jobs)
    if as_json:
        print_json(taken.to_dict())
    else:
        out(str(taken.path))


@app.command()
@with_connection
def backups(
    ctx: typer.Context,
    conn: Connection,
    to: To = None,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Delete old backups of this database, keeping the --keep newest and, for "
            "every applied version, the newest backup taken before it.",
        ),
    ] = False,
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep", help="With --prune: how many of the newest to keep (>= 0).", parser=whole(0)
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """List the service's backups, oldest first; --prune --keep N deletes old ones."""
    service = service_of(ctx)
    folder = _folder(to)
    if prune != (keep is not None):
        raise UsageError("--prune and --keep N go together")
    from alembic_common.safety import backup as backups_mod  # pg_dump and co.: only here

    if prune:
        assert keep is not None
        result = backups_mod.prune(service, conn.settings(service, say=err), keep, folder)
        if as_json:
            print_json(result.to_dict())
        else:
            out(f"{service.name}: kept {len(result.kept)} backup(s), deleted {len(result.deleted)}")
            for path in result.deleted:
                out(f"deleted {path}")
        return
    found = backups_mod.listing(service, folder)
    if as_json:
        print_json({"service": service.name, "backups": [b.to_dict() for b in found]})
        return
    rows = [
        (
            b.manifest.get("taken_at", "?"),
            b.manifest.get("database", "?"),
            "empty" if b.version is None else b.version,
            f"{int(b.manifest.get('bytes', 0)) / 1e6:.1f} MB",
            str(b.path),
        )
        for b in found
    ]
    out(table(("taken at (UTC)", "database", "version", "size", "path"), rows))


@app.command()
@with_connection
def restore(
    ctx: typer.Context,
    conn: Connection,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A backup written by 'backup'.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Terminate the other sessions on the database (named first)."),
    ] = False,
    env: Env = None,
    allow_production: Annotated[
        bool,
        typer.Option(
            "--allow-production", help="Permit 'restore' when the environment is production."
        ),
    ] = False,
    jobs: DumpJobs = 1,
    lock_wait: LockWait = DEFAULT_LOCK_WAIT,
    as_json: Json = False,
) -> None:
    """Bring the database back to exactly FILE: schema, data and both version tables."""
    service = service_of(ctx)
    if not str(file).strip() or file.name in ("", ".", ".."):
        raise UsageError(
            f"{service.name}: restore needs the path of a backup file, got {str(file)!r}"
        )
    run_options = runner.RunOptions(
        environment=options.environment(env), allow_production=allow_production
    )
    runner.refuse_production(service, "restore", run_options)
    from alembic_common.safety import backup as backups_mod  # pg_dump and co.: only here

    backups_mod.verify(service, file)  # a wrong service or a damaged file, before connecting
    settings = conn.settings(service, say=err)
    reporter = Reporter(None)  # the sessions it terminates are named on stderr, even with --json
    progress = runner.tagged(reporter, service.name, settings)
    result = backups_mod.restore(
        service, settings, file, force=force, jobs=jobs, lock_wait=lock_wait, progress=progress
    )
    if as_json:
        print_json(result.to_dict())
        return
    before, after = ("empty" if v is None else v for v in (result.before, result.after))
    out(wrapped(f"{service.name}: restored {file.name}: {before} -> {after}"))
