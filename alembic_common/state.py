"""What a database holds (read with plain psycopg) and what that means against the code.

``read`` is the only query; ``assess`` is a pure function, so every decision about
pending, unknown, legacy and inconsistent states is made in one place and tested as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg

_PROBE = """
SELECT to_regclass('alembic_version') IS NOT NULL, to_regclass('schema_migrations') IS NOT NULL
"""


@dataclass(frozen=True)
class Recorded:
    """One ``schema_migrations`` row."""

    version: int
    description: str
    applied_at: datetime | None


@dataclass(frozen=True)
class DbState:
    """The two version tables as found."""

    alembic_table: bool = False
    history_table: bool = False
    heads: tuple[str, ...] = ()
    recorded: dict[int, Recorded] = field(default_factory=dict)


def read(conn: psycopg.Connection) -> DbState:
    """Read ``alembic_version`` and ``schema_migrations`` without taking any lock of note."""
    alembic_table, history_table = conn.execute(_PROBE).fetchone() or (False, False)
    heads: tuple[str, ...] = ()
    recorded: dict[int, Recorded] = {}
    if alembic_table:
        heads = tuple(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))
    if history_table:
        rows = conn.execute(
            "SELECT version, description, applied_at FROM schema_migrations ORDER BY version"
        )
        recorded = {r[0]: Recorded(*r) for r in rows}
    if not conn.autocommit:
        conn.rollback()
    return DbState(alembic_table, history_table, heads, recorded)


@dataclass(frozen=True)
class Assessment:
    """The database's state read against the versions this code knows."""

    current: int | None
    head: int | None
    applied: list[int]
    pending: list[int]
    unknown: list[int]
    legacy: bool
    problem: str | None

    @property
    def ahead(self) -> bool:
        return bool(self.unknown)

    @property
    def consistent(self) -> bool:
        return self.problem is None


def _current(heads: tuple[str, ...]) -> tuple[int | None, str | None]:
    if not heads:
        return None, None
    if len(heads) > 1:
        return None, f"alembic_version holds {len(heads)} heads ({', '.join(heads)})"
    if not heads[0].isdigit():
        return None, f"alembic_version holds {heads[0]!r}, which is not an integer version"
    return int(heads[0]), None


def assess(disk: list[int], state: DbState) -> Assessment:
    """Compare the database's two tables with each other and with the versions on disk."""
    head = max(disk) if disk else None
    recorded = set(state.recorded)
    legacy = not state.heads and bool(recorded)
    current, problem = _current(state.heads)
    if legacy:
        current = max(recorded)
    known = set(disk)
    unknown = sorted((recorded | ({current} if current is not None else set())) - known)
    if problem is None and not legacy and not unknown:
        expected = {v for v in disk if current is not None and v <= current}
        if recorded != expected:
            missing, extra = sorted(expected - recorded), sorted(recorded - expected)
            problem = f"alembic_version is at {current} but schema_migrations " + ", ".join(
                part
                for part in (
                    f"lacks {missing}" if missing else "",
                    f"also has {extra}" if extra else "",
                )
                if part
            )
    if legacy or problem:
        applied = sorted(recorded & known)
    else:
        applied = [v for v in disk if current is not None and v <= current]
    if legacy:
        pending = [v for v in disk if v not in recorded]
    else:
        pending = [v for v in disk if current is None or v > current]
    return Assessment(current, head, applied, pending, unknown, legacy, problem)


def legacy_gap(disk: list[int], state: DbState) -> list[int]:
    """Versions missing below the newest legacy row (the old system skipped them)."""
    top = max(state.recorded, default=0)
    return [v for v in disk if v <= top and v not in state.recorded]
