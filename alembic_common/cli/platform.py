"""The platform commands: ``all up``, ``all status`` and ``all report`` (the work is in
``alembic_common.fleets.platform`` and ``alembic_common.fleets.report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alembic_common.cli.connection import Connection
from alembic_common.cli.frame import app, is_all, project_of
from alembic_common.cli.options import with_connection
from alembic_common.cli.outcomes import scrubber, up_over, write_metrics
from alembic_common.cli.render import Reporter, err, out, print_json, table
from alembic_common.core import runner
from alembic_common.core.project import Project
from alembic_common.errors import UsageError
from alembic_common.fleets import platform
from alembic_common.fleets.fleet import Outcome


def all_up(
    project: Project,
    conn: Connection,
    options: runner.RunOptions,
    jobs: int,
    reporter: Reporter,
    metrics_file: Path | None,
    json_output: bool,
) -> None:
    """Every service to head, in dependency order, independent ones in parallel."""
    where = platform.targets(project, lambda service: conn.settings(service, say=err))
    ended = up_over(
        project,
        platform.ALL,
        list(where.values()),
        lambda advance: [  # one per service, in the order of ``where``
            outcome
            for _, outcome in platform.up(
                project, where, options, jobs=jobs, progress=reporter, on_outcome=advance
            )
        ],
        reporter,
        metrics_file,
        json_output,
        per_target=True,
        aggregate=False,
    )
    if ended:
        raise typer.Exit(ended)


def all_status(
    project: Project, conn: Connection, metrics_file: Path | None, json_output: bool
) -> None:
    """One table for the whole platform: versions, pending work and unmet requirements."""
    where = platform.targets(project, lambda service: conn.settings(service, say=err))
    report = platform.status(project, where)
    if metrics_file is not None:
        pairs = [
            (s.target, Outcome(s.service, s.target.display, "ok", s.status))
            for s in report.services
            if s.status is not None
        ]
        write_metrics(project, metrics_file, pairs, run=False)
    if json_output:
        print_json(report.to_dict())
    else:
        rows: list[tuple[object, ...]] = []
        for s in report.services:
            st = s.status
            if st is None:
                rows.append((s.service, "-", "-", "-", s.words()))
                continue
            current = "-" if st.current is None else st.current
            rows.append((s.service, current, st.head, st.pending or "-", s.words()))
        out("platform")
        out(table(("service", "current", "head", "pending", "state"), rows))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@with_connection
def report(
    ctx: typer.Context,
    conn: Connection,
    out_file: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="FILE.html",
            help="The page to write (replaced whole, readable by its owner only).",
        ),
    ],
    rehearsals: Annotated[
        list[Path] | None,
        typer.Option(
            "--rehearsal",
            metavar="FILE.json",
            help="A service's 'rehearse --json' report to show (repeatable, one per service).",
        ),
    ] = None,
    fleet_file: Annotated[
        Path | None,
        typer.Option(
            "--fleet",
            metavar="FILE.json",
            help="A fleet run's --json report ('up --targets-file F --json') to summarise.",
        ),
    ] = None,
) -> None:
    """'all report --out FILE.html': the platform as one self-contained HTML page.

    Services and their requires as a picture, each one's history, pending plan with
    locks, lint findings and schema diagram (from the catalog, never a row), and the
    rehearsals and fleet run given. Exit 1 after writing it when a database could not be
    read, naming which.
    """
    from alembic_common.fleets import report as reporting
    from alembic_common.safety import files

    if not is_all(ctx):
        raise UsageError("'report' is for the whole platform: 'migrate all report --out FILE.html'")
    if conn.url:
        raise UsageError(
            "'all report' takes no --url: each service uses its own settings "
            "(<SERVICE>_DATABASE_URL)"
        )
    files.check_target(out_file, "--out")
    given = [reporting.read_json(path, "--rehearsal") for path in rehearsals or []]
    fleet_report = reporting.read_json(fleet_file, "--fleet") if fleet_file else None
    reporting.dot_binary()  # before any database is read
    project = project_of(ctx)
    where = platform.targets(project, lambda service: conn.settings(service, say=err))
    page = reporting.gather(project, where, rehearsals=given, fleet=fleet_report)
    files.write_whole(out_file, scrubber()(reporting.render(page)), mode=0o600)
    out(str(out_file))
    if page.unreachable:
        err(
            f"migrate: error: all report: wrote {out_file}, but could not read the database of "
            f"{', '.join(page.unreachable)} (the page says why)"
        )
        raise typer.Exit(1)
