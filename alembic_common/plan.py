"""The plan of a run, computed in one place: which steps run now, which are held, which are
blocked, and why, from what the database holds, the target and the options.

Django's ``executor.migration_plan`` is the model: no side effects, data in and data out.
``up``, ``status``, ``plan``, ``all up`` and ``all status`` all read the same plan, so
they cannot disagree about a step (a contract step held by one and pending in another).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from alembic_common.services import Service
from alembic_common.state import Assessment, DbState, assess

if TYPE_CHECKING:
    from alembic_common.deps import Unmet
    from alembic_common.settings import Settings


@dataclass(frozen=True)
class Plan:
    """What an ``up`` of one service would do to one database, and why not more."""

    found: Assessment
    run: list[int]  # applied now, oldest first
    held: list[int] = field(default_factory=list)  # contract steps held back, and all after
    blocked: list[Unmet] = field(default_factory=list)  # requirements other services miss

    @property
    def adopt(self) -> bool:
        """A history made by the previous system is recorded for Alembic first."""
        return self.found.legacy

    @property
    def idle(self) -> bool:
        """Nothing to do: the no-op start that needs no lock and no Alembic."""
        return not self.run and not self.adopt

    @property
    def why_held(self) -> str | None:
        if not self.held:
            return None
        return (
            f"version(s) {', '.join(map(str, self.held))} held for contract "
            "(run 'up --contract' once no old release is running)"
        )


def assess_for(service: Service, state: DbState) -> Assessment:
    """Read a database's state against this service's history (owner included)."""
    # Descriptions cost a parse of every file; only an unclaimed history needs them.
    unclaimed = state.owner is None and bool(state.recorded) and state.alembic_table
    descriptions = service.descriptions if unclaimed else None
    return assess(service.disk_versions(), state, service.name, descriptions)


def split_held(
    pending: list[int], contract_steps: list[int], contract: bool
) -> tuple[list[int], list[int]]:
    """Cut pending versions before their first contract step, unless contract steps may run."""
    if contract:
        return pending, []
    first = next((i for i, v in enumerate(pending) if v in contract_steps), len(pending))
    return pending[:first], pending[first:]


def make(
    service: Service,
    state: DbState,
    target: int | None = None,
    *,
    contract: bool = False,
    peers: Callable[[str], Settings] | None = None,
    known: Mapping[str, Service] | None = None,
) -> Plan:
    """The plan of an ``up`` to ``target`` (None: head) of ``service`` on a database in ``state``.

    With ``peers`` (how to reach other services' databases), the steps to run are checked
    against the versions they ``require`` there; unmet requirements make the plan blocked.
    """
    found = assess_for(service, state)
    pending = [v for v in found.pending if target is None or v <= target]
    run, held = split_held(pending, service.contract_versions(pending), contract)
    blocked: list[Unmet] = []
    if peers is not None and run and known is not None:
        from alembic_common import deps

        blocked = deps.unmet(service, run, peers, known)
    return Plan(found, run, held, blocked)
