"""The plan of a run, computed in one place: which steps run now, which are held, which are
blocked, and why, from what the database holds, the target and the options.

Django's ``executor.migration_plan`` is the model: no side effects, data in and data out.
``up``, ``status``, ``plan``, ``all up`` and ``all status`` all read the same plan, so
they cannot disagree about a step (a contract step held by one and pending in another).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from alembic_common.core.services import Service, revision_id
from alembic_common.core.state import Assessment, DbState, assess
from alembic_common.online import releases
from alembic_common.online.releases import Seen, Session

if TYPE_CHECKING:
    from alembic_common.core.deps import Unmet
    from alembic_common.core.settings import Settings


class Plan(NamedTuple):
    """What an ``up`` of one service would do to one database, and why not more."""

    found: Assessment
    run: list[int]  # applied now, oldest first
    held: list[int]  # a held contract step, and all after it
    blocked: list[Unmet]  # requirements other services miss
    gate: Gate | None  # why the first of ``held`` waits

    @property
    def adopt(self) -> bool:
        """A history made by the previous system is recorded for Alembic first."""
        return self.found.legacy

    @property
    def idle(self) -> bool:
        """Nothing to do: the no-op start that needs no lock and no Alembic."""
        return not self.run and not self.adopt

    @property
    def stranded(self) -> bool:
        """Work beyond the held contract step waits for it: a release needing it cannot run."""
        return len(self.held) > 1

    @property
    def holders(self) -> list[Session]:
        return self.gate.holders if self.gate else []

    @property
    def why_held(self) -> str | None:
        if not self.held or self.gate is None:
            return None
        return self.gate.words(self.held[0])


class Gate(NamedTuple):
    """Why a contract step waits: old releases connected, an operator's hold, no way to
    look (an offline plan), or sessions the gate cannot see (fail closed)."""

    # "sessions", "asked" (--hold-contract), "unknown" (an offline plan), "unseen" (the role
    # may not see every session: ``up`` refuses) or "pooler" (a pooler could not be read)
    reason: str
    holders: list[Session]  # announce an older version
    unannounced: list[Session]  # listed, never counted
    why: str | None = None  # what the gate cannot see ("unseen", "pooler")

    def words(self, contract: int) -> str:
        if self.reason == "asked":
            return f"contract step {contract} held (--hold-contract)"
        if self.reason == "unknown":
            return (
                f"contract step {contract} held (a plain 'up' runs it once no session "
                "announces an older version)"
            )
        listed = releases.describe(self.holders)
        if self.reason in ("unseen", "pooler"):
            also = f"; seen holding it: {listed}" if self.holders else ""
            return (
                f"contract step {contract} held: the gate cannot see every session on the "
                f"database ({self.why}){also}"
            )
        return (
            f"contract step {contract} held back by {len(self.holders)} session(s) announcing "
            f"an older version: {listed}; it runs by itself once they are gone "
            "(or 'up --contract' forces it)"
        )


def assess_for(service: Service, state: DbState) -> Assessment:
    """Read a database's state against this service's history (owner included)."""
    # Descriptions cost a parse of every file; only an unclaimed history needs them.
    unclaimed = state.owner is None and bool(state.recorded) and state.alembic_table
    descriptions = service.descriptions if unclaimed else None
    return assess(service.disk_versions(), state, service.name, descriptions)


def split_held(
    pending: list[int],
    contract_steps: list[int],
    contract: bool,
    *,
    hold: bool = False,
    sessions: Callable[[], Seen] | None = None,
) -> tuple[list[int], list[int], Gate | None]:
    """Cut pending versions before the first contract step that may not run yet.

    ``contract`` forces every contract step; ``hold`` holds them all. Otherwise a contract
    step V runs once no session (read through ``sessions``, only when there is one to
    judge) announces a version below V, and only when every session could be seen.
    Without ``sessions`` nothing can be judged: held.
    """
    if contract:
        return pending, [], None
    seen: Seen | None = None
    for i, v in enumerate(pending):
        if v not in contract_steps:
            continue
        if hold or sessions is None:
            return pending[:i], pending[i:], Gate("asked" if hold else "unknown", [], [])
        seen = sessions() if seen is None else seen
        holders = releases.holding(v, seen.sessions)
        others = releases.unannounced(seen.sessions)
        if seen.blind is not None:
            reason = "unseen" if seen.grant else "pooler"
            return pending[:i], pending[i:], Gate(reason, holders, others, seen.blind)
        if holders:
            return pending[:i], pending[i:], Gate("sessions", holders, others)
    return pending, [], None


def _undoing_counts_as_pending(service: Service, state: DbState, target: int | None) -> DbState:
    """A step stopped part-way while being undone is still recorded, but is not applied: an
    ``up`` (that reaches it) applies it again, so it plans from the version below it."""
    step = state.in_progress
    if step is None or step.direction != "down" or (target is not None and target < step.version):
        return state
    below = [m.version for m in service.migrations if m.version < step.version]
    return state._replace(
        recorded={v: r for v, r in state.recorded.items() if v != step.version},
        heads=(revision_id(below[-1]),) if below else (),
    )


def make(
    service: Service,
    state: DbState,
    target: int | None = None,
    *,
    contract: bool = False,
    hold: bool = False,
    sessions: Callable[[], Seen] | None = None,
    peers: Callable[[str], Settings] | None = None,
    known: Mapping[str, Service] | None = None,
) -> Plan:
    """The plan of an ``up`` to ``target`` (None: head) of ``service`` on a database in ``state``.

    With ``peers`` (how to reach other services' databases), the steps to run are checked
    against the versions they ``require`` there; unmet requirements make the plan blocked.
    """
    found = assess_for(service, _undoing_counts_as_pending(service, state, target))
    pending = [v for v in found.pending if target is None or v <= target]
    run, held, gate = split_held(
        pending, service.contract_versions(pending), contract, hold=hold, sessions=sessions
    )
    blocked: list[Unmet] = []
    if peers is not None and run and known is not None:
        from alembic_common.core import deps

        blocked = deps.unmet(service, run, peers, known)
    return Plan(found, run, held, blocked, gate)
