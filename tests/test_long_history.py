"""A long history loads in time linear in its length, and is parsed once per process."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import ROOT

from alembic_common import checksums, deps, services
from alembic_common.services import CACHE


def _project(base: Path, count: int) -> Path:
    folder = base / "services" / "long"
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    (folder / "alembic.ini").write_text((ROOT / "services/user/alembic.ini").read_text())
    for v in range(1, count + 1):
        down = repr(f"{v - 1:04d}") if v > 1 else "None"
        phase = 'phase = "contract"\n' if v % 100 == 0 else ""
        (versions / f"{v:04d}_step_{v}.py").write_text(
            f'"""Step {v}"""\nfrom alembic import op\nrevision = "{v:04d}"\n'
            f"down_revision = {down}\n{phase}"
            f"def upgrade():\n    op.execute('SELECT {v}')\ndef downgrade():\n    pass\n"
        )
    return base


def _load(root: Path) -> float:
    started = time.perf_counter()
    service = services.get("long", root)
    service.migrations  # noqa: B018 - parse every file
    service.contract_versions(service.disk_versions())
    deps.graph({"long": service})
    checksums.fingerprints(service)
    return time.perf_counter() - started


def test_two_thousand_migrations_load_in_linear_time(tmp_path: Path) -> None:
    small = _project(tmp_path / "small", 200)
    large = _project(tmp_path / "large", 2000)
    for root in (small, large):  # cold: no declaration cache yet
        assert not (root / "services/long/migrations/versions" / CACHE).exists()
    cold = (_load(small), _load(large))
    warm = (_load(small), _load(large))
    # Linear is 10x; a quadratic step would be ~100x. The budget leaves room for noise.
    assert cold[1] < 25 * cold[0], cold
    assert warm[1] < 25 * warm[0], warm
    assert warm[1] < cold[1], (cold, warm)  # the declaration cache is used


def test_the_declaration_cache_follows_edits(tmp_path: Path) -> None:
    root = _project(tmp_path, 3)
    assert services.get("long", root).descriptions[2] == "Step 2"
    path = root / "services/long/migrations/versions/0002_step_2.py"
    path.write_text(path.read_text().replace('"""Step 2"""', '"""Step two, renamed"""', 1))
    assert services.get("long", root).descriptions[2] == "Step two, renamed"
    path.write_text(path.read_text().replace('revision = "0002"', 'revision = "0042"'))
    try:
        services.get("long", root).migrations  # noqa: B018
    except services.ScriptError as exc:
        assert "revision must be '0002'" in str(exc)
    else:
        raise AssertionError("a malformed file must be refused, cache or not")
