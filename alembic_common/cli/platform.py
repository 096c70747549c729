"""The platform commands: ``all up`` and ``all status`` (the work is in ``alembic_common.fleets.platform``)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from alembic_common.cli.migrate import finish, write_metrics
from alembic_common.cli.options import Connection
from alembic_common.cli.render import Reporter, err, out, print_json, progress_bar, table
from alembic_common.core import runner
from alembic_common.core.events import RunStarted
from alembic_common.core.project import Project
from alembic_common.fleets import fleet, platform
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
    started = time.time()
    reporter(
        RunStarted(action="up", service=platform.ALL, targets=[t.label for t in where.values()])
    )
    stopped = None
    try:
        with progress_bar(len(where), reporter.quiet) as advance:
            pairs = platform.up(
                project, where, options, jobs=jobs, progress=reporter, on_outcome=advance
            )
    except fleet.Stopped as stop:  # SIGTERM/SIGINT: the report first, then its exit code
        stopped, pairs = stop, list(zip(where.values(), stop.outcomes, strict=True))
    finish(
        project,
        reporter,
        "up",
        pairs,
        started,
        metrics_file,
        json_output,
        per_target=True,
        aggregate=False,
        exit_code=stopped.exit_code if stopped else None,
    )


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
