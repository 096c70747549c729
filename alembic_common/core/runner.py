"""``up``, ``down`` and ``status`` as plain functions over (Service, Settings) that return data.

Each reads the database state with psycopg and asks ``plan`` what to do. Only when there
is work does it take the service's advisory lock, re-read the state and re-plan under it,
and hand over to Alembic. Nothing here prints or exits; progress goes through a callback.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg

from alembic_common.authoring import checksums
from alembic_common.core import db, deps, history, locking, plan
from alembic_common.core.plan import Plan
from alembic_common.core.project import Project
from alembic_common.core.services import Service, revision_id
from alembic_common.core.settings import PRODUCTION, Settings
from alembic_common.core.state import Assessment, DbState, mismatched, read, refuse
from alembic_common.errors import (
    ConnectionLostError,
    Interrupted,
    LockLostError,
    LockTimeoutError,
    MigrationError,
    PrivilegeError,
    ProductionGuardError,
    RefusedError,
    StateError,
    StepError,
    UsageError,
    signal_name,
)
from alembic_common.online import partial, releases
from alembic_common.online.releases import Seen, Session
from alembic_common.safety import health, redact
from alembic_common.safety.health import Invalid

if TYPE_CHECKING:
    from alembic.config import Config

Progress = Callable[[dict[str, Any]], None]


class RunOptions(NamedTuple):
    """How a run behaves: waits, timeouts, retries, batching and environment."""

    wait: float = 0.0
    lock_wait: float = locking.DEFAULT_LOCK_WAIT
    lock_timeout: float = 5.0
    statement_timeout: float = 0.0
    retries: int = 3
    atomic: bool = False
    environment: str = "development"
    allow_production: bool = False
    contract: bool = False  # force contract steps, even with old releases connected
    hold_contract: bool = False  # hold contract steps, even when no old release is connected
    accept_changed: bool = False  # build on applied steps whose code changed since
    backup: bool | None = None  # None: only in production (see ``backs_up``)
    backup_dir: str | None = None  # None: MIGRATE_BACKUP_DIR, else backups/ in the project
    on_failure: str = "stop"  # "rollback": undo this run's steps when one fails

    @property
    def backs_up(self) -> bool:
        """Whether ``up`` takes a backup before it changes anything."""
        return self.backup if self.backup is not None else self.environment == PRODUCTION


@dataclass
class RunResult:
    """What an ``up`` or ``down`` did."""

    service: str
    database: str
    action: str
    before: int | None
    after: int | None
    steps: list[int] = field(default_factory=list)
    adopted: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # a held contract step, and all after it
    pending: list[int] = field(default_factory=list)  # what the code has beyond ``after``
    accepted: list[int] = field(default_factory=list)  # changed steps accepted as they are
    why_held: str | None = None
    holders: list[Session] = field(default_factory=list)  # sessions holding the contract back
    backup: str | None = None  # the backup taken before this run changed anything

    @property
    def noop(self) -> bool:
        return not self.steps and not self.adopted

    def to_dict(self) -> dict[str, Any]:
        found = {k: v for k, v in asdict(self).items() if k != "holders"}
        return {**found, "holders": [s.to_dict() for s in self.holders], "noop": self.noop}

    def hold(self, planned: Plan) -> None:
        self.held, self.why_held, self.holders = planned.held, planned.why_held, planned.holders


class MigrationStatus(NamedTuple):
    version: int
    description: str
    applied: bool
    applied_at: str | None
    part_way: bool = False  # stopped part-way (Status.in_progress says how)


class Status(NamedTuple):
    """Every version the code knows, and where the database stands (its ``Assessment``)."""

    service: str
    database: str
    found: Assessment
    migrations: list[MigrationStatus]
    held: list[int]  # a held contract step, and all after it
    # Applied versions whose recorded description is not the code's docstring any more.
    renamed: list[int]
    changed: list[int]  # applied, and their SQL changed since
    unverified: list[int]  # applied with no checksum recorded
    why_held: str | None
    holders: list[Session]  # announce an older version
    unannounced: list[Session]  # connected, announce nothing
    invalid: list[Invalid]  # NOT VALID constraints, INVALID indexes
    in_progress: partial.InProgress | None = None  # a step stopped part-way

    @property
    def current(self) -> int | None:
        return self.found.current

    @property
    def head(self) -> int | None:
        return self.found.head

    @property
    def pending(self) -> list[int]:
        return self.found.pending

    @property
    def unknown(self) -> list[int]:
        return self.found.unknown

    @property
    def legacy(self) -> bool:
        return self.found.legacy

    @property
    def problem(self) -> str | None:
        return self.found.problem

    @property
    def behind(self) -> bool:
        """Pending work that a plain 'up' would do (held contract steps don't count)."""
        return bool(set(self.pending) - set(self.held))

    @property
    def ok(self) -> bool:
        """True unless the database is ahead of the code, another service's, or inconsistent."""
        return not self.unknown and self.problem is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "database": self.database,
            "current": self.current,
            "head": self.head,
            "migrations": [m._asdict() for m in self.migrations],
            "pending": self.pending,
            "held": self.held,
            "unknown": self.unknown,
            "legacy": self.legacy,
            "problem": self.problem,
            "renamed": self.renamed,
            "changed": self.changed,
            "unverified": self.unverified,
            "why_held": self.why_held,
            "holders": [s.to_dict() for s in self.holders],
            "unannounced": [s.to_dict() for s in self.unannounced],
            "invalid": [i.to_dict() for i in self.invalid],
            "in_progress": self.in_progress.to_dict() if self.in_progress else None,
            "consistent": self.problem is None,
            "ahead": bool(self.unknown),
            "behind": self.behind,
        }


def tagged(progress: Progress | None, service: str, settings: Settings) -> Progress | None:
    """Stamp every event with the service and the target it concerns (never a credential)."""
    if progress is None:
        return None
    return lambda event: progress({"service": service, "target": settings.label, **event})


def check_version(service: Service, disk: list[int], version: int) -> None:
    """Refuse a version that no migration file has."""
    if version in disk:
        return
    head = max(disk, default=0)
    if version > head:
        raise UsageError(
            f"{service.name}: version {version} lies beyond the head ({head})",
            service=service.name,
            version=version,
        )
    first = f"{disk[0]}..{head}" if disk else "none"
    raise UsageError(
        f"{service.name}: no migration has version {version} (known: {first})",
        service=service.name,
        version=version,
    )


def refuse_unusable(service: Service, found: Assessment) -> None:
    """Stop when the database is ahead of the code, another service's, or inconsistent."""
    refuse(service.name, found)


def refuse_unseen(service: Service, planned: Plan) -> None:
    """A contract step to judge while the role may not see every session: refuse before
    anything changes, naming the grant (never run it blind, never hold it silently)."""
    gate = planned.gate
    if gate is None or gate.reason != "unseen":
        return
    contract = planned.held[0]
    raise PrivilegeError(
        f"{service.name}: contract step {contract} runs only once no session announces an "
        f"older release, and {gate.why}; nothing was changed ('up --hold-contract' applies "
        "what comes before it, 'up --contract' forces it)",
        service=service.name,
        version=contract,
    )


def refuse_production(service: Service, action: str, options: RunOptions) -> None:
    """Development-only actions stop here in production unless explicitly allowed."""
    if options.environment == PRODUCTION and not options.allow_production:
        raise ProductionGuardError(
            f"{service.name}: refusing '{action}' in production (APP_ENV/--env is production); "
            "pass --allow-production if you really mean it",
            service=service.name,
        )


def _pending_after(service: Service, after: int | None) -> list[int]:
    return [v for v in service.disk_versions() if after is None or v > after]


@contextmanager
def _interruptible(service: Service) -> Iterator[None]:
    """A signal outside any step: nothing was running, so nothing changed."""
    try:
        yield
    except KeyboardInterrupt as exc:
        signum, name = signal_name(exc)
        raise Interrupted(
            f"{service.name}: interrupted ({name}) before any step ran; nothing was changed",
            signum=signum,
            service=service.name,
        ) from None


# --- up -------------------------------------------------------------------------------------


def up(
    service: Service,
    settings: Settings,
    target: int | None = None,
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
    peers: Callable[[str], Settings] | None = None,
) -> RunResult:
    """Apply pending migrations (up to ``target``), adopting a legacy database first.

    Versions that declare ``requires`` are checked against the other services' databases
    (found through ``peers``, by default their own connection settings) before anything runs.
    """
    with _interruptible(service):
        result = _up(
            service, settings, target, options, tagged(progress, service.name, settings), peers
        )
    result.pending = _pending_after(service, result.after)
    return result


def _up(
    service: Service,
    settings: Settings,
    target: int | None,
    options: RunOptions,
    progress: Progress | None,
    peers: Callable[[str], Settings] | None,
) -> RunResult:
    if target is not None:
        check_version(service, service.disk_versions(), target)
    deadline = time.monotonic() + options.wait
    with db.connect(settings, wait=options.wait, on_wait=progress) as conn:
        planned = _plan(service, conn, target, options)
        refuse_unusable(service, planned.found)
        refuse_unseen(service, planned)
        current = planned.found.current
        result = RunResult(service.name, settings.display, "up", current, current)
        result.hold(planned)
        if not planned.idle:
            planned = _locked_apply(
                service, settings, target, options, progress, peers, conn, result
            )
        if planned.stranded and options.wait > 0:
            # What could run ran; --wait: wait for the old release, then go on past its contract.
            planned = _wait_for_releases(service, conn, target, options, deadline, progress)
            if not planned.stranded:
                planned = _locked_apply(
                    service, settings, target, options, progress, peers, conn, result
                )
        if planned.idle:
            result.hold(planned)
    _refuse_stranded(service, planned, result)
    if result.held and progress is not None:
        progress({"event": "held", "versions": result.held, "why": result.why_held})
    return result


def first_look(
    service: Service,
    settings: Settings,
    target: int | None = None,
    options: RunOptions = RunOptions(),
) -> RunResult | None:
    """The fast path of ``up`` alone: one short connection, no lock and no Alembic.

    Returns what ``up`` would return when it has nothing to run (at head, or held), raises
    what it would raise (ahead, inconsistent, later work stranded), and returns None when
    there is work (or a wait for a release) for ``up`` itself.
    """
    if target is not None:
        check_version(service, service.disk_versions(), target)
    with db.connect(settings, wait=options.wait) as conn:
        planned = _plan(service, conn, target, options)
    refuse_unusable(service, planned.found)
    refuse_unseen(service, planned)
    if not planned.idle or (planned.stranded and options.wait > 0):
        return None
    current = planned.found.current
    result = RunResult(service.name, settings.display, "up", current, current)
    result.hold(planned)
    _refuse_stranded(service, planned, result)
    result.pending = _pending_after(service, result.after)
    return result


def _locked_apply(
    service: Service,
    settings: Settings,
    target: int | None,
    options: RunOptions,
    progress: Progress | None,
    peers: Callable[[str], Settings] | None,
    conn: psycopg.Connection[Any],
    result: RunResult,
) -> Plan:
    """Take the service's lock on ``conn`` and apply what the plan says under it.

    While it waits for the lock, each wake-up looks again without it: when another run has
    done the work meanwhile, this one ends as a no-op without ever taking the lock."""
    latest: list[Plan] = []

    def needed() -> bool:
        latest[:] = [_plan(service, conn, target, options)]
        return not latest[0].idle

    try:
        with (
            _losing_connection(service, settings),
            locking.advisory_lock(
                conn, service.name, wait=options.lock_wait, on_wait=progress, needed=needed
            ) as pid,
        ):
            return _apply(service, settings, target, options, progress, peers, conn, pid, result)
    except locking.NotNeeded:
        (planned,) = latest
        _take_plan(service, result, planned)
        return planned


def _take_plan(service: Service, result: RunResult, planned: Plan) -> None:
    """Refuse a database the plan cannot use; else note where it stands in the result."""
    refuse_unusable(service, planned.found)
    refuse_unseen(service, planned)
    if not result.steps:
        result.before = planned.found.current
    result.after = planned.found.current
    result.hold(planned)


def _plan(
    service: Service,
    conn: psycopg.Connection[Any],
    target: int | None,
    options: RunOptions,
    state: DbState | None = None,
    sessions: Callable[[], Seen] | None = None,
    **extra: Any,
) -> Plan:
    """The plan on this connection; the sessions on the database are read only to judge a
    pending contract step (through ``sessions`` when the caller reads them once for more)."""
    return plan.make(
        service,
        state if state is not None else read(conn, service.schema),
        target,
        contract=options.contract,
        hold=options.hold_contract,
        sessions=sessions or (lambda: releases.sessions(conn, service.name)),
        **extra,
    )


def _sessions_once(service: Service, conn: psycopg.Connection[Any]) -> Callable[[], Seen]:
    """The sessions on the database, read at most once whoever asks."""
    return functools.cache(lambda: releases.sessions(conn, service.name))


def _wait_for_releases(
    service: Service,
    conn: psycopg.Connection[Any],
    target: int | None,
    options: RunOptions,
    deadline: float,
    progress: Progress | None,
) -> Plan:
    """``--wait``: wait for the sessions that strand later work behind a contract to go."""
    planned = _plan(service, conn, target, options)
    if planned.stranded and progress is not None:
        progress(
            {
                "event": "release_wait",
                "version": planned.held[0],
                "wait_s": round(max(0.0, deadline - time.monotonic()), 3),
                "why": planned.why_held,
            }
        )
    while planned.stranded and planned.holders and time.monotonic() < deadline:
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        planned = _plan(service, conn, target, options)
    return planned


def _refuse_stranded(service: Service, planned: Plan, result: RunResult) -> None:
    """Later work behind a held contract step is an error, never a quiet exit 0."""
    if not planned.stranded:
        return
    contract, later = planned.held[0], planned.held[1:]
    applied = f"; applied {', '.join(map(str, result.steps))}" if result.steps else ""
    raise StateError(
        f"{service.name}: version(s) {', '.join(map(str, later))} wait for contract step "
        f"{contract}: {planned.why_held}{applied}; the database stays at "
        f"{result.after if result.after is not None else 'no version'}",
        service=service.name,
        version=contract,
    )


def _apply(
    service: Service,
    settings: Settings,
    target: int | None,
    options: RunOptions,
    progress: Progress | None,
    peers: Callable[[str], Settings] | None,
    conn: psycopg.Connection[Any],
    lock_pid: int,
    result: RunResult,
) -> Plan:
    """Under the lock: re-read, re-plan, adopt, check, then run what the plan says."""
    state = read(conn, service.schema)
    step = state.in_progress
    if step is not None and (target is None or target >= step.version):
        state = _turn(service, conn, state, "up", progress)
    seen = _sessions_once(service, conn)  # one look at the releases for this whole decision
    planned = _plan(service, conn, target, options, state, seen)
    _take_plan(service, result, planned)
    if planned.idle:
        return planned  # another replica did the work while we waited
    service.load(planned.run)  # a file that does not import is named before any change
    _may_create_roles(service, conn, planned.run)
    if planned.adopt:
        _backup_once(service, settings, options, progress, result)
        result.adopted = _adopt(service, conn, state, progress)
        state = read(conn, service.schema)
        result.after = plan.make(service, state, target).found.current
    project = Project.of(service)
    planned = _plan(
        service,
        conn,
        target,
        options,
        state,
        seen,
        peers=peers or project.peers(settings),
        known=project.services,
    )
    result.hold(planned)
    if planned.blocked:
        raise deps.refusal(planned.blocked)
    if not planned.run:
        return planned
    _announce_unannounced(service, seen, planned, progress)
    result.accepted = _check_history(service, conn, state, planned, options, progress)
    _backup_once(service, settings, options, progress, result)
    destination = revision_id(planned.run[-1])
    try:
        result.steps += _run_alembic(
            service,
            settings,
            options,
            progress,
            planned.run,
            conn,
            lambda cfg: service.run_alembic(cfg, destination),
            history.Guard(service.name, lock_pid),
            checksums.expected(service, planned.run),
            state,
        )
    except (StepError, LockTimeoutError, RefusedError) as exc:
        if options.on_failure != "rollback" or options.atomic:
            raise
        raise _roll_back(service, settings, options, progress, conn, lock_pid, result, exc) from exc
    result.after = result.steps[-1] if result.steps else result.after
    return planned


def refuse_rollback_without_backup(name: str, options: RunOptions) -> None:
    """``--on-failure rollback`` may need the run's backup: refuse it up front without one."""
    if options.on_failure not in ("stop", "rollback"):
        raise UsageError(
            f"--on-failure must be 'stop' or 'rollback', not {options.on_failure!r}",
            service=name,
        )
    if options.on_failure == "rollback" and not options.atomic and not options.backs_up:
        raise UsageError(
            f"{name}: --on-failure rollback needs a backup taken at the start of the "
            "run, to restore if a step cannot be undone: add --backup (production takes one "
            "by default), or use --atomic",
            service=name,
        )


def _backup_once(
    service: Service,
    settings: Settings,
    options: RunOptions,
    progress: Progress | None,
    result: RunResult,
) -> None:
    """Before the run's first change: a backup, when asked for (or in production)."""
    if not options.backs_up or result.backup is not None:
        return
    from alembic_common.safety import backup

    folder = Path(options.backup_dir) if options.backup_dir else None
    result.backup = str(backup.take(service, settings, folder, progress=progress).path)


def _roll_back(
    service: Service,
    settings: Settings,
    options: RunOptions,
    progress: Progress | None,
    conn: psycopg.Connection[Any],
    lock_pid: int,
    result: RunResult,
    failure: MigrationError,
) -> MigrationError:
    """``--on-failure rollback``: undo the steps this run applied, newest first, by their
    downgrades; restore the run's backup if one of them is irreversible or its downgrade
    fails. Returns the error to raise, which says which path was taken."""

    from alembic_common.safety import backup

    before = result.before
    found = plan.assess_for(service, _turn(service, conn, read(conn, service.schema), "down"))
    done = sorted((v for v in found.applied if before is None or v > before), reverse=True)
    base = f"{failure}; --on-failure rollback: "
    at = before if before is not None else "no version"
    if not done:
        return StepError(
            base + f"nothing else was applied by this run; the database stays at {at}",
            service=service.name,
            version=failure.version,
        )
    paths = {m.version: m.path for m in service.migrations}
    stuck = [v for v in done if backup.irreversible(paths[v])]
    why = f"version(s) {', '.join(map(str, stuck))} cannot be undone (irreversible)"
    if not stuck:
        destination = revision_id(before) if before is not None else "base"
        try:
            undone = _run_alembic(
                service,
                settings,
                options,
                progress,
                done,
                conn,
                lambda cfg: service.run_alembic(cfg, destination, down=True),
                history.Guard(service.name, lock_pid),
            )
        except MigrationError as exc:
            why = f"the downgrade failed ({exc})"
        else:
            result.after = before
            if progress is not None:
                progress({"event": "rollback", "path": "downgrade", "versions": undone})
            return StepError(
                base + f"rolled back version(s) {', '.join(map(str, undone))} by their "
                f"downgrades; the database is back at {at}",
                service=service.name,
                version=failure.version,
            )
    if result.backup is None:
        return StepError(
            base + f"{why} and this run took no backup; the database is left at {found.current}",
            service=service.name,
            version=failure.version,
        )
    restored = backup.restore_under_lock(service, settings, conn, Path(result.backup), progress)
    result.after = restored.after
    if progress is not None:
        progress({"event": "rollback", "path": "restore", "backup": result.backup})
    return StepError(
        base + f"{why}; restored the backup {result.backup} taken at the start of the run; "
        f"the database is back at {restored.after if restored.after is not None else 'no version'}",
        service=service.name,
        version=failure.version,
    )


def _announce_unannounced(
    service: Service,
    sessions: Callable[[], Seen],
    planned: Plan,
    progress: Progress | None,
) -> None:
    """A contract step about to run beside sessions that announce nothing: say who they are."""
    contracts = service.contract_versions(planned.run)
    if not contracts or progress is None:
        return
    found = releases.unannounced(sessions().sessions)
    if found:
        progress(
            {
                "event": "unannounced",
                "version": contracts[0],
                "sessions": [s.to_dict() for s in found],
                "listed": releases.describe(found),
            }
        )


def _may_create_roles(service: Service, conn: psycopg.Connection[Any], run: list[int]) -> None:
    """A step that creates roles (``tenancy.create_roles``) needs a role that may: refuse
    before the run changes anything, naming the grant."""
    running = set(run)
    makers = [m.version for m in service.migrations if m.version in running and m.creates_roles]
    if makers:
        from alembic_common.safety import privileges

        privileges.may_create_roles(conn, service.name, f"version {makers[0]}")


def _applied_sums(state: DbState, found: Assessment) -> dict[int, str | None]:
    """The checksum recorded for each applied version (a set: histories run to thousands)."""
    done = set(found.applied)
    return {v: r.checksum for v, r in state.recorded.items() if v in done}


def _check_history(
    service: Service,
    conn: psycopg.Connection[Any],
    state: DbState,
    planned: Plan,
    options: RunOptions,
    progress: Progress | None,
) -> list[int]:
    """Refuse to build on applied steps whose code changed since, unless told to accept them."""
    changed = checksums.verdict(service, _applied_sums(state, planned.found)).changed
    if not changed:
        return []
    if not options.accept_changed:
        raise StateError(
            f"{service.name}: version(s) {', '.join(map(str, changed))} changed since they were "
            "applied (their SQL is not what ran); review the change, then run 'up "
            "--accept-changed' to record it as accepted",
            service=service.name,
            version=changed[0],
        )
    history.accept(conn, service.schema, checksums.expected(service, changed))
    if progress is not None:
        progress({"event": "accepted_changed", "versions": changed})
    return changed


# --- down -----------------------------------------------------------------------------------


def down(
    service: Service,
    settings: Settings,
    version: int,
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
) -> RunResult:
    """Roll back ``version`` and every later one, newest first (development only)."""
    refuse_production(service, "down", options)
    with _interruptible(service):
        result = _down(
            service, settings, version, options, tagged(progress, service.name, settings)
        )
    result.pending = _pending_after(service, result.after)
    return result


def _down(
    service: Service,
    settings: Settings,
    version: int,
    options: RunOptions,
    progress: Progress | None,
) -> RunResult:
    disk = service.disk_versions()
    check_version(service, disk, version)
    with db.connect(settings, wait=options.wait, on_wait=progress) as conn:
        refuse_unusable(service, plan.assess_for(service, read(conn, service.schema)))
        with (
            _losing_connection(service, settings),
            locking.advisory_lock(
                conn, service.name, wait=options.lock_wait, on_wait=progress
            ) as pid,
        ):
            state = read(conn, service.schema)
            step = state.in_progress
            if step is not None and version <= step.version:
                state = _turn(service, conn, state, "down", progress)
            found = plan.assess_for(service, state)
            refuse_unusable(service, found)
            if found.legacy:
                raise StateError(
                    f"{service.name}: this database was made by the previous migration system; "
                    "run 'up' once to adopt it before rolling back",
                    service=service.name,
                )
            if version not in found.applied:
                current = found.current if found.current is not None else "no version"
                raise StateError(
                    f"{service.name}: version {version} is not applied (the database is at "
                    f"{current}); nothing to roll back",
                    service=service.name,
                    version=version,
                )

            steps = sorted((v for v in found.applied if v >= version), reverse=True)
            service.load(steps)  # a file that does not import is named before any change
            below = [v for v in disk if v < version]
            destination = revision_id(below[-1]) if below else "base"
            result = RunResult(service.name, settings.display, "down", found.current, found.current)
            result.steps = _run_alembic(
                service,
                settings,
                options,
                progress,
                steps,
                conn,
                lambda cfg: service.run_alembic(cfg, destination, down=True),
                history.Guard(service.name, pid),
            )
            result.after = below[-1] if below else None
    return result


# --- wait -----------------------------------------------------------------------------------


def wait_for(
    service: Service,
    settings: Settings,
    version: int,
    timeout: float,
    *,
    poll: float = 1.0,
    say: Callable[[str], None] = lambda line: None,
) -> Assessment:
    """Read the database every ``poll`` seconds until it is ready for a release built for
    ``version``: every step up to it applied but contract steps (a release runs while they
    are held for an older one, through its version schema), its two tables agree and no
    step is part-way; StateError after ``timeout`` seconds, naming what was last seen. A
    database that cannot be reached yet is waited for too. ``say`` hears what is seen,
    each time it changes."""
    from alembic_common.errors import ConnectError

    disk = service.disk_versions()
    check_version(service, disk, version)
    upto = [v for v in disk if v <= version]
    needed = set(upto) - set(service.contract_versions(upto))
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            with db.connect(settings) as conn:
                state = read(conn, service.schema)
            found = plan.assess_for(service, state)
            if needed <= set(found.applied) and found.consistent and state.in_progress is None:
                return found
            seen = (
                f"the database is at version {found.current}"
                if found.current
                else "the database has no version yet"
            )
            if state.in_progress is not None:
                seen += f", version {state.in_progress.version} part-way"
            elif not found.consistent:
                seen += f", {found.problem}"
        except ConnectError as exc:
            seen = str(exc)
        if seen != last:
            say(f"{service.name}: waiting for version {version}: {seen}")
            last = seen
        left = deadline - time.monotonic()
        if left <= 0:
            raise StateError(
                f"{service.name}: not ready for version {version} after {timeout:g} s ({seen})",
                service=service.name,
            )
        time.sleep(min(poll, left))


# --- status ---------------------------------------------------------------------------------


def status(service: Service, settings: Settings, *, wait: float = 0) -> Status:
    """Every version the code knows, applied or pending, and the database's flags.

    Reads the files' declarations and the checksums file only: no Alembic import.
    """
    with db.connect(settings, wait=wait) as conn:
        state = read(conn, service.schema)
        seen = _sessions_once(service, conn)
        planned = _plan(service, conn, None, RunOptions(), state, seen)
        pending_contract = service.contract_versions(planned.found.pending)
        unannounced = releases.unannounced(seen().sessions) if pending_contract else []
        invalid = health.problems(conn, service)
    found = planned.found
    done = set(found.applied)
    rows = []
    for m in service.migrations:
        recorded = state.recorded.get(m.version)
        applied = m.version in done or (found.legacy and recorded is not None)
        applied_at = recorded.applied_at.isoformat() if recorded and recorded.applied_at else None
        stopped = state.in_progress is not None and state.in_progress.version == m.version
        rows.append(MigrationStatus(m.version, m.description, applied, applied_at, stopped))
    sums = checksums.verdict(service, _applied_sums(state, found))
    return Status(
        service.name,
        settings.display,
        found,
        rows,
        planned.held,
        [] if found.legacy else mismatched(state, service.descriptions),
        sums.changed,
        sums.unverified,
        planned.why_held,
        planned.holders,
        unannounced,
        invalid,
        state.in_progress,
    )


# --- helpers -------------------------------------------------------------------------------


def _adopt(
    service: Service, conn: psycopg.Connection[Any], state: DbState, progress: Progress | None
) -> list[int]:
    """Record Alembic's state for a database the previous system made, running nothing.

    One transaction on the lock session: a table that cannot be adopted was refused by
    ``assess`` before this, and a failure here changes nothing.
    """
    assert state.shape is not None
    top = max(state.recorded)
    history.stamp(conn, service.name, service.schema, state.shape, revision_id(top))
    if progress is not None:
        progress({"event": "adopted", "versions": sorted(state.recorded)})
    return sorted(state.recorded)


def _turn(
    service: Service,
    conn: psycopg.Connection[Any],
    state: DbState,
    direction: str,
    progress: Progress | None = None,
) -> DbState:
    """A step stopped part-way the other way: move the recorded version across it, in one
    transaction, so this run takes it up again in its own direction (partial.py)."""
    step = state.in_progress
    if step is None or step.direction == direction:
        return state
    below = [m.version for m in service.migrations if m.version < step.version]
    statements = partial.turn_sql(
        service.schema,
        step,
        revision_id(below[-1]) if below else None,
        revision_id(step.version),
        service.descriptions.get(step.version, f"revision {step.version}"),
    )
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)
    if progress is not None:
        progress(
            {"event": "part_way", "version": step.version, "was": step.direction, "now": direction}
        )
    return read(conn, service.schema)


def _undone(
    service: Service, settings: Settings, conn: psycopg.Connection[Any] | None, version: int | None
) -> str:
    """What became of the step that was running, looked up again after it failed: rolled
    back, or stopped part-way (read on the lock's session or, if that is gone, a new one)."""
    try:
        idle = psycopg.pq.TransactionStatus.IDLE
        if conn is not None and not conn.closed and conn.info.transaction_status == idle:
            stayed = partial.read(conn, service.schema)
        else:
            probe = Settings(service.name, settings.url, settings.source, 3, settings.embedded_dir)
            with db.connect(probe) as fresh:
                stayed = partial.read(fresh, service.schema)
    except (MigrationError, psycopg.Error):
        return (
            f"what stayed of version {version} could not be read (a step that commits in "
            "parts may have committed some); run 'status' once the database answers"
        )
    if stayed is not None and stayed.version == version:
        return stayed.describe()
    return f"version {version} was rolled back"


@contextmanager
def _losing_connection(service: Service, settings: Settings) -> Iterator[None]:
    """Turn a connection that died under the run into one clear error about it."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise ConnectionLostError(
            _lost(service, settings, None, exc), service=service.name
        ) from exc


def _is_disconnect(exc: BaseException, orig: Any) -> bool:
    """A dead connection, as opposed to an SQL error on a live one."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = getattr(orig, "sqlstate", None)
    return state is None or state.startswith("08") or state in {"57P01", "57P02", "57P03"}


def _lost(service: Service, settings: Settings, version: int | None, exc: BaseException) -> str:
    """Say what a lost connection did to the step that was running, after looking again."""
    cause = redact.first_line(exc)
    if version is None:
        return (
            f"{service.name}: the connection to {settings.label} was lost ({cause}); "
            "no migration step was running"
        )
    try:
        probe = Settings(service.name, settings.url, settings.source, 3, settings.embedded_dir)
        with db.connect(probe) as conn:
            found = read(conn, service.schema)
        now = plan.assess_for(service, found).current
        stayed = found.in_progress
        if stayed is not None and stayed.version == version:
            verdict = stayed.describe()
        elif now is not None and now >= version:
            verdict = f"version {version} had committed before the connection went"
        else:
            verdict = f"version {version} was rolled back (the database is at {now if now is not None else 'no version'})"
    except (MigrationError, psycopg.Error):
        verdict = (
            f"version {version} was rolled back by the server, but for any part it committed "
            "on its own (a backfill, a validation, an index built concurrently); run 'status' "
            "once it is reachable again"
        )
    return (
        f"{service.name}: the connection to {settings.label} was lost during version {version} "
        f"({cause}); {verdict}"
    )


def _run_alembic(
    service: Service,
    settings: Settings,
    options: RunOptions,
    progress: Progress | None,
    plan: list[int],
    lock_conn: psycopg.Connection[Any],
    run: Callable[[Config], None],
    guard: history.Guard,
    sums: Mapping[int, str] | None = None,
    state: DbState | None = None,
) -> list[int]:
    """Run one Alembic command, retrying lock timeouts; return the versions it committed.

    ``state`` is the state read (and checked) under the lock just before: the env.py's
    session set-up uses it instead of reading the whole history again, the first time."""
    from sqlalchemy.exc import DBAPIError

    committed: list[int] = []
    for attempt in range(options.retries + 1):
        done: list[int] = []
        held_back: list[dict[str, Any]] = []  # --atomic: reported once the batch commits

        def on_step(
            event: dict[str, Any],
            done: list[int] = done,
            held_back: list[dict[str, Any]] = held_back,
        ) -> None:
            done.append(event["version"])
            details = {k: v for k, v in event.items() if k != "action"}
            report = {"event": event["action"], **details}
            if options.atomic:
                held_back.append(report)
            elif progress is not None:
                progress(report)

        engine = db.engine(db.pinned(settings, lock_conn))  # the lock's own server
        try:
            with engine.connect() as migration:
                raw = migration.connection.driver_connection
                if progress is not None and raw is not None:
                    raw.add_notice_handler(notices(progress))
                run(
                    service.config(
                        connection=migration,
                        guard=guard,
                        checksums=sums,
                        state=state if attempt == 0 else None,
                        atomic=options.atomic,
                        lock_timeout_ms=int(options.lock_timeout * 1000),
                        statement_timeout_ms=int(options.statement_timeout * 1000),
                        on_step=on_step,
                        on_progress=progress,
                        compare_models=False,
                    )
                )
            for report in held_back:
                if progress is not None:
                    progress(report)
            return committed + done
        except BaseException as exc:
            failed_at = len(committed) + len(done)  # steps before it ran, even if rolled back
            version = plan[failed_at] if failed_at < len(plan) else None
            if options.atomic and progress is not None:
                for report in held_back:
                    progress({**report, "event": "rolled_back", "batch": True})
            if not options.atomic:
                committed += done
            if isinstance(exc, KeyboardInterrupt):
                undone = _undone(service, settings, lock_conn, version) if version else ""
                raise _noting(
                    _interrupted(service, version, committed, options, exc, undone), committed
                ) from None
            if isinstance(exc, LockLostError) and version is not None:
                raise _noting(
                    LockLostError(
                        f"{service.name}: the migration lock was lost during version {version} (its "
                        "session ended: a timeout, a restart or pg_terminate_backend); "
                        + _undone(service, settings, None, version),
                        service=service.name,
                        version=version,
                    ),
                    committed,
                ) from exc
            if isinstance(exc, MigrationError):
                _noting(exc, committed)
                raise
            if not isinstance(exc, Exception):
                raise
            orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else exc
            if _is_disconnect(exc, orig):
                raise _noting(
                    ConnectionLostError(
                        _lost(service, settings, version, orig or exc),
                        service=service.name,
                        version=version,
                    ),
                    committed,
                ) from exc
            if isinstance(orig, psycopg.errors.LockNotAvailable):
                if attempt < options.retries:
                    delay = min(8.0, 0.25 * 2**attempt)
                    if progress is not None:
                        progress(
                            {
                                "event": "lock_retry",
                                "version": version,
                                "attempt": attempt + 1,
                                "delay_s": delay,
                            }
                        )
                    time.sleep(delay)
                    continue
                raise _noting(
                    LockTimeoutError(
                        f"{service.name}: version {version} could not take a lock within "
                        f"{options.lock_timeout:g}s after {options.retries + 1} attempts "
                        f"({_lock_holders(lock_conn, service.schema)}); "
                        + _undone(service, settings, lock_conn, version),
                        service=service.name,
                        version=version,
                    ),
                    committed,
                ) from exc
            undone = "" if options.atomic else _undone(service, settings, lock_conn, version)
            raise _noting(
                StepError(
                    _step_failure(service, version, options, exc, orig, undone),
                    service=service.name,
                    version=version,
                ),
                committed,
            ) from exc
        finally:
            engine.dispose()
    raise AssertionError("unreachable")  # pragma: no cover


def _noting(error: MigrationError, committed: list[int]) -> MigrationError:
    """``error``, noting the steps this run committed before it (for ``--json``)."""
    error.done.setdefault("steps", list(committed))
    return error


NOTICE_PREFIX = "migrate: "


def notices(progress: Progress) -> Callable[[Any], None]:
    """Forward a migration's own NOTICEs (``RAISE NOTICE 'migrate: ...'``) as progress
    events: what a step skipped or kept, e.g. an operator role it may not create."""

    def handler(diagnostic: Any) -> None:
        message = diagnostic.message_primary or ""
        if message.startswith(NOTICE_PREFIX):
            progress({"event": "notice", "message": message[len(NOTICE_PREFIX) :]})

    return handler


def _interrupted(
    service: Service,
    version: int | None,
    kept: list[int],
    options: RunOptions,
    exc: BaseException,
    undone: str = "",
) -> Interrupted:
    signum, name = signal_name(exc)
    if options.atomic:
        stays = "; nothing of the batch was applied (--atomic)"
    elif kept:
        stays = f"; version(s) {', '.join(map(str, kept))}, done before it, stay"
    else:
        stays = ""
    if not version:
        running = "between steps"
    elif options.atomic or undone == f"version {version} was rolled back":
        running = f"during version {version}; it was rolled back"
    else:
        running = f"during version {version}; {undone}"
    return Interrupted(
        f"{service.name}: interrupted ({name}) {running}{stays}",
        signum=signum,
        service=service.name,
        version=version,
    )


def _step_failure(
    service: Service,
    version: int | None,
    options: RunOptions,
    exc: Exception,
    orig: Any,
    undone: str = "",
) -> str:
    cause = orig if orig is not None else exc
    detail = redact.first_line(cause)
    if isinstance(cause, psycopg.errors.QueryCanceled):
        detail = f"statement_timeout ({options.statement_timeout:g}s) cancelled it: {detail}"
    kept = "nothing was applied (--atomic)" if options.atomic else "earlier versions stay applied"
    if options.atomic or undone in ("", f"version {version} was rolled back"):
        return f"{service.name}: version {version} failed and was rolled back ({kept}): {detail}"
    return f"{service.name}: version {version} failed ({kept}); {undone}: {detail}"


def _lock_holders(conn: psycopg.Connection[Any], schema: str) -> str:
    """Which sessions hold locks on this database's tables, as far as PostgreSQL can tell."""
    rows = conn.execute(
        """
        SELECT DISTINCT CASE WHEN n.nspname = %s THEN c.relname::text
                             ELSE n.nspname || '.' || c.relname END, a.pid, coalesce(a.state, '?')
        FROM pg_catalog.pg_locks l
        JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
        JOIN pg_catalog.pg_class c ON c.oid = l.relation
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE l.granted AND l.locktype = 'relation' AND l.relation >= 16384
          AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                            WHERE d.datname = pg_catalog.current_database())
          AND a.pid <> pg_catalog.pg_backend_pid()
        ORDER BY 1 LIMIT 3
        """,
        [schema],
    ).fetchall()
    if not rows:
        return "the holder had gone by the time we looked"
    return "; ".join(f"table {t} held by pid {p} ({s})" for t, p, s in rows)
