"""What the toolkit relies on in Alembic beyond its documented API, pinned: when an Alembic
release changes one of these, this file fails by name, before any migration runs wrong.

- ``MigrationContext._migrations_fn``: the steps a run walks; ``env.py`` wraps each step
  (views dropped first, the history row readied after its body).
- ``MigrationContext.impl._exec``: every statement Alembic sends; the history write rides
  on its version-table write (one round trip per step).
- ``MigrationStep.upgrade_from_script`` / ``downgrade_from_script`` and a
  ``ScriptDirectory.revision_map`` built from the history already parsed (no file imported).
- ``alembic.util.load_python_file``: a migration file imported when its step runs.

The declared dependency names the newest minor release these were checked on.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from typing import Any

import pytest
import sqlalchemy
from conftest import ROOT, SERVICES, query
from packaging.requirements import Requirement
from packaging.version import Version

from alembic_common.core import history, services


def _requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (alembic,) = [r for r in map(Requirement, project["dependencies"]) if r.name == "alembic"]
    return alembic


def test_alembic_is_bounded_above_and_the_installed_release_is_within() -> None:
    required = _requirement()
    assert any(s.operator == "<" for s in required.specifier), str(required)
    assert Version(importlib.metadata.version("alembic")) in required.specifier


@pytest.mark.parametrize("service", SERVICES)
def test_a_wrapped_step_runs_and_its_version_write_passes_through_exec(
    service: str, db: str
) -> None:
    from alembic.runtime.migration import MigrationContext, MigrationStep
    from alembic.util import load_python_file

    assert callable(load_python_file)
    found = services.get(service)
    scripts = found.scripts  # revision_map assigned from the parsed history
    first = found.migrations[0].revision
    assert scripts.get_revision(first).revision == first
    step = MigrationStep.upgrade_from_script(scripts.revision_map, scripts.get_revision(first))
    assert MigrationStep.downgrade_from_script(scripts.revision_map, scripts.get_revision(first))

    ran: list[Any] = []
    sent: list[str | None] = []

    class Wrapped:
        """As env.py wraps a step: Alembic's own step, its body replaced."""

        def __getattr__(self, name: str) -> Any:
            return getattr(step, name)

        @property
        def migration_fn(self) -> Any:
            return lambda **kw: ran.append(step.info.up_revision_ids)

    engine = sqlalchemy.create_engine(db.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"fn": lambda heads, ctx: [step], "transaction_per_migration": True}
            )
            assert ctx._migrations_fn is not None
            steps, send = ctx._migrations_fn, ctx.impl._exec

            def wrapped(heads: Any, context: Any) -> Any:
                assert context is ctx and tuple(heads) == ()
                return [Wrapped() for _ in steps(heads, context)]

            def execute(construct: Any, *args: Any, **kwargs: Any) -> Any:
                sent.append(history._dml_kind(construct, "public"))
                return send(construct, *args, **kwargs)

            ctx._migrations_fn = wrapped
            ctx.impl._exec = execute  # type: ignore[method-assign]
            ctx.run_migrations()
            conn.commit()
    finally:
        engine.dispose()
    assert ran == [(first,)]
    assert "insert" in sent  # the version-table write went through _exec, recognisably
    assert query(db, "SELECT version_num FROM alembic_version") == [(first,)]
