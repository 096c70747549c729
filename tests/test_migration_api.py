"""The API migrations import: ``alembic_common.migration`` names every helper a migration
may call, and the paths migrations used before it (``alembic_common.ddl``, ``.safe``,
``.backfill``, ``.identity``, ``.tenancy``, and ``.env`` for a service's ``env.py``) still
import the same objects, so a service written against them migrates unchanged."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from conftest import ROOT, SERVICES, history, peer_env, run_script, versions

from alembic_common import migration

# Where each name of the public module lived before it: the paths old migrations import.
OLD_PATHS = ("ddl", "safe", "backfill", "identity", "tenancy")


def _old(name: str) -> str | None:
    """The old module that defined ``name``, if any."""
    for old in OLD_PATHS:
        if name in vars(importlib.import_module(f"alembic_common.{old}")):
            return old
    return None


@pytest.mark.parametrize("name", migration.__all__)
def test_every_public_name_is_the_object_its_old_path_gives(name: str) -> None:
    obj = getattr(migration, name)
    old = _old(name)
    if old is None:  # a name that had no old path (UsageError lived in errors)
        assert name in vars(importlib.import_module("alembic_common.errors")), name
        return
    assert getattr(importlib.import_module(f"alembic_common.{old}"), name) is obj


def test_a_service_env_written_before_the_move_still_imports() -> None:
    from alembic_common.core.env import run
    from alembic_common.env import run as old_run

    assert old_run is run


def _imported(path: Path) -> set[str]:
    """The names a migration file takes from alembic_common.migration."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "alembic_common.migration"
        for alias in node.names
    }


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_use_only_the_public_module(service: str) -> None:
    """A migration imports what it calls from alembic_common.migration, nothing internal."""
    for path in sorted((ROOT / "services" / service / "migrations" / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        internal = re.findall(r"^\s*(?:from|import) (alembic_common\.[\w.]+)", text, re.M)
        assert set(internal) <= {"alembic_common.migration"}, (path.name, internal)
        assert _imported(path) <= set(migration.__all__), path.name


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_written_against_the_old_paths_migrates_up_and_down(
    service: str, db: str, project_copy: Path
) -> None:
    """Each migration's imports rewritten to the old paths (tenancy helpers through the
    module, as they were called): the history goes to head and back to nothing."""
    folder = project_copy / "services" / service / "migrations" / "versions"
    for path in folder.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        names = _imported(path)
        if not names:
            continue
        lines = []
        for name in sorted(names):
            old = _old(name) or "errors"
            if old == "tenancy":
                text = re.sub(rf"(?<![\w.]){name}\(", f"tenancy.{name}(", text)
                lines.append("from alembic_common import tenancy")
            else:
                lines.append(f"from alembic_common.{old} import {name}")
        text = re.sub(
            r"^from alembic_common\.migration import (\([^)]*\)|[^\n]*)\n",
            "\n".join(sorted(set(lines))) + "\n",
            text,
            flags=re.M,
        )
        assert "alembic_common.migration" not in text
        path.write_text(text, encoding="utf-8")
    env = {**peer_env(), "MIGRATE_ROOT": str(project_copy)}
    done = run_script(service, "up", "--contract", "--url", db, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert history(db) == versions(service, project_copy)
    first = str(versions(service, project_copy)[0])
    back = run_script(service, "down", "--version", first, "--url", db, env=env, timeout=300)
    assert back.returncode == 0, back.stderr
    assert history(db) == []
