"""Safe to run from every replica: locks, lock timeouts, kills, atomic batches, guards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import (
    CONTRACT,
    PATIENT_HEAD,
    ROOT,
    Spawned,
    alembic_head,
    applied_by_default,
    copied_service,
    history,
    query,
    run_cli,
    run_script,
    says,
    settings,
    tables,
    versions,
)

from alembic_common.core import runner, services
from alembic_common.core.events import Event, LockRetry
from alembic_common.core.locking import lock_key
from alembic_common.errors import LockTimeoutError, StepError


def columns(url: str, table: str) -> set[str]:
    rows = query(
        url, "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
    )
    return {r[0] for r in rows}


@pytest.mark.slow
def test_sixteen_replicas_at_once_apply_each_migration_exactly_once(db: str) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "migrate.py"), "patient", "up", "--url", db]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(16)
    ]
    outputs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [code for code, _, _ in outputs] == [0] * 16, [err for _, _, err in outputs]
    assert history(db) == applied_by_default("patient")
    applied = sum(err.count("applied version") for _, _, err in outputs)
    assert applied == len(applied_by_default("patient")), "each migration applied exactly once"
    nothing = sum("nothing to do" in out for _, out, _ in outputs)
    assert nothing == 15
    assert any("waiting up to" in err for _, _, err in outputs), "waiting must be reported"


def test_lock_wait_is_bounded_and_named(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", lock_key("patient"))
        pid = holder.info.backend_pid
        started = time.monotonic()
        result = run_cli("patient", "up", "--lock-wait", "1", "--url", db)
        assert 0.9 <= time.monotonic() - started < 8
        assert result.exit_code == 1
        assert says(result.stderr, f"held by pid {pid}") and "--lock-wait" in result.stderr
        assert "waiting up to 1s" in result.stderr
        assert history(db) == []
    assert run_cli("patient", "up", "--url", db).exit_code == 0
    assert history(db) == applied_by_default("patient")


def test_lock_timeout_fails_fast_then_succeeds_once_released(db: str) -> None:
    run_cli("patient", "up", "--version", "1", "--url", db)
    blocker = psycopg.connect(db)
    blocker.execute("SELECT count(*) FROM patients")  # holds ACCESS SHARE, idle in transaction
    try:
        started = time.monotonic()
        result = run_cli("patient", "up", "--lock-timeout", "0.2", "--retries", "1", "--url", db)
        assert time.monotonic() - started < 5
        assert result.exit_code == 1
        line = result.stderr.strip().splitlines()[-1]
        assert "version 2" in line and "lock" in line
        assert says(line, f"table patients held by pid {blocker.info.backend_pid}")
        assert "retry 1" in result.stderr
        assert history(db) == [1]
        assert "emergency_contact_address" not in columns(db, "patients")
    finally:
        blocker.rollback()
        blocker.close()
    assert run_cli("patient", "up", "--url", db).exit_code == 0
    assert history(db) == applied_by_default("patient")


def test_lock_released_during_retries_lets_the_run_finish(db: str) -> None:
    service = services.get("patient", ROOT)
    runner.up(service, settings("patient", db), target=1)
    blocker = psycopg.connect(db)
    blocker.execute("SELECT count(*) FROM patients")
    threading.Timer(0.6, blocker.rollback).start()
    events: list[Event] = []
    options = runner.RunOptions(lock_timeout=0.2, retries=6)
    result = runner.up(service, settings("patient", db), options=options, progress=events.append)
    blocker.close()
    assert result.steps == applied_by_default("patient")[1:]
    assert any(isinstance(e, LockRetry) and e.version == 2 for e in events)


def test_lock_timeout_error_carries_the_version(db: str) -> None:
    service = services.get("patient", ROOT)
    runner.up(service, settings("patient", db), target=2)
    with psycopg.connect(db) as blocker:
        blocker.execute("SELECT count(*) FROM patients")
        with pytest.raises(LockTimeoutError) as failure:
            runner.up(
                service,
                settings("patient", db),
                options=runner.RunOptions(lock_timeout=0.1, retries=0),
            )
        blocker.rollback()
    assert failure.value.version == 3 and failure.value.exit_code == 1


def _add_migration(root: Path, version: int, body: str, description: str = "Extra step") -> None:
    versions = root / "services" / "patient" / "migrations" / "versions"
    (versions / f"{version:04d}_extra_{version}.py").write_text(
        f'"""{description}"""\nfrom alembic import op\n'
        f'revision = "{version:04d}"\ndown_revision = "{version - 1:04d}"\n'
        "branch_labels = None\ndepends_on = None\n\n"
        f"def upgrade():\n{body}\n\ndef downgrade():\n    pass\n"
    )


def test_statement_timeout_cancels_a_runaway_migration(project_copy: Path, db: str) -> None:
    runaway = PATIENT_HEAD + 1
    _add_migration(project_copy, runaway, '    op.execute("SELECT pg_sleep(30)")')
    result = run_script(
        "patient",
        "up",
        "--contract",
        "--statement-timeout",
        "0.5",
        "--url",
        db,
        env={"MIGRATE_ROOT": str(project_copy)},
        timeout=25,
    )
    assert result.returncode == 1
    assert says(result.stderr, f"version {runaway}") and "statement_timeout" in result.stderr
    assert history(db) == list(range(1, runaway))


def test_sigkill_inside_a_migration_leaves_the_previous_version(db: str) -> None:
    run_cli("patient", "up", "--version", "1", "--url", db)
    blocker = psycopg.connect(db)
    blocker.execute("SELECT count(*) FROM patients")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "migrate.py"),
            "patient",
            "up",
            "--lock-timeout",
            "60",
            "--url",
            db,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the ALTER TABLE of version 2 waits on our lock
            waiting = query(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE patients%%'",
            )
            if waiting[0][0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the migration never blocked on the held lock")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        blocker.rollback()
        blocker.close()
    deadline = time.monotonic() + 20  # the orphaned backend notices its client is gone
    while query(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )[0][0]:
        assert time.monotonic() < deadline, "orphaned backends never went away"
        time.sleep(0.1)
    assert history(db) == [1] and alembic_head(db) == ["0001"]
    assert "emergency_contact_address" not in columns(db, "patients")
    result = run_cli("patient", "up", "--url", db)
    assert result.exit_code == 0, result.output
    assert history(db) == applied_by_default("patient")


GOOD, BAD = PATIENT_HEAD + 1, PATIENT_HEAD + 2


def _failing_batch(root: Path) -> services.Service:
    _add_migration(root, GOOD, '    op.execute("CREATE TABLE from_good (id int)")')
    _add_migration(
        root,
        BAD,
        '    op.execute("CREATE TABLE from_bad (id int)")\n    op.execute("SELECT 1 / 0")',
    )
    return copied_service(root, "patient")


def test_mid_batch_failure_keeps_earlier_steps_without_atomic(project_copy: Path, db: str) -> None:
    service = _failing_batch(project_copy)
    runner.up(service, settings("patient", db), target=2)
    with pytest.raises(StepError) as failure:
        runner.up(service, settings("patient", db), options=CONTRACT)
    assert failure.value.version == BAD and "earlier versions stay applied" in str(failure.value)
    assert history(db) == list(range(1, BAD))
    assert "from_good" in tables(db) and "from_bad" not in tables(db)


def test_mid_batch_failure_with_atomic_applies_nothing(project_copy: Path, db: str) -> None:
    service = _failing_batch(project_copy)
    runner.up(service, settings("patient", db), target=2)
    with pytest.raises(StepError) as failure:
        runner.up(
            service, settings("patient", db), options=runner.RunOptions(atomic=True, contract=True)
        )
    assert failure.value.version == BAD and "nothing was applied (--atomic)" in str(failure.value)
    assert history(db) == [1, 2] and alembic_head(db) == ["0002"]
    assert "from_good" not in tables(db)
    assert "emergency_contact_address" in columns(db, "patients")
    assert "phone_international" not in columns(db, "patients")
    assert "phone_original" not in columns(db, "patients")


def test_atomic_success_applies_everything(db: str) -> None:
    result = run_cli("patient", "up", "--atomic", "--contract", "--url", db)
    assert result.exit_code == 0, result.output
    assert history(db) == versions("patient")


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--env", "production"], {}), ([], {"APP_ENV": "production"}), (["--env", "PRODUCTION"], {})],
)
def test_production_guard_refuses_down(db: str, args: list[str], env: dict[str, str]) -> None:
    run_cli("patient", "up", "--url", db)
    result = run_cli("patient", "down", "--version", "1", "--url", db, *args, env=env)
    assert result.exit_code == 2
    assert (
        "refusing 'down' in production" in result.stderr and "--allow-production" in result.stderr
    )
    assert history(db) == applied_by_default("patient")


def test_production_guard_needs_no_database_to_refuse() -> None:
    result = run_cli(
        "patient",
        "down",
        "--version",
        "1",
        "--env",
        "production",
        "--url",
        "postgresql://postgres@127.0.0.1:1/none",
    )
    assert result.exit_code == 2 and "production" in result.stderr


def test_allow_production_lets_down_through(db: str) -> None:
    run_cli("patient", "up", "--url", db)
    result = run_cli(
        "patient",
        "down",
        "--version",
        "4",
        "--url",
        db,
        "--allow-production",
        env={"APP_ENV": "production"},
    )
    assert result.exit_code == 0, result.output
    assert history(db) == [1, 2, 3]


def test_a_replica_that_only_waited_never_imports_alembic(db: str) -> None:
    service = services.get("patient", ROOT)
    runner.up(service, settings("patient", db), target=3)
    probe = (
        "import sys\n"
        "from alembic_common.cli import main\n"
        f"sys.argv = ['migrate', 'patient', 'up', '--url', {db!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules))\n"
    )
    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", lock_key("patient"))
        waiter = Spawned([sys.executable, "-c", probe])
        waiter.wait_for("waiting up to")
        # Meanwhile the lock holder does the pending work, as the first replica would.
        from alembic import command

        from alembic_common.core import db as dbmod

        engine = dbmod.engine(settings("patient", db))
        with engine.connect() as conn:
            last = applied_by_default("patient")[-1]
            command.upgrade(service.config(connection=conn), f"{last:04d}")
        engine.dispose()
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", lock_key("patient"))
        _, out, err = waiter.finish(timeout=30)
    assert out.strip().endswith("0 []"), out + err
    assert "nothing to do" in out
    assert history(db) == applied_by_default("patient")
