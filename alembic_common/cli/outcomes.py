"""What a run leaves when it ends: its ``failed`` and ``run_finished`` events and its metrics
file; a run on one database (``up`` or ``down``) and ``up`` over a fleet, reported in the
same way by the whole CLI (``migrate.py``) and its fast path (``fast.py``). Nothing here
needs typer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from alembic_common.cli.render import (
    Reporter,
    err,
    out,
    print_json,
    progress_bar,
    show_result,
    wrapped,
)
from alembic_common.core import runner
from alembic_common.core.events import Failed, RunFinished, RunStarted
from alembic_common.core.project import Project
from alembic_common.core.settings import Settings
from alembic_common.errors import MigrationError
from alembic_common.fleets import fleet
from alembic_common.safety.redact import Scrubber

Pair = tuple[Settings, fleet.Outcome]


def scrubber() -> Scrubber:
    """The run's scrubber (the frame put it on stderr), for the files a command writes."""
    return getattr(sys.stderr, "scrub", None) or Scrubber()


def cause(exc: BaseException) -> str:
    """What an error says, for events and summaries (a bug says what kind it is)."""
    if isinstance(exc, MigrationError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({exc})"
    return f"unexpected {type(exc).__name__}: {exc}"


def failure(service: str, settings: Settings, exc: BaseException, started: float) -> fleet.Outcome:
    code = getattr(exc, "exit_code", 130 if isinstance(exc, KeyboardInterrupt) else 1)
    return fleet.Outcome(
        service,
        settings.display,
        "failed",
        error=cause(exc),
        exit_code=code,
        seconds=time.time() - started,
    )


def write_metrics(
    project: Project,
    path: Path,
    pairs: list[Pair],
    run: bool,
    *,
    aggregate: bool = False,
    per_target: bool = True,
    seconds: float = 0.0,
) -> None:
    """Per-target series (one database, or asked for) and, for a fleet, its aggregates."""
    from alembic_common.fleets import metrics

    samples = fleet.samples(pairs, project.services, run) if per_target else []
    fleets = fleet.aggregates(pairs, seconds) if aggregate else []
    metrics.write(path, samples, scrubber(), fleets)


def record(
    project: Project,
    reporter: Reporter,
    action: str,
    pairs: list[Pair],
    started: float,
    metrics_file: Path | None,
    *,
    fleet_run: bool = False,
    per_target: bool = True,
) -> None:
    """Emit failure and finish events, and write the metrics file."""
    for settings, outcome in pairs:
        if outcome.kind == "failed":
            reporter(
                Failed(
                    action=action,
                    service=outcome.service,
                    target=settings.label,
                    state=outcome.state,
                    cause=outcome.error,
                )
            )
    reporter(
        RunFinished(
            action=action,
            ok=all(o.ok for _, o in pairs),
            seconds=round(time.time() - started, 3),
            failed=sum(not o.ok for _, o in pairs),
            targets=len(pairs),
        )
    )
    if metrics_file is not None:
        write_metrics(
            project,
            metrics_file,
            pairs,
            run=True,
            aggregate=fleet_run,
            per_target=per_target,
            seconds=time.time() - started,
        )


def run_one(
    project: Project,
    target: Settings,
    action: str,
    work: Callable[[], runner.RunResult],
    reporter: Reporter,
    metrics_file: Path | None,
    as_json: bool,
) -> None:
    """``work`` (an ``up`` or a ``down`` of one service on one database) with its events and
    metrics however it ends, then its result."""
    service = target.service
    started = time.time()
    reporter(RunStarted(action=action, service=service, targets=[target.label]))
    try:
        result = work()
    except BaseException as exc:
        record(
            project,
            reporter,
            action,
            [(target, failure(service, target, exc, started))],
            started,
            metrics_file,
        )
        raise
    done = fleet.Outcome(service, target.display, "ok", result, seconds=time.time() - started)
    record(project, reporter, action, [(target, done)], started, metrics_file)
    show_result(result, as_json)


# --- a fleet -------------------------------------------------------------------------------


class Stopped(Exception):
    """A fleet run stopped by a signal, with every target's outcome, for the report."""

    def __init__(self, pairs: list[Pair], exit_code: int) -> None:
        super().__init__(exit_code)
        self.pairs, self.exit_code = pairs, exit_code


def run_fleet(
    where: list[Settings],
    quiet: bool,
    run: Callable[[Callable[..., None]], list[fleet.Outcome]],
) -> list[Pair]:
    """Run a fleet's work with a progress bar on a terminal; pair each outcome with its
    target (``where``, in the order ``run`` returns the outcomes)."""
    try:
        with progress_bar(len(where), quiet) as advance:
            outcomes = run(advance)
    except fleet.Stopped as stop:
        raise Stopped(list(zip(where, stop.outcomes, strict=True)), stop.exit_code) from None
    return list(zip(where, outcomes, strict=True))


def finish(
    project: Project,
    reporter: Reporter,
    action: str,
    pairs: list[Pair],
    started: float,
    metrics_file: Path | None,
    json_output: bool,
    per_target: bool = False,
    aggregate: bool = True,
    exit_code: int | None = None,
) -> int:
    """Summarise a fleet run: counts per outcome, then only failures and held targets; the
    exit code: 1 (or a failed target's own) if any target failed or did not run,
    ``exit_code`` (130/143: the run was stopped by a signal) once the report is written."""
    record(
        project,
        reporter,
        action,
        pairs,
        started,
        metrics_file,
        fleet_run=aggregate,
        per_target=per_target,
    )
    counts = fleet.summary(o for _, o in pairs)
    if json_output:
        print_json(
            {
                "action": action,
                "ok": all(o.ok for _, o in pairs),
                "summary": counts,
                "targets": [
                    {"target": s.label, "outcome": o.kind, **o.to_dict()} for s, o in pairs
                ],
            }
        )
    else:
        shown = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "no targets"
        out(f"{action}: {len(pairs)} database(s): {shown}")
        for settings, o in pairs:
            r = o.result if isinstance(o.result, runner.RunResult) else None
            if o.kind == "held" and r is not None:
                at = "empty" if r.after is None else r.after
                out(wrapped(f"held: {settings.label}: at {at}; {r.why_held or 'contract held'}"))
            elif o.kind == "failed":
                out(f"{o.state}: {settings.label}: {o.error}")
        skipped = [(s, o) for s, o in pairs if o.kind == "skipped"]
        if skipped:
            names = ", ".join(s.label for s, _ in skipped[:5])
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            out(
                wrapped(
                    f"skipped: {len(skipped)} target(s) not started ({names}{more}): "
                    f"{skipped[0][1].error}; run the same command again to finish them "
                    "(finished targets are no-ops)"
                )
            )
    if exit_code is not None:
        return exit_code
    failed = [o for _, o in pairs if not o.ok]
    if failed:
        err(f"migrate: error: {action}: {len(failed)} of {len(pairs)} database(s) failed")
        return max(o.exit_code for o in failed) or 1
    return 0


def up_over(
    project: Project,
    service: str,
    where: list[Settings],
    run: Callable[[Callable[..., None]], list[fleet.Outcome]],
    reporter: Reporter,
    metrics_file: Path | None,
    as_json: bool,
    *,
    per_target: bool = False,
    aggregate: bool = True,
) -> int:
    """``up`` over many databases (a fleet's, or 'all up''s services): its events, metrics
    and report however it ends; the exit code."""
    started = time.time()
    reporter(RunStarted(action="up", service=service, targets=[t.label for t in where]))
    stopped: Stopped | None = None
    try:
        pairs = run_fleet(where, reporter.quiet, run)
    except Stopped as stop:  # SIGTERM/SIGINT: the report first, then its exit code
        stopped, pairs = stop, stop.pairs
    return finish(
        project,
        reporter,
        "up",
        pairs,
        started,
        metrics_file,
        as_json,
        per_target,
        aggregate,
        exit_code=stopped.exit_code if stopped else None,
    )


def fleet_up(
    project: Project,
    service: str,
    jobs: list[fleet.Job],
    options: runner.RunOptions,
    rollout: fleet.Rollout,
    reporter: Reporter,
    metrics_file: Path | None,
    as_json: bool,
    per_target: bool = False,
) -> int:
    """``up`` over a fleet: each database looked at first, those with work migrated."""
    return up_over(
        project,
        service,
        [j.settings for j in jobs],
        lambda advance: fleet.roll_out(
            jobs,
            fleet.look_work,
            fleet.up_work,
            rollout,
            root=project.root,
            progress=reporter,
            on_outcome=advance,
            options=options,
        ),
        reporter,
        metrics_file,
        as_json,
        per_target=per_target,
    )
