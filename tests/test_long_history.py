"""A long history loads in time linear in its length, and is parsed once per process."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from conftest import (
    ROOT,
    add_step,
    create_database,
    drop_database,
    history,
    query,
    run_cli,
    versions,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from alembic_common.authoring import checksums
from alembic_common.core import deps, runner, services
from alembic_common.core import history as history_table
from alembic_common.core.services import CACHE
from alembic_common.core.settings import Settings


def _project(base: Path, count: int) -> Path:
    folder = base / "services" / "long"
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    (folder / "alembic.ini").write_text((ROOT / "services/user/alembic.ini").read_text())
    env = (ROOT / "services/user/migrations/env.py").read_text()
    (folder / "migrations" / "env.py").write_text(env)
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


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_walk_along_the_line_runs_what_alembic_would(data: st.DataObject) -> None:
    """Alembic finds a run's steps by walking every ancestor of its target; a walk along
    the service's one line of history gives the same steps, in the same order (Alembic's
    own answer is the oracle). Where it is not such a walk it defers to Alembic."""
    service = services.get(data.draw(st.sampled_from(["user", "patient", "appointment"])), ROOT)
    line = [m.revision for m in service.migrations]
    point = st.sampled_from([None, *line])
    here, there = data.draw(point), data.draw(point)
    down = data.draw(st.booleans())
    heads = (here,) if here else ()
    destination = there or "base"
    walk = service.walk(heads, destination, down=down)
    script = service.scripts
    try:
        found = (script._downgrade_revs if down else script._upgrade_revs)(destination, heads)
    except Exception:
        assert walk is None  # Alembic refuses it: so does the walk, and Alembic answers
        return
    if walk is not None:
        assert walk == [step.revision.revision for step in found]
        assert all(step.is_upgrade != down for step in found)
    else:  # only a walk the wrong way along the line is left to Alembic
        position = {r: i for i, r in enumerate(line)}
        above = position.get(there, -1) if there else -1
        below = position.get(here, -1) if here else -1
        assert (above > below) if down else (above < below)


def _applied_but_last(root: Path, count: int, url: str) -> services.Service:
    """A database with every step of the ``count``-step history but the last recorded,
    written directly (applying thousands of steps would take the test's whole budget)."""
    with psycopg.connect(url, autocommit=True) as conn:
        history_table.create(conn, "long", "public")
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES (%s)", [f"{count - 1:04d}"])
        conn.execute(
            "INSERT INTO schema_migrations (version, description)"
            " SELECT g, 'Step ' || g FROM generate_series(1, %s) g",
            [count - 1],
        )
    return services.get("long", root)


def _timed(run: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def test_status_and_one_step_up_grow_linearly_with_the_history(tmp_path: Path, server: str) -> None:
    """Every part of a run that reads the history (its rows, the plan, the checksums, the
    steps to run) is linear: with ten times the applied steps, status costs about 2.5 times
    as much here and a one-step up 1.7 times (both have fixed costs); a lookup in a list
    inside a loop over the history made them 15 and 5 times."""
    costs = {}
    for count in (400, 4000):
        root = _project(tmp_path / str(count), count)
        url = create_database(server)
        try:
            service = _applied_but_last(root, count, url)
            conf = Settings("long", url, "test")
            runner.status(service, conf)  # warm: the history parsed, Alembic imported
            status = min(_timed(runner.status, service, conf) for _ in range(3))
            ups = []
            for _ in range(3):
                ups.append(_timed(runner.up, service, conf))
                assert query(url, "SELECT max(version) FROM schema_migrations") == [(count,)]
                with psycopg.connect(url, autocommit=True) as conn:  # back one step
                    conn.execute("DELETE FROM schema_migrations WHERE version = %s", [count])
                    conn.execute(
                        "UPDATE alembic_version SET version_num = %s", [f"{count - 1:04d}"]
                    )
            costs[count] = (status, min(ups))
        finally:
            drop_database(server, url)
    (small_status, small_up), (large_status, large_up) = costs[400], costs[4000]
    assert large_status < 8 * small_status, costs
    assert large_up < 4 * small_up, costs


def test_hash_names_the_versions_it_updated_in_runs(project_copy: Path) -> None:
    """`hash` and `hash --check` name versions as runs (``4-40``), so a long history's
    report stays one short line."""
    env = {"MIGRATE_ROOT": str(project_copy)}
    first = versions("user")[-1] + 1
    added = [add_step(project_copy, "user", f"    op.execute('SELECT {i}')") for i in range(30)]
    stale = run_cli("user", "hash", "--check", env=env)
    assert stale.exit_code == 1
    assert f"not current for version(s) {first}-{added[-1]}: run 'migrate user hash'" in (
        stale.stdout
    )
    done = run_cli("user", "hash", env=env)
    assert done.exit_code == 0, done.output
    assert f"({added[-1]} versions; updated {first}-{added[-1]}; " in done.stdout
    for version in (added[3], added[5], added[6]):  # what three of them run changes
        path = next(services.get("user", project_copy).versions_dir.glob(f"{version:04d}_*.py"))
        path.write_text(path.read_text().replace("op.execute('SELECT", "op.execute('SELECT 1 +"))
    again = run_cli("user", "hash", env=env)
    assert f"updated {added[3]}, {added[5]}-{added[6]}; " in again.stdout
    assert run_cli("user", "hash", "--check", env=env).exit_code == 0
