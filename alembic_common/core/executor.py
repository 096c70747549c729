"""The executor: one run of one service on one database, as Django's ``MigrationExecutor``.

It holds what every part of a run needs: the service, its settings and options, where
progress goes, the connection (the lock's session) and, once taken, the lock. Under the
lock it reads the database's state once, makes the plan once, and hands the plan's steps
to Alembic, which runs exactly those (from wherever its own read of the version table
says the database is, so a retry after a lock timeout goes on from the step that failed).
Nothing here prints or exits; progress goes out as typed events (``events.py``).
"""

from __future__ import annotations

import functools
import itertools
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from alembic_common.authoring import checksums
from alembic_common.core import db, deps, events, history, locking, plan, sqlsteps
from alembic_common.core.events import Event, Progress
from alembic_common.core.plan import Plan
from alembic_common.core.project import Project
from alembic_common.core.services import Service, revision_id
from alembic_common.core.settings import PRODUCTION, Settings
from alembic_common.core.state import Assessment, DbState, read, refuse
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
from alembic_common.safety import redact


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
    plain_sql: bool = True  # plain-SQL steps skip Alembic (sqlsteps.py); False: all through it

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

    def take(self, planned: Plan) -> None:
        """Where the plan found the database, once no step of this run has moved it."""
        if not self.steps:
            self.before = planned.found.current
        self.after = planned.found.current
        self.hold(planned)


# --- refusals, before anything changes ---------------------------------------------------------


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


def refuse_stranded(service: Service, planned: Plan, result: RunResult) -> None:
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


def refuse_production(service: Service, action: str, options: RunOptions) -> None:
    """Development-only actions stop here in production unless explicitly allowed."""
    if options.environment == PRODUCTION and not options.allow_production:
        raise ProductionGuardError(
            f"{service.name}: refusing '{action}' in production (APP_ENV/--env is production); "
            "pass --allow-production if you really mean it",
            service=service.name,
        )


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


# The failures --on-failure rollback answers (an interrupt or a lost connection is not one).
ROLLED_BACK_ON = (StepError, LockTimeoutError, RefusedError)


@contextmanager
def interruptible(service: Service) -> Iterator[None]:
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


# --- the executor ------------------------------------------------------------------------------


@dataclass
class Executor:
    """One run of ``service`` on the database ``conn`` is connected to (see the module)."""

    service: Service
    settings: Settings
    conn: psycopg.Connection[Any]
    options: RunOptions = field(default_factory=RunOptions)
    progress: Progress | None = None  # events arrive tagged with the service and target
    peers: Callable[[str], Settings] | None = None
    lock_pid: int | None = None  # the lock session's backend pid, while the lock is held

    @classmethod
    @contextmanager
    def connect(
        cls,
        service: Service,
        settings: Settings,
        options: RunOptions = RunOptions(),
        progress: Progress | None = None,
        peers: Callable[[str], Settings] | None = None,
    ) -> Iterator[Executor]:
        """An executor on a connection of its own to ``settings`` (closed at the end)."""
        reporting = tagged(progress, service.name, settings)
        with db.connect(settings, wait=options.wait, on_wait=reporting) as conn:
            yield cls(service, settings, conn, options, reporting, peers)

    def report(self, event: Event) -> None:
        if self.progress is not None:
            self.progress(event)

    def read(self) -> DbState:
        return read(self.conn, self.service.schema)

    def plan(
        self,
        target: int | None,
        state: DbState | None = None,
        sessions: Callable[[], Seen] | None = None,
    ) -> Plan:
        """The plan on this connection; the sessions on the database are read only to judge
        a pending contract step (through ``sessions`` when the caller reads them once)."""
        return plan.make(
            self.service,
            state if state is not None else self.read(),
            target,
            contract=self.options.contract,
            hold=self.options.hold_contract,
            sessions=sessions or (lambda: releases.sessions(self.conn, self.service.name)),
        )

    # --- up ------------------------------------------------------------------------------------

    def up(self, target: int | None) -> RunResult:
        """Apply pending steps up to ``target`` (None: head), adopting a legacy history first.

        A first look without the lock: a database with nothing to do ends here. Otherwise
        the lock, then the state read and the plan made again under it, once. ``target``
        is a version on disk (``check_version``, before any connection)."""
        deadline = time.monotonic() + self.options.wait
        planned = self.plan(target)
        _refuse(self.service, planned)
        current = planned.found.current
        result = RunResult(self.service.name, self.settings.display, "up", current, current)
        result.hold(planned)
        if not planned.idle:
            planned = self._locked_up(target, result)
        if planned.stranded and self.options.wait > 0:
            # What could run ran; --wait: wait for the old release, then go on past its contract.
            planned = self._wait_for_releases(target, deadline)
            if not planned.stranded:
                planned = self._locked_up(target, result)
        if planned.idle:
            result.hold(planned)
        refuse_stranded(self.service, planned, result)
        if result.held:
            self.report(events.Held(versions=result.held, why=result.why_held))
        return result

    def _locked_up(self, target: int | None, result: RunResult) -> Plan:
        """Take the lock and apply what the plan made under it says.

        While it waits for the lock, each wake-up looks again without it: when another run
        has done the work meanwhile, this one ends as a no-op without taking the lock."""
        latest: list[Plan] = []

        def needed() -> bool:
            latest[:] = [self.plan(target)]
            return not latest[0].idle

        try:
            with self._locked(needed):
                return self._apply(target, result)
        except locking.NotNeeded:
            (planned,) = latest
            _refuse(self.service, planned)
            result.take(planned)
            return planned

    def _apply(self, target: int | None, result: RunResult) -> Plan:
        """Under the lock: read the state once, make the plan once, check it, run it."""
        service = self.service
        state = self.read()
        step = state.in_progress
        if step is not None and (target is None or target >= step.version):
            state = self._turn(state, "up")
        seen = functools.cache(lambda: releases.sessions(self.conn, service.name))
        planned = self.plan(target, state, seen)
        _refuse(service, planned)
        result.take(planned)
        if planned.idle:
            return planned  # another replica did the work while we waited
        plain = self._plain(planned.run, False, state)
        # A file that does not import is named before any change (plain-SQL steps run
        # their SQL, not their file).
        service.load(v for v in planned.run if v not in plain)
        self._may_create_roles(planned.run)
        if planned.adopt:
            self._backup_once(result)
            result.adopted = self._adopt(state)
            state = self.read()
            planned = self.plan(target, state, seen)  # the adopted history, as Alembic's
            result.after = planned.found.current
            result.hold(planned)
        if planned.run:
            project = Project.of(service)
            peers = self.peers or project.peers(self.settings)
            unmet = deps.unmet(service, planned.run, peers, project.services)
            if unmet:
                raise deps.refusal(unmet)
        if not planned.run:
            return planned
        self._announce_unannounced(seen, planned)
        result.accepted = self._check_history(state, planned)
        self._backup_once(result)
        try:
            result.steps += self._run_steps(
                planned.run,
                sums=checksums.expected(service, planned.run),
                state=state,
                plain=self._plain(planned.run, False, state),
            )
        except ROLLED_BACK_ON as exc:
            if self.options.on_failure != "rollback" or self.options.atomic:
                raise
            raise self._roll_back(result, exc) from exc
        result.after = result.steps[-1] if result.steps else result.after
        return planned

    def _wait_for_releases(self, target: int | None, deadline: float) -> Plan:
        """``--wait``: wait for the sessions that strand later work behind a contract to go."""
        planned = self.plan(target)
        if planned.stranded:
            self.report(
                events.ReleaseWait(
                    version=planned.held[0],
                    wait_s=round(max(0.0, deadline - time.monotonic()), 3),
                    why=planned.why_held,
                )
            )
        while planned.stranded and planned.holders and time.monotonic() < deadline:
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            planned = self.plan(target)
        return planned

    # --- down ----------------------------------------------------------------------------------

    def down(self, version: int) -> RunResult:
        """Roll back ``version`` (on disk: ``check_version``) and every later one, newest
        first."""
        service = self.service
        disk = service.disk_versions()
        refuse(service.name, plan.assess_for(service, self.read()))
        with self._locked():
            state = self.read()
            step = state.in_progress
            if step is not None and version <= step.version:
                state = self._turn(state, "down")
            found = plan.assess_for(service, state)
            refuse(service.name, found)
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
            stuck = service.irreversible(steps, declared=True)
            if stuck:
                raise StateError(
                    f"{service.name}: version(s) {', '.join(map(str, stuck))} cannot be undone "
                    "(declared irreversible = True); nothing was "
                    f"changed: restore a backup taken before version {min(stuck)} "
                    f"('migrate {service.name} restore FILE')",
                    service=service.name,
                    version=max(stuck),
                )
            plain = self._plain(steps, True, state)
            service.load(v for v in steps if v not in plain)  # name a broken file first
            result = RunResult(
                service.name, self.settings.display, "down", found.current, found.current
            )
            result.steps = self._run_steps(steps, down=True, state=state, plain=plain)
            below = [v for v in disk if v < version]
            result.after = below[-1] if below else None
        return result

    # --- the lock and Alembic ------------------------------------------------------------------

    @contextmanager
    def _locked(self, needed: Callable[[], bool] | None = None) -> Iterator[int]:
        """The service's migration lock on this executor's connection, for the block."""
        with (
            _losing_connection(self.service, self.settings),
            locking.advisory_lock(
                self.conn,
                self.service.name,
                wait=self.options.lock_wait,
                on_wait=self.progress,
                needed=needed,
            ) as pid,
        ):
            self.lock_pid = pid
            try:
                yield pid
            finally:
                self.lock_pid = None

    def _plain(self, versions: list[int], down: bool, state: DbState) -> set[int]:
        """Which of ``versions`` run as plain SQL (sqlsteps.py): all but those that need
        Alembic, unless the run needs Alembic for every step (``--atomic``, ``-x``, a step
        part-way, or ``plain_sql`` off)."""
        from alembic_common.core import xargs

        options = self.options
        if not options.plain_sql or options.atomic or xargs.current() or state.in_progress:
            return set()
        service = self.service
        return {v for v in versions if sqlsteps.statements(service, v, down) is not None}

    def _run_steps(
        self,
        versions: list[int],
        *,
        down: bool = False,
        sums: Mapping[int, str] | None = None,
        state: DbState,
        plain: set[int] | frozenset[int] = frozenset(),
    ) -> list[int]:
        """Run ``versions`` (in running order), each stretch of plain-SQL steps (``plain``)
        on the lock's session, the others through Alembic; return the versions committed.

        ``state`` is the state read (and checked) under the lock just before: the first
        stretch uses it instead of reading the whole history again."""
        committed: list[int] = []
        for is_plain, group in itertools.groupby(versions, key=lambda v: v in plain):
            stretch = list(group)
            if is_plain:
                if not committed:
                    sqlsteps.prepare(self.conn, self.service, state)
                committed += self._retrying(stretch, committed, down, sums, self._sql_steps)
            else:
                first = state if not committed else None
                committed += self._retrying(
                    stretch, committed, down, sums, functools.partial(self._alembic, state=first)
                )
        return committed

    def _retrying(
        self,
        versions: list[int],
        before: list[int],
        down: bool,
        sums: Mapping[int, str] | None,
        run: Callable[..., None],
    ) -> list[int]:
        """Run ``versions`` with ``run``, retrying lock timeouts; return those committed
        (``before``: what this run committed earlier, for the error's account)."""
        options = self.options
        assert self.lock_pid is not None, "steps run under the lock"
        committed: list[int] = []
        for attempt in range(options.retries + 1):
            done: list[int] = []
            held_back: list[Step] = []  # --atomic: reported once the batch commits

            def on_step(
                event: Step, done: list[int] = done, held_back: list[Step] = held_back
            ) -> None:
                done.append(event.version)
                if options.atomic:
                    held_back.append(event)
                else:
                    self.report(event)

            try:
                run(versions[len(committed) :], down, sums, on_step, attempt)
                for event in held_back:
                    self.report(event)
                return committed + done
            except BaseException as exc:
                failed_at = len(committed) + len(done)  # steps before it ran, even if rolled back
                version = versions[failed_at] if failed_at < len(versions) else None
                if options.atomic:
                    for event in held_back:
                        self.report(
                            events.RolledBack(
                                version=event.version, duration_ms=event.duration_ms, batch=True
                            )
                        )
                else:
                    committed += done
                if isinstance(exc, Exception) and attempt < options.retries:
                    orig = _driver_error(exc)
                    if isinstance(orig, psycopg.errors.LockNotAvailable) and not _is_disconnect(
                        exc, orig
                    ):
                        delay = min(8.0, 0.25 * 2**attempt)
                        self.report(
                            events.LockRetry(version=version, attempt=attempt + 1, delay_s=delay)
                        )
                        time.sleep(delay)
                        continue
                if not isinstance(exc, Exception | KeyboardInterrupt):
                    raise
                so_far = before + committed
                error = _noting(self._failure(exc, version, so_far), so_far)
                if error is exc:
                    raise
                raise error from (None if isinstance(exc, KeyboardInterrupt) else exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _sql_steps(
        self,
        versions: list[int],
        down: bool,
        sums: Mapping[int, str] | None,
        on_step: Callable[[Step], None],
        attempt: int,
    ) -> None:
        """Plain-SQL steps on the lock's own session, one transaction each."""
        service, options = self.service, self.options
        session = sqlsteps.session_sql(
            service, int(options.lock_timeout * 1000), int(options.statement_timeout * 1000)
        )
        handler = notices(self.progress) if self.progress is not None else None
        if handler is not None:
            self.conn.add_notice_handler(handler)
        described = service.descriptions
        try:
            for version in versions:
                body = sqlsteps.statements(service, version, down)
                assert body is not None, "only plain-SQL steps come here"
                duration_ms = sqlsteps.run_step(
                    self.conn,
                    service,
                    version,
                    body,
                    down=down,
                    session=session,
                    description=described.get(version, f"revision {revision_id(version)}"),
                    checksum=(sums or {}).get(version),
                )
                made = events.RolledBack if down else events.Applied
                on_step(made(version=version, duration_ms=duration_ms))
        finally:
            if handler is not None:
                self.conn.remove_notice_handler(handler)

    def _alembic(
        self,
        versions: list[int],
        down: bool,
        sums: Mapping[int, str] | None,
        on_step: Callable[[Step], None],
        attempt: int,
        *,
        state: DbState | None,
    ) -> None:
        """Steps through Alembic, on a connection of their own to the lock's server; the
        env.py's session set-up uses ``state`` instead of reading the history again, the
        first time."""
        service, options = self.service, self.options
        assert self.lock_pid is not None
        engine = db.engine(db.pinned(self.settings, self.conn))  # the lock's own server
        try:
            with engine.connect() as migration:
                raw = migration.connection.driver_connection
                if self.progress is not None and raw is not None:
                    raw.add_notice_handler(notices(self.progress))
                service.run_alembic(
                    service.config(
                        connection=migration,
                        guard=history.Guard(service.name, self.lock_pid),
                        checksums=sums,
                        state=state if attempt == 0 else None,
                        atomic=options.atomic,
                        lock_timeout_ms=int(options.lock_timeout * 1000),
                        statement_timeout_ms=int(options.statement_timeout * 1000),
                        on_step=on_step,
                        on_progress=self.progress,
                        compare_models=False,
                    ),
                    [revision_id(v) for v in versions],
                    down=down,
                )
        finally:
            engine.dispose()

    def _failure(
        self, exc: Exception | KeyboardInterrupt, version: int | None, committed: list[int]
    ) -> MigrationError:
        """The one error that says what a failed run did and left."""
        service, options = self.service, self.options
        if isinstance(exc, KeyboardInterrupt):
            undone = self._undone(version, self.conn) if version else ""
            return _interrupted(service, version, committed, options, exc, undone)
        if isinstance(exc, LockLostError) and version is not None:
            return LockLostError(
                f"{service.name}: the migration lock was lost during version {version} (its "
                "session ended: a timeout, a restart or pg_terminate_backend); "
                + self._undone(version, None),
                service=service.name,
                version=version,
            )
        if isinstance(exc, MigrationError):
            return exc
        orig = _driver_error(exc)
        if _is_disconnect(exc, orig):
            return ConnectionLostError(
                self._lost(version, orig or exc), service=service.name, version=version
            )
        if isinstance(orig, psycopg.errors.LockNotAvailable):
            return LockTimeoutError(
                f"{service.name}: version {version} could not take a lock within "
                f"{options.lock_timeout:g}s after {options.retries + 1} attempts "
                f"({_lock_holders(self.conn, service.schema)}); "
                + self._undone(version, self.conn),
                service=service.name,
                version=version,
            )
        undone = "" if options.atomic else self._undone(version, self.conn)
        return StepError(
            _step_failure(service, version, options, exc, orig, undone),
            service=service.name,
            version=version,
        )

    # --- what a run does besides its steps -----------------------------------------------------

    def _roll_back(self, result: RunResult, failure: MigrationError) -> MigrationError:
        """``--on-failure rollback``: undo the steps this run applied, newest first, by their
        downgrades; restore the run's backup if one of them is irreversible or its downgrade
        fails. Returns the error to raise, which says which path was taken."""
        from alembic_common.safety import backup

        service = self.service
        before = result.before
        state = self._turn(self.read(), "down")
        found = plan.assess_for(service, state)
        done = sorted((v for v in found.applied if before is None or v > before), reverse=True)
        at = before if before is not None else "no version"

        def ended(how: str, undone: list[int] | None = None) -> MigrationError:
            """The error to raise, with what the run did for --json: the steps it applied,
            those it undid, and the backup it took (and whether it restored it)."""
            kind = type(failure) if type(failure) in ROLLED_BACK_ON else StepError
            error = kind(  # the failure's own kind: step, lock_timeout, refused
                f"{failure}; --on-failure rollback: {how}",
                service=service.name,
                version=failure.version,
            )
            error.done.update(failure.done)
            error.done["rolled_back"] = undone or []
            if result.backup is not None:
                error.done["backup"] = result.backup
            return error

        if not done:
            return ended(f"nothing else was applied by this run; the database stays at {at}")
        stuck = service.irreversible(done)
        why = f"version(s) {', '.join(map(str, stuck))} cannot be undone (irreversible)"
        if not stuck:
            try:
                plain = self._plain(done, True, state)
                service.load(v for v in done if v not in plain)
                undone = self._run_steps(done, down=True, state=state, plain=plain)
            except MigrationError as exc:
                why = f"the downgrade failed ({exc})"
            else:
                result.after = before
                self.report(events.Rollback(path="downgrade", versions=undone))
                return ended(
                    f"rolled back version(s) {', '.join(map(str, undone))} by their "
                    f"downgrades; the database is back at {at}",
                    undone,
                )
        if result.backup is None:
            return ended(
                f"{why} and this run took no backup; the database is left at {found.current}"
            )
        restored = backup.restore_under_lock(
            service, self.settings, self.conn, Path(result.backup), self.progress
        )
        result.after = restored.after
        self.report(events.Rollback(path="restore", backup=result.backup))
        error = ended(
            f"{why}; restored the backup {result.backup} taken at the start of the run; "
            "the database is back at "
            f"{restored.after if restored.after is not None else 'no version'}",
            done,
        )
        error.done["restored"] = True
        return error

    def _backup_once(self, result: RunResult) -> None:
        """Before the run's first change: a backup, when asked for (or in production)."""
        if not self.options.backs_up or result.backup is not None:
            return
        from alembic_common.safety import backup

        folder = Path(self.options.backup_dir) if self.options.backup_dir else None
        taken = backup.take(self.service, self.settings, folder, progress=self.progress)
        result.backup = str(taken.path)

    def _announce_unannounced(self, sessions: Callable[[], Seen], planned: Plan) -> None:
        """A contract step about to run beside sessions that announce nothing: say who."""
        contracts = self.service.contract_versions(planned.run)
        if not contracts or self.progress is None:
            return
        found = releases.unannounced(sessions().sessions)
        if found:
            self.report(
                events.Unannounced(
                    version=contracts[0],
                    sessions=[s.to_dict() for s in found],
                    listed=releases.describe(found),
                )
            )

    def _may_create_roles(self, run: list[int]) -> None:
        """A step that creates roles (``tenancy.create_roles``) needs a role that may: refuse
        before the run changes anything, naming the grant."""
        running = set(run)
        makers = [
            m.version for m in self.service.migrations if m.version in running and m.creates_roles
        ]
        if makers:
            from alembic_common.safety import privileges

            privileges.may_create_roles(self.conn, self.service.name, f"version {makers[0]}")

    def _check_history(self, state: DbState, planned: Plan) -> list[int]:
        """Refuse to build on applied steps whose code changed since, unless told to accept."""
        service = self.service
        changed = checksums.verdict(service, applied_sums(state, planned.found)).changed
        if not changed:
            return []
        if not self.options.accept_changed:
            raise StateError(
                f"{service.name}: version(s) {', '.join(map(str, changed))} changed since they "
                "were applied (their SQL is not what ran); review the change, then run 'up "
                "--accept-changed' to record it as accepted",
                service=service.name,
                version=changed[0],
            )
        history.accept(self.conn, service.schema, checksums.expected(service, changed))
        self.report(events.AcceptedChanged(versions=changed))
        return changed

    def _adopt(self, state: DbState) -> list[int]:
        """Record Alembic's state for a database the previous system made, running nothing.

        One transaction on the lock session: a table that cannot be adopted was refused by
        ``assess`` before this, and a failure here changes nothing."""
        assert state.shape is not None
        top = max(state.recorded)
        service = self.service
        history.stamp(self.conn, service.name, service.schema, state.shape, revision_id(top))
        self.report(events.Adopted(versions=sorted(state.recorded)))
        return sorted(state.recorded)

    def _turn(self, state: DbState, direction: str) -> DbState:
        """A step stopped part-way the other way: move the recorded version across it, in one
        transaction, so this run takes it up again in its own direction (partial.py)."""
        step = state.in_progress
        if step is None or step.direction == direction:
            return state
        service = self.service
        below = [m.version for m in service.migrations if m.version < step.version]
        statements = partial.turn_sql(
            service.schema,
            step,
            revision_id(below[-1]) if below else None,
            revision_id(step.version),
            service.descriptions.get(step.version, f"revision {step.version}"),
        )
        with self.conn.transaction():
            for statement in statements:
                self.conn.execute(statement)
        self.report(events.PartWay(version=step.version, was=step.direction, now=direction))
        return self.read()

    # --- what a failure left ------------------------------------------------------------------

    def _undone(self, version: int | None, conn: psycopg.Connection[Any] | None) -> str:
        """What became of the step that was running, looked up again after it failed: rolled
        back, or stopped part-way (read on the lock's session or, if gone, a new one)."""
        schema = self.service.schema
        try:
            idle = psycopg.pq.TransactionStatus.IDLE
            if conn is not None and not conn.closed and conn.info.transaction_status == idle:
                stayed = partial.read(conn, schema)
            else:
                with db.connect(_probe(self.service, self.settings)) as fresh:
                    stayed = partial.read(fresh, schema)
        except (MigrationError, psycopg.Error):
            return (
                f"what stayed of version {version} could not be read (a step that commits in "
                "parts may have committed some); run 'status' once the database answers"
            )
        if stayed is not None and stayed.version == version:
            return stayed.describe()
        return f"version {version} was rolled back"

    def _lost(self, version: int | None, exc: BaseException) -> str:
        """Say what a lost connection did to the step that was running, after looking again."""
        return lost(self.service, self.settings, version, exc)


# --- helpers -------------------------------------------------------------------------------------

Step = events.Applied | events.RolledBack  # what env.py reports as each step commits


def _refuse(service: Service, planned: Plan) -> None:
    refuse_unusable(service, planned.found)
    refuse_unseen(service, planned)


def tagged(progress: Progress | None, service: str, settings: Settings) -> Progress | None:
    """Stamp every event with the service and the target it concerns (never a credential)."""
    if progress is None:
        return None
    label = settings.label
    return lambda event: progress(event.tagged(service, label))


def applied_sums(state: DbState, found: Assessment) -> dict[int, str | None]:
    """The checksum recorded for each applied version (a set: histories run to thousands)."""
    done = set(found.applied)
    return {v: r.checksum for v, r in state.recorded.items() if v in done}


@contextmanager
def _losing_connection(service: Service, settings: Settings) -> Iterator[None]:
    """Turn a connection that died under the run into one clear error about it."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise ConnectionLostError(lost(service, settings, None, exc), service=service.name) from exc


def _probe(service: Service, settings: Settings) -> Settings:
    """The settings for a short look after a failure: a quick connect timeout."""
    return Settings(service.name, settings.url, settings.source, 3, settings.embedded_dir)


def lost(service: Service, settings: Settings, version: int | None, exc: BaseException) -> str:
    """Say what a lost connection did to the step that was running, after looking again."""
    cause = redact.first_line(exc)
    if version is None:
        return (
            f"{service.name}: the connection to {settings.label} was lost ({cause}); "
            "no migration step was running"
        )
    try:
        with db.connect(_probe(service, settings)) as conn:
            found = read(conn, service.schema)
        now = plan.assess_for(service, found).current
        stayed = found.in_progress
        if stayed is not None and stayed.version == version:
            verdict = stayed.describe()
        elif now is not None and now >= version:
            verdict = f"version {version} had committed before the connection went"
        else:
            at = now if now is not None else "no version"
            verdict = f"version {version} was rolled back (the database is at {at})"
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


def _sqlalchemy_error(exc: BaseException) -> Any:
    """``exc`` as SQLAlchemy's DBAPIError, else None (SQLAlchemy is not even imported by a
    run of plain-SQL steps)."""
    found = sys.modules.get("sqlalchemy.exc")
    return exc if found is not None and isinstance(exc, found.DBAPIError) else None


def _driver_error(exc: BaseException) -> Any:
    """The driver's own error under ``exc`` (``exc`` itself when it is one)."""
    wrapped = _sqlalchemy_error(exc)
    return getattr(wrapped, "orig", None) if wrapped is not None else exc


def _is_disconnect(exc: BaseException, orig: Any) -> bool:
    """A dead connection, as opposed to an SQL error on a live one."""
    wrapped = _sqlalchemy_error(exc)
    if wrapped is not None and wrapped.connection_invalidated:
        return True
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = getattr(orig, "sqlstate", None)
    return state is None or state.startswith("08") or state in {"57P01", "57P02", "57P03"}


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
            progress(events.Notice(message=message[len(NOTICE_PREFIX) :]))

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
