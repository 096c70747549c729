"""Every existing migration's SQL is pinned: a change to a shared helper (``ddl``, ``safe``,
``backfill``) that alters what an old migration runs fails here, loudly, with a diff.

The pins are ``services/<service>/migrations/pinned/<version>.sql`` (in the service's folder,
so a service copied under a new name carries them): the offline SQL of each
version (as ``plan --sql`` shows it, bookkeeping included). A deliberate change is
re-pinned with ``UPDATE_SNAPSHOTS=1 python -m pytest tests/test_history_pinned.py``, and
``migrate SERVICE hash`` then records the new checksums; a reviewer sees both diffs.
"""

from __future__ import annotations

import difflib
import os

import pytest
from conftest import ROOT, SERVICES

from alembic_common.authoring import checksums, compile, offline
from alembic_common.core import services, sqlsteps


def _pinned() -> list[tuple[str, int]]:
    return [(n, m.version) for n in SERVICES for m in services.get(n, ROOT).migrations]


def _rendered(name: str) -> dict[int, str]:
    plan = offline.sql_plan(services.get(name, ROOT), None, services.get(name, ROOT).head)
    return {v.version: "\n".join(s.sql for s in v.statements) + "\n" for v in plan.versions}


RENDERED: dict[str, dict[int, str]] = {}


@pytest.mark.parametrize(("name", "version"), _pinned())
def test_each_migration_runs_what_it_ran_when_it_was_pinned(name: str, version: int) -> None:
    sql = RENDERED.setdefault(name, _rendered(name))[version]
    path = services.get(name, ROOT).path / "migrations" / "pinned" / f"{version:04d}.sql"
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        if not os.environ.get("UPDATE_SNAPSHOTS"):
            pytest.fail(f"{path} is missing: pin it with UPDATE_SNAPSHOTS=1")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
    pinned = path.read_text()
    if sql != pinned:
        diff = "".join(
            difflib.unified_diff(pinned.splitlines(True), sql.splitlines(True), str(path), "now")
        )
        pytest.fail(f"{name} version {version} no longer runs what it ran:\n{diff}")


@pytest.mark.parametrize("name", SERVICES)
def test_the_checksums_file_lists_what_each_version_runs(name: str) -> None:
    service = services.get(name, ROOT)
    assert checksums.listed(service) == checksums.compute(service), (
        f"services/{name}/migrations/checksums.txt is stale: run 'migrate {name} hash'"
    )


@pytest.mark.parametrize("name", SERVICES)
def test_the_plain_sql_file_holds_what_each_plain_step_runs(name: str) -> None:
    service = services.get(name, ROOT)
    assert sqlsteps.path(service).read_text() == sqlsteps.render(
        service, compile.compile_service(service)
    ), f"services/{name}/migrations/plain.json is stale: run 'migrate {name} hash'"
