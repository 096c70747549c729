"""What a run leaves when it ends: its ``failed`` and ``run_finished`` events and its metrics
file; and a run on one database (``up`` or ``down``), reported in the same way by the whole
CLI (``migrate.py``) and its fast path (``fast.py``). Nothing here needs typer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from alembic_common.cli.render import Reporter, show_result
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
