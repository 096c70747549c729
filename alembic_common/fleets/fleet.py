"""Many runs at once (every service, or many databases of one service) and what became of each.

Alembic's ``context`` is process-global, so parallel runs go to worker processes, bounded by
``jobs``: forked as needed (so each starts with everything imported) and each kept for the
next target, so a fleet of a thousand databases forks ``jobs`` workers, not a thousand. With ``jobs=1``
everything runs in this process, in order. Jobs may wait on other jobs; a failure either
stops new work (``all up``) or is simply reported beside the others (many targets). A worker
that dies fails only its target; SIGTERM/SIGINT stops the run, goes to every worker, and
``Stopped`` carries every target's outcome to the report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from alembic_common.core import runner, services
from alembic_common.core.settings import Settings
from alembic_common.errors import MigrationError

if TYPE_CHECKING:  # imported where used: a single target's run needs neither
    from alembic_common.fleets import metrics


CHECK_THREADS = 16  # a fleet's quick look: connections at once


class Job(NamedTuple):
    """One ``up`` (or ``status``) of one service against one database."""

    service: str
    settings: Settings
    target: int | None = None
    after: frozenset[int] = frozenset()  # indices of jobs that must succeed first


class Outcome(NamedTuple):
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

    @property
    def kind(self) -> str:
        """What a fleet summary counts it as: at head, migrated, held, failed or skipped."""
        if self.state in ("skipped", "not run"):
            return "skipped"
        if not self.ok:
            return "failed"
        result = self.result
        if isinstance(result, runner.RunResult):
            return "held" if result.held else "at head" if result.noop else "migrated"
        if isinstance(result, runner.Status):
            return "held" if result.held else "at head" if not result.pending else "behind"
        return "at head"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self._asdict().items() if k != "result"}
        data["result"] = self.result.to_dict() if self.result is not None else None
        if self.kind == "skipped":
            data["exit_code"] = None  # it never ran: no exit code, least of all 0
        return data


Work = Callable[..., Any]  # (service, settings, target, *, progress, **options)


class _Task(NamedTuple):
    work: Work
    service: services.Service
    job: Job
    progress: Any
    extra: dict[str, Any]

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
    per_host: int | None = None,
    max_failures: int | None = None,
    progress: Any = None,
    on_outcome: Callable[[int, Outcome], None] | None = None,
    **extra: Any,
) -> list[Outcome]:
    """Run ``work`` for each job, at most ``parallel`` at a time and ``per_host`` on one
    server, respecting ``Job.after``; once more than ``max_failures`` failed, no new work starts.
    """
    outcomes: dict[int, Outcome] = {}
    todo = list(range(len(jobs)))
    busy: Counter[str] = Counter()  # running jobs per server
    stopped = False

    def finish(index: int, outcome: Outcome) -> None:
        nonlocal stopped
        outcomes[index] = outcome
        failed = sum(not o.ok for o in outcomes.values())
        if max_failures is not None and failed > max_failures:
            stopped = True
        if on_outcome is not None:
            on_outcome(index, outcome)

    def ready(index: int) -> bool | None:
        """True when runnable, None when it can never run (a job it needs did not succeed)."""
        needs = jobs[index].after
        if any(n in outcomes and not outcomes[n].ok for n in needs):
            return None
        return all(n in outcomes for n in needs)

    def room(index: int) -> bool:
        return per_host is None or busy[jobs[index].settings.host_port] < per_host

    loaded = _load(jobs, root)

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
                continue
            finish(index, task(index)())
            if outcomes[index].exit_code in INTERRUPTED:  # the signal came to this process
                for rest in todo:
                    outcomes[rest] = _not_run(jobs[rest], outcomes[index].exit_code - 128)
                raise Stopped(
                    [outcomes[i] for i in range(len(jobs))], outcomes[index].exit_code - 128
                )
    else:
        _preload(loaded.values())
        workers = _Workers(task)
        try:
            while (todo and not stopped) or workers.running:
                for index in [i for i in todo if ready(i) is not False]:
                    if stopped or len(workers.running) >= parallel:
                        break
                    if not room(index):
                        continue
                    todo.remove(index)
                    if ready(index) is None:
                        finish(index, _skipped(jobs[index]))
                        continue
                    busy[jobs[index].settings.host_port] += 1
                    workers.start(index, jobs[index])
                if not workers.running:
                    break
                for index, outcome in workers.ended():
                    busy[jobs[index].settings.host_port] -= 1
                    finish(index, outcome)
        except KeyboardInterrupt as exc:  # SIGTERM or SIGINT: stop, and say what became of all
            signum = int(getattr(exc, "signum", signal.SIGINT))
            for index, outcome in workers.stop(signum):
                finish(index, outcome)
            for index in todo:
                outcomes[index] = _not_run(jobs[index], signum)
            raise Stopped([outcomes[i] for i in range(len(jobs))], signum) from None
        finally:
            workers.close()
    for index in todo:
        outcomes[index] = _skipped(jobs[index]) if ready(index) is None else _not_run(jobs[index])
        if on_outcome is not None:
            on_outcome(index, outcomes[index])
    return [outcomes[i] for i in range(len(jobs))]


def check(
    jobs: Sequence[Job],
    work: Work,
    *,
    root: Path,
    threads: int = CHECK_THREADS,
    on_outcome: Callable[[int, Outcome], None] | None = None,
    **extra: Any,
) -> list[Outcome]:
    """Run a short, read-only ``work`` for every job on threads: one connection each, many at a
    time, no worker process and no Alembic. Outcomes come back in the jobs' order."""
    loaded = _load(jobs, root)
    for service in loaded.values():
        _warm(service)  # read the history once here, not once per thread
    tasks = [_Task(work, loaded[j.service], j, None, extra) for j in jobs]
    if len(tasks) <= 1 or threads <= 1:
        found = []
        for index, t in enumerate(tasks):
            found.append(t())
            if on_outcome is not None:
                on_outcome(index, found[-1])
        return found
    from concurrent.futures import ThreadPoolExecutor, as_completed

    results: dict[int, Outcome] = {}
    with ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
        futures = {pool.submit(_call, t): i for i, t in enumerate(tasks)}
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            if on_outcome is not None:
                on_outcome(index, results[index])
    return [results[i] for i in range(len(tasks))]


class Rollout(NamedTuple):
    """How a fleet run goes: caps, a canary, waves and a failure budget."""

    parallel: int = 4  # migrations at once, overall
    per_host: int | None = 2  # migrations at once on one server
    canary: int = 0  # targets migrated first; any failure among them stops the rest
    wave_size: int | None = None  # then waves of this many (None: the rest at once)
    max_failures: int | None = None  # more failures than this: no new work starts
    threads: int = CHECK_THREADS  # connections of the quick check at once


def waves(indices: Sequence[int], canary: int, wave_size: int | None) -> list[list[int]]:
    """The canary (if any), then the rest in waves of ``wave_size``."""
    first, rest = list(indices[:canary]), list(indices[canary:])
    size = wave_size or len(rest) or 1
    return ([first] if first else []) + [rest[i : i + size] for i in range(0, len(rest), size)]


def roll_out(
    jobs: Sequence[Job],
    look: Work,
    work: Work,
    rollout: Rollout,
    *,
    root: Path,
    progress: Any = None,
    on_outcome: Callable[[int, Outcome], None] | None = None,
    **extra: Any,
) -> list[Outcome]:
    """Look at every target quickly (``look``: an outcome when there is nothing to do, or
    ``None``); run ``work`` only where there is work, canary first, then in waves.

    A failing canary stops everything else; more than ``max_failures`` failures stop new
    work (running work finishes). What did not start is "not run", left for a rerun.
    """
    report = on_outcome or (lambda _index, _outcome: None)
    try:
        seen = check(jobs, look, root=root, threads=rollout.threads, **extra)
    except KeyboardInterrupt as exc:  # stopped while looking: nothing was started
        signum = int(getattr(exc, "signum", signal.SIGINT))
        raise Stopped([_not_run(j, signum) for j in jobs], signum) from None
    outcomes: dict[int, Outcome] = {}
    for index, outcome in enumerate(seen):
        if not (outcome.ok and outcome.result is None):
            outcomes[index] = outcome
            report(index, outcome)
    pending = [i for i in range(len(jobs)) if i not in outcomes]
    limit = rollout.max_failures
    for number, wave in enumerate(waves(pending, rollout.canary, rollout.wave_size)):
        failed = sum(not o.ok for o in outcomes.values())
        if limit is not None and failed > limit:
            break
        canary = number == 0 and rollout.canary > 0
        try:
            done = run(
                [jobs[i] for i in wave],
                work,
                root=root,
                parallel=rollout.parallel,
                per_host=rollout.per_host,
                max_failures=0 if canary else None if limit is None else limit - failed,
                progress=progress,
                on_outcome=_within(wave, report),
                **extra,
            )
        except Stopped as stop:  # the rest of the fleet does not start either
            outcomes.update(zip(wave, stop.outcomes, strict=True))
            every = [outcomes.get(i) or _not_run(jobs[i], stop.signum) for i in range(len(jobs))]
            raise Stopped(every, stop.signum) from None
        outcomes.update(zip(wave, done, strict=True))
        if canary and not all(o.ok for o in done):
            break
    for index in pending:
        if index not in outcomes:
            outcomes[index] = _not_run(jobs[index])
            report(index, outcomes[index])
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


def summary(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """How many targets ended each way, in the order a summary shows them."""
    from alembic_common.fleets import metrics

    counts = dict.fromkeys(metrics.OUTCOMES, 0)
    for outcome in outcomes:
        counts[outcome.kind] = counts.get(outcome.kind, 0) + 1
    return counts


def aggregates(pairs: list[tuple[Settings, Outcome]], seconds: float) -> list[metrics.Fleet]:
    """A fleet run's metrics per service: counts per outcome, and the slowest target."""
    from alembic_common.fleets import metrics

    found = []
    for service in dict.fromkeys(o.service for _, o in pairs):
        mine = [(s, o) for s, o in pairs if o.service == service]
        ran = [(s, o) for s, o in mine if o.kind != "skipped"]
        slowest = max(ran, key=lambda p: p[1].seconds, default=None)
        found.append(
            metrics.Fleet(
                service,
                summary(o for _, o in mine),
                (slowest[0].label, slowest[1].seconds) if slowest else None,
                seconds,
                time.time(),
            )
        )
    return found


def samples(
    pairs: list[tuple[Settings, Outcome]], known: Mapping[str, services.Service], run: bool
) -> list[metrics.Sample]:
    """What the metrics file should say of each target after a run (``run``) or a status."""
    return [_sample(settings, outcome, known[outcome.service], run) for settings, outcome in pairs]


def _sample(
    settings: Settings, outcome: Outcome, service: services.Service, run: bool
) -> metrics.Sample:
    from alembic_common.fleets import metrics

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
    """Import Alembic and read the histories once here, so every forked worker starts with
    them; a service whose every step is plain SQL (sqlsteps.py) needs neither."""
    from alembic_common.core import sqlsteps

    for service in loaded:
        services.remember(service)
        if all(sqlsteps.statements(service, v, False) is not None for v in service.disk_versions()):
            continue
        import alembic.command  # noqa: F401
        import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

        service.scripts  # noqa: B018


def _within(
    wave: Sequence[int], report: Callable[[int, Outcome], None]
) -> Callable[[int, Outcome], None]:
    """Report a wave's outcome under the job's index in the whole run."""
    return lambda index, outcome: report(wave[index], outcome)


def _load(jobs: Iterable[Job], root: Path) -> dict[str, services.Service]:
    """One Service object per service, shared by its jobs: the history is read from disk
    once, not once per database."""
    return {name: services.get(name, root) for name in {j.service for j in jobs}}


def _warm(service: services.Service) -> None:
    """Read what a quick look needs (the files' declarations) before threads share it."""
    service.migrations  # noqa: B018
    service.head  # noqa: B018


INTERRUPTED = (128 + signal.SIGINT, 128 + signal.SIGTERM)
STOP_WAIT_S = 60.0  # how long stopped workers get to roll back their running step


class Stopped(Exception):
    """SIGTERM or SIGINT stopped a fleet run: every target's outcome so far (the running ones
    rolled back their step as a single run does; the rest did not start), for the report."""

    def __init__(self, outcomes: list[Outcome], signum: int) -> None:
        super().__init__(f"interrupted ({signal.Signals(signum).name})")
        self.outcomes, self.signum = outcomes, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _Workers:
    """Worker processes, forked as needed up to the run's parallelism and each kept for the
    next target (its imports, its history and its SQLAlchemy engine set up once, not once per
    target); a target's index goes down a pipe and its outcome comes back. A worker that dies
    (SIGKILL, the OOM killer) fails its own target and nothing else, and is not reused; nor
    is one whose target a signal ended."""

    def __init__(self, task_of: Callable[[int], _Task]) -> None:
        import multiprocessing

        self.context = multiprocessing.get_context("fork")
        self.task_of = task_of  # a worker builds its task from the index, as forked
        self.idle: list[tuple[Any, Any]] = []  # (process, pipe)
        self.running: dict[int, tuple[Any, Any, Job]] = {}  # index -> (process, pipe, job)

    def start(self, index: int, job: Job) -> None:
        while self.idle:
            process, pipe = self.idle.pop()
            try:
                pipe.send(index)
            except OSError:  # it died idle: let it go, take another
                self._retire(process, pipe)
                continue
            self.running[index] = (process, pipe, job)
            return
        pipe, theirs = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(self.task_of, theirs))
        process.start()
        theirs.close()
        pipe.send(index)
        self.running[index] = (process, pipe, job)

    def ended(self, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        """Wait until some worker's target ends; what became of each that did."""
        from multiprocessing.connection import wait

        pipes: dict[Any, int] = {pipe: index for index, (_, pipe, _) in self.running.items()}
        done = []
        for ready in wait(list(pipes), timeout):
            index = pipes[ready]
            process, pipe, job = self.running.pop(index)
            try:
                outcome: Outcome | None = pipe.recv()
            except (EOFError, OSError):
                outcome = None  # it died before it could say
            if outcome is None or outcome.exit_code in INTERRUPTED:
                self._retire(process, pipe)
            else:
                self.idle.append((process, pipe))
            done.append((index, outcome or _died(job, process.exitcode)))
        return done

    def stop(self, signum: int) -> list[tuple[int, Outcome]]:
        """Forward the signal; wait a bounded time for each to roll back; kill the rest."""
        self.close()
        for process, _, _ in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)
        done: list[tuple[int, Outcome]] = []
        deadline = time.monotonic() + STOP_WAIT_S
        while self.running and time.monotonic() < deadline:
            with contextlib.suppress(KeyboardInterrupt):  # a second signal: keep waiting
                done += self.ended(max(0.0, deadline - time.monotonic()))
        self.close()
        for index, (process, pipe, job) in list(self.running.items()):
            process.kill()
            self._retire(process, pipe)
            late = f"still running {STOP_WAIT_S:g}s after the signal"
            done.append((index, _died(job, process.exitcode, late)))
            del self.running[index]
        return done

    def close(self) -> None:
        """Let the idle workers go. Each is told to end: closing our end of its pipe would not
        do, as workers forked after it hold a copy of that end."""
        while self.idle:
            process, pipe = self.idle.pop()
            with contextlib.suppress(OSError):
                pipe.send(None)
            self._retire(process, pipe)

    @staticmethod
    def _retire(process: Any, pipe: Any) -> None:
        pipe.close()
        process.join()


def _serve(task_of: Callable[[int], _Task], pipe: Any) -> None:
    """A worker's body: run each target it is sent (a signal ends the target as it ends a
    single run) and send back what became of it, until its pipe closes or a signal came."""
    _die_with_parent()
    while True:
        try:
            index = pipe.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if index is None:  # no more targets
            return
        task = task_of(index)
        try:
            outcome = task()
        except KeyboardInterrupt as exc:  # before or after the run itself: nothing of it ran
            signum = int(getattr(exc, "signum", signal.SIGINT))
            outcome = Outcome(
                task.job.service,
                task.job.settings.display,
                "failed",
                error=f"interrupted ({signal.Signals(signum).name}) before any step ran",
                exit_code=128 + signum,
            )
        try:
            pipe.send(outcome)
        except (OSError, KeyboardInterrupt):
            return
        if outcome.exit_code in INTERRUPTED:
            return


def _died(job: Job, exitcode: int | None, after: str = "") -> Outcome:
    """The outcome of a worker that ended without saying: killed by a signal, or exited."""
    how = f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit {exitcode}"
    return Outcome(
        job.service,
        job.settings.display,
        "failed",
        error=f"worker died ({how}){', ' + after if after else ''}; what its run had "
        "committed stays: run 'status' on it",
        exit_code=1,
    )


def _die_with_parent() -> None:
    """A worker ends with the runner: a killed runner leaves no migration running on."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() == 1:  # the parent died before the call above
                os._exit(1)


def _not_run(job: Job, signum: int | None = None) -> Outcome:
    why = "earlier failures stopped the run"
    if signum is not None:
        why = f"the run was interrupted ({signal.Signals(signum).name})"
    return Outcome(
        job.service,
        job.settings.display,
        "not run",
        error=f"not started: {why}",
    )


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


def look_work(
    service: services.Service,
    settings: Settings,
    target: int | None,
    *,
    progress: Any = None,
    options: runner.RunOptions = runner.RunOptions(),
    peers: Any = None,
) -> runner.RunResult | None:
    """A quick look for a fleet: what ``up`` returns when there is nothing to do, else None."""
    return runner.first_look(service, settings, target, options)


def status_work(
    service: services.Service, settings: Settings, target: int | None, *, progress: Any = None
) -> runner.Status:
    """The work of one ``status`` job."""
    return runner.status(service, settings)
