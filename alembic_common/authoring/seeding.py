"""Demo and fixture data: ``services/<name>/seeds/<profile>.py``, versioned against the schema.

A seed module declares ``schema_version`` (the version it was written for), ``tables``
(whose id sequences it may move) and ``statements``. Every statement must be idempotent
(``ON CONFLICT DO NOTHING`` on fixed ids), so running a seed twice changes nothing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from alembic_common.core import db, locking
from alembic_common.core.plan import assess_for
from alembic_common.core.runner import RunOptions, refuse_production, refuse_unusable
from alembic_common.core.services import Service
from alembic_common.core.settings import Settings
from alembic_common.core.state import read
from alembic_common.errors import ScriptError, StateError, UsageError


@dataclass(frozen=True)
class SeedResult:
    service: str
    database: str
    profile: str
    inserted: int

    def to_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def profiles(service: Service) -> list[str]:
    folder = service.path / "seeds"
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def load(service: Service, profile: str) -> ModuleType:
    """The seed module for ``profile``, checked for the attributes it must declare."""
    path = service.path / "seeds" / f"{profile}.py"
    if not path.exists():
        raise UsageError(
            f"{service.name}: no seed profile {profile!r}; available: {', '.join(profiles(service)) or 'none'}",
            service=service.name,
        )
    spec = importlib.util.spec_from_file_location(f"_migrate_seed_{service.name}_{profile}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, kind in (("schema_version", int), ("statements", list), ("tables", list)):
        if not isinstance(getattr(module, name, None), kind):
            raise ScriptError(
                f"{path.name}: must define {name} ({kind.__name__})", service=service.name
            )
    return module


def seed(
    service: Service, settings: Settings, profile: str, options: RunOptions = RunOptions()
) -> SeedResult:
    """Load a seed profile into the database in one transaction, under the migration lock."""
    refuse_production(service, "seed", options)
    module = load(service, profile)
    inserted = 0
    with (
        db.connect(settings, wait=options.wait, search_path=service.schema) as conn,
        locking.advisory_lock(conn, service.name, wait=options.lock_wait),
    ):
        found = assess_for(service, read(conn, service.schema))
        refuse_unusable(service, found)
        if found.current is None or found.current < module.schema_version:
            raise StateError(
                f"{service.name}: seed {profile!r} needs schema version {module.schema_version}; "
                f"the database is at {found.current if found.current is not None else 'no version'}: "
                "run 'up' first",
                service=service.name,
                version=module.schema_version,
            )
        with conn.transaction():
            for statement in module.statements:
                inserted += max(conn.execute(statement).rowcount, 0)
            for table in module.tables:
                _advance_identity(conn, table)
    return SeedResult(service.name, settings.display, profile, inserted)


def _advance_identity(conn: psycopg.Connection[Any], table: str) -> None:
    """Move the id sequence past seeded ids, never backwards (so re-seeding changes nothing)."""
    row = conn.execute("SELECT pg_catalog.pg_get_serial_sequence(%s, 'id')", [table]).fetchone()
    seq = row[0] if row else None
    if seq is None:
        return
    found = conn.execute(sql.SQL("SELECT max(id) FROM {}").format(sql.Identifier(table))).fetchone()
    top = found[0] if found else None
    state = conn.execute(
        sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(seq))
    ).fetchone()
    assert state is not None
    last, called = state
    if top is not None and (top > last or (top == last and not called)):
        conn.execute("SELECT pg_catalog.setval(%s, %s)", [seq, top])
