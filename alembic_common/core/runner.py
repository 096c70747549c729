"""``up``, ``down``, ``status`` and ``wait`` as plain functions over (Service, Settings)
that return data: the library's entry points for the CLI, fleets and the startup hook.

``up`` and ``down`` hand their work to the executor (``executor.py``), which holds the
connection and the lock, reads the state once under the lock and makes the plan once.
``first_look``, ``status`` and ``wait_for`` only read, with no lock and no Alembic.
Nothing here prints or exits; progress goes out as typed events (``events.py``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import psycopg

from alembic_common.authoring import checksums
from alembic_common.core import db, plan
from alembic_common.core.events import Progress
from alembic_common.core.executor import (
    Executor,
    RunOptions,
    RunResult,
    applied_sums,
    check_version,
    interruptible,
    refuse_production,
    refuse_rollback_without_backup,
    refuse_stranded,
    refuse_unseen,
    refuse_unusable,
    tagged,
)
from alembic_common.core.services import Service
from alembic_common.core.settings import Settings
from alembic_common.core.state import Assessment, mismatched, read
from alembic_common.errors import StateError
from alembic_common.online import partial, releases
from alembic_common.online.releases import Session
from alembic_common.safety import health
from alembic_common.safety.health import Invalid

__all__ = [
    "MigrationStatus",
    "Progress",
    "RunOptions",
    "RunResult",
    "Status",
    "check_version",
    "down",
    "first_look",
    "refuse_production",
    "refuse_rollback_without_backup",
    "refuse_unusable",
    "status",
    "tagged",
    "up",
    "wait_for",
]


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


def _pending_after(service: Service, after: int | None) -> list[int]:
    return [v for v in service.disk_versions() if after is None or v > after]


# --- up and down --------------------------------------------------------------------------------


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
    if target is not None:
        check_version(service, service.disk_versions(), target)
    with (
        interruptible(service),
        Executor.connect(service, settings, options, progress, peers) as run,
    ):
        result = run.up(target)
    result.pending = _pending_after(service, result.after)
    return result


def plan_on(
    conn: psycopg.Connection[Any], service: Service, target: int | None, options: RunOptions
) -> plan.Plan:
    """What ``up`` would do now on the database of ``conn``, read without the lock (the
    sessions on it are read only to judge a pending contract step)."""
    return plan.make(
        service,
        read(conn, service.schema),
        target,
        contract=options.contract,
        hold=options.hold_contract,
        sessions=lambda: releases.sessions(conn, service.name),
    )


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
    with interruptible(service), db.connect(settings, wait=options.wait) as conn:
        planned = plan_on(conn, service, target, options)
    refuse_unusable(service, planned.found)
    refuse_unseen(service, planned)
    if not planned.idle or (planned.stranded and options.wait > 0):
        return None
    current = planned.found.current
    result = RunResult(service.name, settings.display, "up", current, current)
    result.hold(planned)
    refuse_stranded(service, planned, result)
    result.pending = _pending_after(service, result.after)
    return result


def down(
    service: Service,
    settings: Settings,
    version: int,
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
) -> RunResult:
    """Roll back ``version`` and every later one, newest first (development only)."""
    refuse_production(service, "down", options)
    check_version(service, service.disk_versions(), version)
    with interruptible(service), Executor.connect(service, settings, options, progress) as run:
        result = run.down(version)
    result.pending = _pending_after(service, result.after)
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
    from alembic_common.errors import ConnectError, TopologyError

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
        except TopologyError:
            raise  # a pooler or a standby is no database still starting: waiting cannot help
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
        seen = functools.cache(lambda: releases.sessions(conn, service.name))
        planned = plan.make(service, state, sessions=seen)
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
    sums = checksums.verdict(service, applied_sums(state, found))
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
