"""Dependencies between services: ``requires = {"patient": 1}`` in a migration file.

A migration may need other services' databases to have reached a version first (the
appointment service refers to patients and users). This module validates those
declarations (unknown services or versions, cycles), checks them against the other
databases, and cuts the platform's pending work into ordered segments for ``all up``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from alembic_common.core import db
from alembic_common.core.services import Service
from alembic_common.core.settings import Settings
from alembic_common.core.state import assess, read
from alembic_common.errors import ConfigError, MigrationError, ScriptError, StateError, UsageError

Node = tuple[str, int]  # (service, version)


def graph(known: Mapping[str, Service]) -> dict[Node, set[Node]]:
    """Every version of every service and what it needs: its predecessor and its requires."""
    edges: dict[Node, set[Node]] = {}
    existing = {name: {x.version for x in service.migrations} for name, service in known.items()}
    for name, service in known.items():
        for m in service.migrations:
            needs = {(name, m.version - 1)} if m.version > 1 else set()
            for other, version in m.requires.items():
                if other not in known:
                    raise ScriptError(
                        f"{m.path.name}: requires unknown service {other!r}; known: {', '.join(known)}",
                        service=name,
                        version=m.version,
                    )
                if version not in existing[other]:
                    raise ScriptError(
                        f"{m.path.name}: requires {other} version {version}, which does not exist",
                        service=name,
                        version=m.version,
                    )
                needs.add((other, version))
            edges[(name, m.version)] = needs
    _refuse_cycles(edges)
    return edges


def _refuse_cycles(edges: dict[Node, set[Node]]) -> None:
    """Name the first cycle found, e.g. ``appointment 1 -> patient 2 -> appointment 1``."""
    state: dict[Node, int] = {}  # 1 = on the current path, 2 = done
    path: list[Node] = []

    def visit(node: Node) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise ScriptError(
                    "dependency cycle between services: "
                    + " -> ".join(f"{s} {v}" for s, v in cycle)
                )
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


class Unmet(NamedTuple):
    """A version of ``service`` that needs ``other`` at ``needed``, which it has not reached."""

    service: str
    version: int
    other: str
    needed: int
    at: int | None
    where: str = ""  # the database that was looked at, host:port/database

    def __str__(self) -> str:
        at = self.at if self.at is not None else "no version"
        where = f" in {self.where}" if self.where else ""
        return (
            f"{self.service} {self.version} requires {self.other} {self.needed} "
            f"({self.other} is at {at}{where})"
        )


def applied_versions(service: Service, settings: Settings) -> list[int]:
    """The versions applied in a service's database (legacy rows count).

    The database must be that service's: a peer read in the wrong database is an error
    that names the database, never a silent "not there yet".
    """
    with db.connect(settings, direct=False) as conn:  # read only: a pooler or standby will do
        found = assess(service.disk_versions(), read(conn, service.schema), service.name)
    if found.problem or found.unknown:
        problem = found.problem or f"it is ahead of this code ({found.unknown})"
        raise StateError(
            f"the {service.name} database looked at ({settings.label}) cannot be used: {problem}",
            service=service.name,
        )
    return found.applied


def unmet(
    service: Service,
    versions: list[int],
    peers: Callable[[str], Settings],
    known: Mapping[str, Service],
) -> list[Unmet]:
    """Requirements of ``versions`` that the other services' databases do not meet yet.

    Declarations are checked (and a cycle named) before any other database is read.
    """
    wanted = set(versions)
    by_version = {m.version: m for m in service.migrations if m.version in wanted}
    if not any(m.requires for m in by_version.values()):
        return []
    graph(known)
    missing = []
    cache: dict[str, set[int]] = {}
    where: dict[str, str] = {}
    for version in versions:
        for other, needed in sorted(by_version[version].requires.items()):
            if other not in cache:
                try:
                    peer = peers(other)
                except MigrationError as exc:  # a bad setting stays a usage error (exit 2)
                    kind = ConfigError if isinstance(exc, UsageError) else StateError
                    raise kind(
                        f"{service.name} {version} requires {other} {needed}, which cannot be "
                        f"checked: {exc}",
                        service=service.name,
                        version=version,
                    ) from None
                cache[other] = set(applied_versions(known[other], peer))
                where[other] = peer.label
            if needed not in cache[other]:
                at = max(cache[other], default=None)
                missing.append(Unmet(service.name, version, other, needed, at, where[other]))
    return missing


def refusal(missing: list[Unmet]) -> StateError:
    """The error of an ``up`` whose pending versions need other services to move first."""
    return StateError(
        f"{'; '.join(map(str, missing))}: run 'migrate {missing[0].other} up' first "
        "(or 'migrate all up')",
        service=missing[0].service,
    )


@dataclass
class Segment:
    """A run of one service's pending versions that can go in one ``up --version``."""

    service: str
    versions: list[int]
    after: set[int] = field(default_factory=set)  # indices of segments to finish first

    @property
    def target(self) -> int:
        return self.versions[-1]


def segments(known: Mapping[str, Service], pending: Mapping[str, list[int]]) -> list[Segment]:
    """Cut every service's pending versions where another service must catch up or is waiting.

    A segment ends before a version that requires another service, and after a version
    another service requires, so independent work never waits on more than it needs.
    """
    edges = graph(known)
    required = {n for node, needs in edges.items() for n in needs if n[0] != node[0]}
    cut_before = {node for node, needs in edges.items() if any(n[0] != node[0] for n in needs)}
    result: list[Segment] = []
    where: dict[Node, int] = {}
    for name in sorted(pending):
        current: Segment | None = None
        for version in pending[name]:
            node = (name, version)
            starts_new = current is None or node in cut_before or (name, version - 1) in required
            if starts_new:
                if current is not None:
                    result.append(current)
                current = Segment(name, [])
            assert current is not None
            current.versions.append(version)
            where[node] = len(result)
        if current is not None:
            result.append(current)
    for index, seg in enumerate(result):
        first = seg.versions[0]
        for other_node in edges[(seg.service, first)] | {
            n for v in seg.versions for n in edges[(seg.service, v)]
        }:
            if other_node in where and where[other_node] != index:
                seg.after.add(where[other_node])
    return result
