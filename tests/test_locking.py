"""The migration lock, for every service: keys, waiters, lost sessions and concurrent starts."""

from __future__ import annotations

import shutil
import threading
import time
import zlib
from pathlib import Path

import psycopg
import pytest
from conftest import (
    ROOT,
    SERVICES,
    Spawned,
    add_step,
    applied_by_default,
    backends,
    history,
    migrate_cmd,
    peer_env_for,
    query,
    run_cli,
    says,
    tables,
    versions,
    wait_until,
)

from alembic_common.core import locking
from alembic_common.errors import LockWaitError


def _high_bit_name() -> str:
    """A service name whose CRC-32 has the high bit set (as 'user' and 'appointment' do)."""
    return next(f"svc_{i}" for i in range(1000) if zlib.crc32(f"svc_{i}".encode()) >= 1 << 31)


SYNTHETIC = _high_bit_name()


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    """A project whose only service is a copy of 'user' under a name with a high-bit key."""
    (tmp_path / "services").mkdir()
    shutil.copytree(
        ROOT / "services" / "user",
        tmp_path / "services" / SYNTHETIC,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def _env_for(name: str, root: Path | None = None) -> dict[str, str]:
    env = peer_env_for(name, root or ROOT)
    return {**env, "MIGRATE_ROOT": str(root)} if root else env


CASES = [*SERVICES, SYNTHETIC]


def _case(name: str, synthetic_root: Path) -> tuple[str, Path]:
    return (name, synthetic_root) if name == SYNTHETIC else (name, ROOT)


def test_every_key_is_found_in_pg_locks_as_postgresql_stores_it(db: str) -> None:
    assert zlib.crc32(b"user") >= 1 << 31 and zlib.crc32(b"appointment") >= 1 << 31
    with psycopg.connect(db, autocommit=True) as holder, psycopg.connect(db) as other:
        for name in CASES:
            holder.execute("SELECT pg_advisory_lock(%s, %s)", locking.lock_key(name))
            assert locking.lock_holder(other, name) == holder.info.backend_pid, name
            # PostgreSQL shows the second int4 of the key as an unsigned oid.
            (objid,) = other.execute(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                [holder.info.backend_pid],
            ).fetchone()
            assert objid == zlib.crc32(name.encode())
            holder.execute("SELECT pg_advisory_unlock_all()")
            assert locking.lock_holder(other, name) is None


@pytest.mark.parametrize("name", CASES)
def test_a_waiter_names_the_holder_waits_its_bound_and_gives_up(
    name: str, db: str, synthetic_root: Path
) -> None:
    service, root = _case(name, synthetic_root)
    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", locking.lock_key(service))
        pid = holder.info.backend_pid
        started = time.monotonic()
        result = run_cli(service, "up", "--lock-wait", "1.5", "--url", db, env=_env_for(name, root))
        elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert 1.4 <= elapsed < 10, elapsed
    assert says(result.stderr, f"waiting up to 1.5s for the migration lock held by pid {pid}")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("migrate: error: ") and says(last, f"held by pid {pid}")
    assert "--lock-wait" in last and "error: unexpected" not in result.stderr
    assert history(db) == []


@pytest.mark.parametrize("name", CASES)
def test_a_waiter_takes_over_as_soon_as_the_lock_is_released(
    name: str, db: str, synthetic_root: Path
) -> None:
    service, root = _case(name, synthetic_root)
    env = _env_for(name, root)
    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", locking.lock_key(service))
        waiter = Spawned(migrate_cmd(service, "up", "--url", db), env=env)
        waiter.wait_for("waiting up to")
        # The holder lets go the way a runner does: unlock, then wake the waiters.
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", locking.lock_key(service))
        released = time.monotonic()
        holder.execute("SELECT pg_notify(%s, '')", [locking.channel(service)])
        code, _, err = waiter.finish()
        finished = time.monotonic()
    assert code == 0, err
    assert history(db) == applied_by_default(service, root)
    assert finished - released < 10


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVICES)
def test_thirty_concurrent_ups_apply_each_version_exactly_once(name: str, db: str) -> None:
    runs = [Spawned(migrate_cmd(name, "up", "--url", db), env=_env_for(name)) for _ in range(30)]
    outcomes = [run.finish(timeout=180) for run in runs]
    assert [code for code, _, _ in outcomes] == [0] * 30, [err for _, _, err in outcomes]
    expected = applied_by_default(name)
    assert history(db) == expected
    applied = sum(err.count("applied version") for _, _, err in outcomes)
    assert applied == len(expected), "each version must be applied exactly once"
    assert sum("nothing to do" in out for _, out, _ in outcomes) == 29
    assert all("error: unexpected" not in err for _, _, err in outcomes)


def test_a_waiting_replica_does_not_stall_create_index_concurrently(
    project_copy: Path, db: str
) -> None:
    # CREATE INDEX CONCURRENTLY waits for every older snapshot in the database; a replica
    # sleeping inside pg_advisory_lock would hold one until its --lock-wait ran out.
    env = {"MIGRATE_ROOT": str(project_copy)}
    new = add_step(
        project_copy,
        "user",
        '    op.execute("SELECT pg_sleep(1.5)")\n'
        '    create_index_concurrently("idx_users_last_name", "users", "last_name")',
        "Index users by last name",
        header="from alembic_common.online.safe import create_index_concurrently",
    )
    assert run_cli("user", "up", "--version", "1", "--url", db, env=env).exit_code == 0
    first = Spawned(migrate_cmd("user", "up", "--url", db), env=env)
    wait_until(lambda: backends(db, "%pg_sleep(1.5)%"), "the first runner's step")
    second = Spawned(migrate_cmd("user", "up", "--lock-wait", "120", "--url", db), env=env)
    second.wait_for("waiting up to")
    started = time.monotonic()
    code, _, err = first.finish(timeout=100)
    assert code == 0, err
    assert time.monotonic() - started < 30, "the index build waited on the waiting replica"
    code, out, err = second.finish(timeout=60)
    assert code == 0 and "nothing to do" in out, err
    assert history(db) == [*versions("user"), new]
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_users_last_name'::regclass"
    assert query(db, valid) == [(True,)]


# --- a lost lock session -----------------------------------------------------------------


def _slow_step(root: Path, seconds: float, service: str = "patient") -> int:
    """A step that records each run of itself, then sleeps: long enough to act mid-step."""
    return add_step(
        root,
        service,
        '    op.execute("CREATE TABLE IF NOT EXISTS step_runs (pid int)")\n'
        '    op.execute("INSERT INTO step_runs VALUES (pg_backend_pid())")\n'
        f'    op.execute("SELECT pg_sleep({seconds})")',
        "A slow step",
    )


def test_the_lock_session_outlives_idle_session_timeout(project_copy: Path, db: str) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    new = _slow_step(project_copy, 3.5, "user")
    [(name,)] = query(db, "SELECT pg_catalog.quote_ident(pg_catalog.current_database())")
    query(db, f"ALTER DATABASE {name} SET idle_session_timeout = '2s'")
    query(db, f"ALTER DATABASE {name} SET idle_in_transaction_session_timeout = '1s'")
    result = run_cli("user", "up", "--url", db, env=env)
    assert result.exit_code == 0, result.output
    assert history(db) == [*versions("user"), new]
    assert query(db, "SELECT count(*) FROM step_runs") == [(1,)]


def test_waiting_replicas_leave_once_the_work_is_done_without_taking_the_lock(db: str) -> None:
    """Replicas that waited while another run did the work end as no-ops once that run has
    let go, all at once, without taking the lock in turn: here a next holder takes it the
    moment it is released and keeps it, and the waiters leave all the same."""
    line = versions("user")
    key = locking.lock_key("user")
    assert run_cli("user", "up", "--version", str(line[0]), "--url", db).exit_code == 0
    with (
        psycopg.connect(db, autocommit=True) as holder,
        psycopg.connect(db, autocommit=True) as successor,
    ):
        holder.execute("SELECT pg_advisory_lock(%s, %s)", key)
        waiters = [Spawned(migrate_cmd("user", "up", "--url", db)) for _ in range(3)]
        for waiter in waiters:
            waiter.wait_for("waiting up to")
        _run_under_held_lock(db, "user")  # the work, done as the first replica would
        # The next holder queues inside the server: it has the lock the moment it is free.
        queued = threading.Thread(
            target=successor.execute, args=("SELECT pg_advisory_lock(%s, %s)", key)
        )
        queued.start()
        wait_until(
            lambda: query(
                db,
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = %s",
                [successor.info.backend_pid],
            ),
            "the next holder queued on the lock",
        )
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", key)
        queued.join()
        results = [waiter.finish(timeout=30) for waiter in waiters]
        held = query(
            db,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %s",
            [successor.info.backend_pid],
        )
    for code, out, err in results:
        assert code == 0, err
        assert f"at version {line[-1]}; nothing to do" in out + err
    assert held == [(1,)]
    assert history(db) == line


def _run_under_held_lock(db: str, service: str) -> None:
    """Bring the database from its first version to head with Alembic directly (the
    caller holds the run lock)."""
    from alembic_common.core import db as dbmod
    from alembic_common.core import services
    from alembic_common.core.settings import Settings

    svc = services.get(service)
    engine = dbmod.engine(Settings(service, db, "t"))
    try:
        with engine.connect() as conn:
            later = [m.revision for m in svc.migrations[1:]]  # the database is at the first
            svc.run_alembic(svc.config(connection=conn), later)
            conn.commit()
    finally:
        engine.dispose()


def _lock_session(db: str, service: str) -> int:
    with psycopg.connect(db, autocommit=True) as conn:
        pid = locking.lock_holder(conn, service)
    assert pid is not None
    return pid


def test_a_terminated_lock_session_rolls_the_step_back(project_copy: Path, db: str) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    new = _slow_step(project_copy, 2, "user")
    run = Spawned(migrate_cmd("user", "up", "--url", db), env=env)
    wait_until(lambda: backends(db, "%pg_sleep(2)%"), "the step to start")
    query(db, "SELECT pg_terminate_backend(%s)", [_lock_session(db, "user")])
    code, _, err = run.finish()
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert says(last, f"the migration lock was lost during version {new}")
    assert f"version {new} was rolled back" in last and "error: unexpected" not in err
    assert history(db) == versions("user") and "step_runs" not in tables(db)
    again = run_cli("user", "up", "--url", db, env=env)
    assert again.exit_code == 0, again.output
    assert history(db) == [*versions("user"), new]


def test_an_atomic_batch_sees_a_lock_lost_after_its_first_step(project_copy: Path, db: str) -> None:
    """In one transaction, each step's lock check still looks at the server as it is now,
    not as the batch's first step saw it."""
    env = {"MIGRATE_ROOT": str(project_copy)}
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    quick = add_step(project_copy, "user", '    op.execute("CREATE TABLE quick_step (id int)")')
    slow = _slow_step(project_copy, 2, "user")
    run = Spawned(migrate_cmd("user", "up", "--atomic", "--url", db), env=env)
    wait_until(lambda: backends(db, "%pg_sleep(2)%"), "the batch's second step to start")
    query(db, "SELECT pg_terminate_backend(%s)", [_lock_session(db, "user")])
    code, _, err = run.finish()
    assert code == 1, err
    assert says(err, f"the migration lock was lost during version {slow}")
    assert history(db) == versions("user") and not {"quick_step", "step_runs"} & tables(db)
    again = run_cli("user", "up", "--url", db, env=env)
    assert again.exit_code == 0, again.output
    assert history(db) == [*versions("user"), quick, slow]


def test_a_second_runner_after_a_lost_lock_never_runs_a_step_twice(
    project_copy: Path, db: str
) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    new = _slow_step(project_copy, 2.5, "user")
    first = Spawned(migrate_cmd("user", "up", "--url", db), env=env)
    wait_until(lambda: backends(db, "%pg_sleep(2.5)%"), "the first runner's step")
    query(db, "SELECT pg_terminate_backend(%s)", [_lock_session(db, "user")])
    second = Spawned(migrate_cmd("user", "up", "--lock-timeout", "30", "--url", db), env=env)
    first_code, _, first_err = first.finish()
    second_code, _, second_err = second.finish()
    assert first_code == 1 and "lock was lost" in first_err, first_err
    assert second_code == 0, second_err
    assert history(db) == [*versions("user"), new]
    assert query(db, "SELECT count(*) FROM step_runs") == [(1,)], "the step committed twice"
    assert "duplicate key" not in first_err + second_err


# --- the lock module on its own ------------------------------------------------------------


def test_the_lock_session_holds_the_run_lock_and_its_owner_key_and_lets_both_go(
    db: str,
) -> None:
    """Each step checks the owner key (keyed by the lock session's pid): it must be held
    exactly as long as the run lock, and both must go at release."""

    def held(pid: int) -> set[tuple[int, int]]:
        rows = query(
            db,
            "SELECT classid::bigint, objid::bigint FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND pid = %s",
            [pid],
        )
        return {(int(c), int(o)) for c, o in rows}

    with psycopg.connect(db, autocommit=True) as conn:
        pid = conn.info.backend_pid
        with locking.advisory_lock(conn, "patient") as holder:
            assert holder == pid
            assert held(pid) == {
                (locking.LOCK_CLASS, zlib.crc32(b"patient")),
                locking.owner_key(pid),
            }
            # Another session cannot have the owner key while the run lock is held.
            (taken,) = query(
                db, "SELECT pg_try_advisory_xact_lock(%s, %s)", list(locking.owner_key(pid))
            )[0]
            assert taken is False
        assert held(pid) == set()


def test_releasing_on_a_dead_connection_does_not_raise(db: str) -> None:
    conn = psycopg.connect(db, autocommit=True)
    with pytest.raises(ZeroDivisionError), locking.advisory_lock(conn, "patient"):
        query(db, "SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        raise ZeroDivisionError  # the first error is the one that must come out
    conn.close()


def test_waiting_with_no_wait_allowed_fails_at_once(db: str) -> None:
    with (
        psycopg.connect(db, autocommit=True) as holder,
        psycopg.connect(db, autocommit=True) as conn,
    ):
        holder.execute("SELECT pg_advisory_lock(%s, %s)", locking.lock_key("user"))
        match = f"pid {holder.info.backend_pid}"
        with pytest.raises(LockWaitError, match=match), locking.advisory_lock(conn, "user", wait=0):
            pass
