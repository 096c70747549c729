"""Many runs at once (every service, or many databases of one service) and what became of each.

Alembic's ``context`` is process-global, so parallel runs go to worker processes (forked,
so they start with everything imported), bounded by ``jobs``. With ``jobs=1`` everything
runs in this process, in order. Jobs may wait on other jobs; a failure either stops new
work (``all up``) or is simply reported beside the others (many targets).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alembic_common import metrics, runner, services
from alembic_common.errors import MigrationError
from alembic_common.settings import Settings


@dataclass(frozen=True)
class Job:
    """One ``up`` (or ``status``) of one service against one database."""

    service: str
    settings: Settings
    target: int | None = None
    after: frozenset[int] = frozenset()  # indices of jobs that must succeed first


@dataclass
class Outcome:
    """What became of a job."""

    service: str
    database: str
    state: str  # "ok", "failed", "skipped" (a job it needed failed) or "not run" (stopped)
    result: runner.RunResult | runner.Status | None = None
    error: str | None = None
    exit_code: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "result"}
        data["result"] = self.result.to_dict() if self.result is not None else None
        return data


Work = Callable[..., Any]  # (service, settings, target, *, progress, **options)


@dataclass
class _Task:
    work: Work
    service: services.Service
    job: Job
    progress: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Outcome:
        started = time.perf_counter()
        job = self.job
        try:
            value = self.work(
                self.service, job.settings, job.target, progress=self.progress, **self.extra
            )
            return Outcome(
                job.service,
                job.settings.display,
                "ok",
                value,
                seconds=time.perf_counter() - started,
            )
        except MigrationError as exc:
            return Outcome(
                job.service,
                job.settings.display,
                "failed",
                None,
                str(exc),
                exc.exit_code,
                time.perf_counter() - started,
            )
        except Exception as exc:  # a bug or an unexpected driver error: report, don't hide others
            return Outcome(
                job.service,
                job.settings.display,
                "failed",
                None,
                f"unexpected {type(exc).__name__}: {exc}",
                1,
                time.perf_counter() - started,
            )


def _call(task: _Task) -> Outcome:
    return task()


def run(
    jobs: Sequence[Job],
    work: Work,
    *,
    root: Path,
    parallel: int = 1,
    stop_on_failure: bool = False,
    progress: Any = None,
    on_outcome: Callable[[int, Outcome], None] | None = None,
    **extra: Any,
) -> list[Outcome]:
    """Run ``work`` for each job, at most ``parallel`` at a time, respecting ``Job.after``."""
    outcomes: dict[int, Outcome] = {}
    todo = list(range(len(jobs)))
    stopped = False

    def finish(index: int, outcome: Outcome) -> None:
        nonlocal stopped
        outcomes[index] = outcome
        if not outcome.ok and stop_on_failure:
            stopped = True
        if on_outcome is not None:
            on_outcome(index, outcome)

    def ready(index: int) -> bool | None:
        """True when runnable, None when it can never run (a job it needs did not succeed)."""
        needs = jobs[index].after
        if any(n in outcomes and not outcomes[n].ok for n in needs):
            return None
        return all(n in outcomes for n in needs)

    # One Service object per service, shared by its jobs: the history is read from disk
    # once, not once per database.
    loaded = {name: services.get(name, root) for name in {j.service for j in jobs}}

    def task(index: int) -> _Task:
        return _Task(work, loaded[jobs[index].service], jobs[index], progress, extra)

    if parallel <= 1 or len(jobs) <= 1:
        while todo and not stopped:
            index = next((i for i in todo if ready(i) is not False), None)
            if index is None:
                break
            todo.remove(index)
            if ready(index) is None:
                finish(index, _skipped(jobs[index]))
            else:
                finish(index, task(index)())
    else:
        _preload(loaded.values())
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=parallel, mp_context=context) as pool:
            running: dict[Future[Outcome], int] = {}
            while (todo and not stopped) or running:
                for index in [i for i in todo if ready(i) is not False]:
                    if stopped or len(running) >= parallel:
                        break
                    todo.remove(index)
                    if ready(index) is None:
                        finish(index, _skipped(jobs[index]))
                        continue
                    running[pool.submit(_call, task(index))] = index
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    finish(running.pop(future), future.result())
    for index in todo:
        outcomes[index] = (
            _skipped(jobs[index])
            if ready(index) is None
            else Outcome(
                jobs[index].service,
                jobs[index].settings.display,
                "not run",
                error="not started: an earlier failure stopped the run",
            )
        )
    return [outcomes[i] for i in range(len(jobs))]


def merge(service: str, settings: Settings, parts: list[Outcome], before: runner.Status) -> Outcome:
    """One outcome per service from its segments (none: it had nothing a plain up runs)."""
    results = [p.result for p in parts if isinstance(p.result, runner.RunResult)]
    merged = runner.RunResult(
        service,
        settings.display,
        "up",
        before.current,
        results[-1].after if results else before.current,
        [v for r in results for v in r.steps],
        held=results[-1].held if results else before.held,
        pending=results[-1].pending if results else before.pending,
    )
    failed = next((p for p in parts if not p.ok), None)
    return Outcome(
        service,
        settings.display,
        failed.state if failed else "ok",
        merged,
        failed.error if failed else None,
        failed.exit_code if failed else 0,
        sum(p.seconds for p in parts),
    )


def samples(
    pairs: list[tuple[Settings, Outcome]], known: Mapping[str, services.Service], run: bool
) -> list[metrics.Sample]:
    """What the metrics file should say of each target after a run (``run``) or a status."""
    return [_sample(settings, outcome, known[outcome.service], run) for settings, outcome in pairs]


def _sample(
    settings: Settings, outcome: Outcome, service: services.Service, run: bool
) -> metrics.Sample:
    head = service.head
    result = outcome.result
    current = pending = None
    empty = False
    if isinstance(result, runner.RunResult):
        current, pending, empty = result.after, len(result.pending), result.after is None
    elif isinstance(result, runner.Status):
        current, pending, empty = result.current, len(result.pending), result.current is None
    elif run:
        # A failed run: look again, briefly, so the dashboard shows where it stopped.
        quick = Settings(settings.service, settings.url, settings.source, 2, settings.embedded_dir)
        try:
            report = runner.status(service, quick)
            current, pending, empty = report.current, len(report.pending), report.current is None
        except MigrationError:
            pass
    if not run:
        return metrics.Sample(service.name, settings.label, current, head, pending, empty=empty)
    return metrics.Sample(
        service.name,
        settings.label,
        current,
        head,
        pending,
        outcome.ok,
        outcome.seconds,
        time.time(),
        empty,
    )


def _preload(loaded: Iterable[services.Service]) -> None:
    """Import Alembic and read the histories once here, so every forked worker starts with them."""
    import alembic.command  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

    for service in loaded:
        service.scripts  # noqa: B018
        services.remember(service)


def _skipped(job: Job) -> Outcome:
    return Outcome(
        job.service,
        job.settings.display,
        "skipped",
        error="not started: a service it depends on failed",
    )


def up_work(
    service: services.Service,
    settings: Settings,
    target: int | None,
    *,
    progress: Any = None,
    options: runner.RunOptions = runner.RunOptions(),
    peers: Any = None,
) -> runner.RunResult:
    """The work of one ``up`` job."""
    return runner.up(service, settings, target, options, progress, peers=peers)


def status_work(
    service: services.Service, settings: Settings, target: int | None, *, progress: Any = None
) -> runner.Status:
    """The work of one ``status`` job."""
    return runner.status(service, settings)
