"""The record tells the truth: signals, atomic batches, metrics and events, and files written."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import psycopg
import pytest
from conftest import (
    Spawned,
    add_step,
    backends,
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

from alembic_common.core import locking


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _slow(root: Path) -> int:
    return add_step(
        root,
        "user",
        '    op.execute("CREATE TABLE made_by_slow_step (id int)")\n'
        '    op.execute("SELECT pg_sleep(30)")',
        "A slow step",
    )


@pytest.mark.parametrize(
    ("sig", "code", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_signal_mid_step_rolls_back_and_says_which_version(
    sig: int, code: int, name: str, project_copy: Path, db: str, tmp_path: Path
) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    new = _slow(project_copy)
    events = tmp_path / "events.jsonl"
    run = Spawned(migrate_cmd("user", "up", "--url", db, "--events", str(events)), env=env)
    wait_until(lambda: backends(db, "%pg_sleep(30)%"), "the step's query")
    run.proc.send_signal(sig)
    exit_code, _, err = run.finish(timeout=30)
    assert exit_code == code, err
    last = err.strip().splitlines()[-1]
    assert (
        last
        == f"migrate: error: user: interrupted ({name}) during version {new}; it was rolled back"
    )
    kinds = [e["event"] for e in _events(events)]
    assert kinds[-2:] == ["failed", "run_finished"]
    assert history(db) == versions("user") and "made_by_slow_step" not in tables(db)
    # The server stopped the statement too: nothing is left sleeping.
    wait_until(lambda: not backends(db, "%pg_sleep(30)%"), "the step to be cancelled", 10)


def test_sigint_while_waiting_for_the_lock_says_so(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", locking.lock_key("user"))
        pid = holder.info.backend_pid
        run = Spawned(migrate_cmd("user", "up", "--url", db))
        run.wait_for("waiting up to")
        run.proc.send_signal(signal.SIGINT)
        code, _, err = run.finish(timeout=30)
    assert code == 130
    last = err.strip().splitlines()[-1]
    assert "interrupted (SIGINT) while waiting for the migration lock held by pid" in last
    assert says(last, f"pid {pid}") and "nothing was changed" in last
    assert history(db) == []


def _failing_batch(root: Path) -> int:
    add_step(root, "user", '    op.execute("CREATE TABLE from_good (id int)")', "A good step")
    return add_step(root, "user", '    op.execute("SELECT 1 / 0")', "A bad step")


def test_atomic_reports_applied_only_after_the_batch_commits(
    project_copy: Path, db: str, tmp_path: Path
) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    bad = _failing_batch(project_copy)
    events = tmp_path / "events.jsonl"
    result = run_cli("user", "up", "--atomic", "--url", db, "--events", str(events), env=env)
    assert result.exit_code == 1
    assert "applied version" not in result.stderr
    found = _events(events)
    assert not [e for e in found if e["event"] == "applied"]
    rolled = [e["version"] for e in found if e["event"] == "rolled_back"]
    assert rolled == list(range(1, bad)) and all(
        e.get("batch") for e in found if e["event"] == "rolled_back"
    )
    assert "rolled back with its batch" in result.stderr
    assert history(db) == [] and "from_good" not in tables(db)
    (project_copy / "services/user/migrations/versions" / f"{bad:04d}_extra_{bad}.py").unlink()
    good = tmp_path / "good.jsonl"
    ok = run_cli("user", "up", "--atomic", "--json", "--url", db, "--events", str(good), env=env)
    assert ok.exit_code == 0
    assert [e["version"] for e in _events(good) if e["event"] == "applied"] == list(range(1, bad))
    assert json.loads(ok.stdout)["steps"] == list(range(1, bad))


def test_status_never_overwrites_what_the_last_run_recorded(
    project_copy: Path, db: str, tmp_path: Path
) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    bad = _failing_batch(project_copy)
    metrics = tmp_path / "migrate.prom"
    assert (
        run_cli("user", "up", "--url", db, "--metrics-file", str(metrics), env=env).exit_code == 1
    )
    after_run = prometheus_by_name(metrics)
    assert after_run["migrate_last_run_success"] == 0
    assert after_run["migrate_current_version"] == bad - 1
    query(db, "SELECT 1")
    run_cli("user", "down", "--version", str(bad - 1), "--url", db, env=env)  # no metrics here
    status = run_cli("user", "status", "--url", db, "--metrics-file", str(metrics), env=env)
    assert status.exit_code == 0
    after_status = prometheus_by_name(metrics)
    for kept in (
        "migrate_last_run_success",
        "migrate_last_run_duration_seconds",
        "migrate_last_run_timestamp_seconds",
    ):
        assert after_status[kept] == after_run[kept], kept
    assert after_status["migrate_current_version"] == bad - 2
    assert after_status["migrate_pending_migrations"] == 2


def test_files_are_replaced_not_followed_and_never_world_writable(db: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    metrics = tmp_path / "m.prom"
    metrics.symlink_to(victim)
    refused = run_cli("user", "up", "--url", db, "--metrics-file", str(metrics))
    assert refused.exit_code == 2 and "symbolic link" in refused.stderr
    assert victim.read_text() == "keep me\n" and history(db) == []
    metrics.unlink()
    events = tmp_path / "e.jsonl"
    previous = os.umask(0)
    try:
        ok = run_cli(
            "user", "up", "--url", db, "--metrics-file", str(metrics), "--events", str(events)
        )
    finally:
        os.umask(previous)
    assert ok.exit_code == 0, ok.output
    for path in (metrics, events):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert not mode & stat.S_IWOTH, f"{path.name} is world-writable ({oct(mode)})"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
