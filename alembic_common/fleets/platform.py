"""The whole platform: every service's status, and every service to head in dependency order.

Each service uses its own database; two services resolving to one database are refused.
``all up`` cuts the services' pending versions into segments at the cross-service edges
(``deps.segments``) and runs them in order, independent ones in parallel (``fleet``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alembic_common.core import deps, runner
from alembic_common.core.project import Project
from alembic_common.core.services import Service
from alembic_common.core.settings import Settings
from alembic_common.errors import MigrationError, UsageError
from alembic_common.fleets import fleet

ALL = "all"


def targets(project: Project, resolve: Callable[[Service], Settings]) -> dict[str, Settings]:
    """Each service's own database; two services resolving to one database are refused."""
    found = {name: resolve(service) for name, service in project.services.items()}
    seen: dict[tuple[str, int, str], str] = {}
    for name, target in found.items():
        key = (target.host, target.port, target.database)
        if key in seen:
            raise UsageError(
                f"{seen[key]} and {name} both resolve to the database {target.label}: each service "
                f"needs its own (set {name.upper()}_DATABASE_URL; DATABASE_URL names one database)"
            )
        seen[key] = name
    return found


@dataclass(frozen=True)
class ServiceState:
    """One service in the platform's status: its own status, and what it waits for."""

    service: str
    target: Settings
    status: runner.Status | None = None
    unmet: list[deps.Unmet] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        s = self.status
        return s is not None and s.ok and not s.behind and not self.unmet and not s.in_progress

    def words(self) -> str:
        """Its state in words, worst first."""
        s = self.status
        if s is None:
            return self.error or "unknown"
        if s.unknown:
            return f"AHEAD {s.unknown}"
        if s.problem:
            return s.problem
        if self.unmet:
            return "; ".join(map(str, self.unmet))
        if s.in_progress:
            return f"PART-WAY: {s.in_progress.describe()}"
        if s.behind:
            return "behind"
        if s.held:
            return f"at head, {s.why_held}" if s.why_held else f"at head, {s.held} held"
        return "at head"

    def to_dict(self) -> dict[str, Any]:
        s = self.status
        if s is None:
            return {
                "service": self.service,
                "database": self.target.display,
                "error": self.error,
                "ok": False,
            }
        return {
            "service": self.service,
            "database": s.database,
            "current": s.current,
            "head": s.head,
            "pending": s.pending,
            "unknown": s.unknown,
            "problem": s.problem,
            "legacy": s.legacy,
            "unmet": [str(u) for u in self.unmet],
            "held": s.held,
            "in_progress": s.in_progress.to_dict() if s.in_progress else None,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class PlatformStatus:
    services: list[ServiceState]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.services)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "services": [s.to_dict() for s in self.services]}


def status(project: Project, where: dict[str, Settings]) -> PlatformStatus:
    """Every service's versions, pending work and unmet requirements."""
    deps.graph(project.services)  # declared dependencies are valid and acyclic
    rows = []
    for name, service in project.services.items():
        try:
            report = runner.status(service, where[name])
        except MigrationError as exc:
            rows.append(ServiceState(name, where[name], error=str(exc)))
            continue
        runnable = [v for v in report.pending if v not in report.held]
        unmet = deps.unmet(service, runnable, lambda other: where[other], project.services)
        rows.append(ServiceState(name, where[name], report, unmet))
    return PlatformStatus(rows)


def up(
    project: Project,
    where: dict[str, Settings],
    options: runner.RunOptions = runner.RunOptions(),
    *,
    jobs: int = 1,
    progress: Any = None,
    on_outcome: Callable[[int, fleet.Outcome], None] | None = None,
) -> list[tuple[Settings, fleet.Outcome]]:
    """Every service to head, in dependency order; one outcome per service.

    On the first failure no new work starts; running work finishes.
    """
    known = project.services
    before = {name: runner.status(service, where[name]) for name, service in known.items()}
    pending = {name: report.pending for name, report in before.items()}
    segments = deps.segments(known, pending)
    jobs_list = [
        fleet.Job(seg.service, where[seg.service], seg.target, frozenset(seg.after))
        for seg in segments
    ]
    stopped = None
    try:
        outcomes = fleet.run(
            jobs_list,
            fleet.up_work,
            root=project.root,
            parallel=jobs,
            max_failures=0,
            progress=progress,
            on_outcome=on_outcome,
            options=options,
        )
    except fleet.Stopped as stop:  # a signal: every service's outcome still goes out
        stopped, outcomes = stop, stop.outcomes
    merged = []
    for name in known:
        parts = [o for o, j in zip(outcomes, jobs_list, strict=True) if j.service == name]
        merged.append((where[name], fleet.merge(name, where[name], parts, before[name])))
    if stopped is not None:
        raise fleet.Stopped([o for _, o in merged], stopped.signum)
    return merged
