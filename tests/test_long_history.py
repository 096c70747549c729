"""A long history loads in time linear in its length, and is parsed once per process."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import ROOT, add_step, history, run_cli, versions

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
    # The least of three runs each: a pause of the busy machine is not the code's cost.
    warm = (min(_load(small) for _ in range(3)), min(_load(large) for _ in range(3)))
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


def test_up_and_down_import_only_the_files_they_run(project_copy: Path, db: str) -> None:
    """Alembic's map of the history comes from our own parse: a run imports the files of
    the steps it runs, not every file of the history (plain Alembic imports them all)."""
    log = project_copy / "imported.txt"
    header = f"open({str(log)!r}, 'a').write(revision + '\\n')"
    added = [add_step(project_copy, "user", "    pass", header=header) for _ in range(30)]
    env = {"MIGRATE_ROOT": str(project_copy)}
    # A project keeps checksums.txt current (CI runs 'hash --check'); a version missing from
    # it is hashed at run time, which renders (imports) its file.
    assert run_cli("user", "hash", env=env).exit_code == 0
    log.unlink()

    def imported() -> list[int]:
        found = [int(line) for line in log.read_text().split()] if log.exists() else []
        log.unlink(missing_ok=True)
        return found

    before = run_cli("user", "up", "--version", str(added[-2]), "--url", db, env=env)
    assert before.exit_code == 0, before.output
    assert imported() == added[:-1]
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    assert imported() == [added[-1]]
    assert history(db) == versions("user", project_copy)
    down = run_cli("user", "down", "--version", str(added[-3]), "--url", db, env=env)
    assert down.exit_code == 0, down.output
    assert sorted(imported()) == added[-3:]
    assert history(db) == versions("user", project_copy)[:-3]
