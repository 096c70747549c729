"""The per-service migration lock: a session-level advisory lock on a connection of its own.

The lock lives on a dedicated autocommit psycopg connection (the one that read the
state), never on the migration connection, so ``CREATE INDEX CONCURRENTLY`` inside an
autocommit block cannot deadlock against it. Three more rules, each learnt the hard way:

* **Waiters never block inside a statement.** A session sleeping in ``pg_advisory_lock``
  holds a snapshot, and ``CREATE INDEX CONCURRENTLY`` of the holder waits for every older
  snapshot: the holder would stall until the waiters gave up. Waiters LISTEN instead,
  wake on the holder's NOTIFY at release (or every ``POLL_S``), and try again.
* **The lock session survives the server's own limits.** ``idle_session_timeout`` and
  friends are switched off on it, and the connection uses TCP keepalives (``db.py``).
* **A lost lock is noticed before any step commits.** With the run lock, the lock
  session also takes an *owner* key of its own, keyed by its backend pid. Each step's
  history write (``history.py``) takes the *step* key for its transaction, then writes
  only if ``pg_try_advisory_xact_lock`` on that owner key fails: the lock session still
  holds it, so it is alive and still holds the run lock. A session's advisory locks go
  the moment it dies, so this is as exact as reading ``pg_locks``, without scanning the
  whole lock table at every step. A new holder passes through the step key (``barrier``)
  before reading the state, so it never reads around a step that is still committing.

Keys: class ``0x4D47`` ("MG") for the run lock and ``0x4D53`` ("MS") for the step key,
each with the CRC-32 of the service name; class ``0x4D4F`` ("MO") with the lock
session's pid for the owner key. ``pg_locks.objid`` is an unsigned ``oid``, so queries
compare it with the unsigned CRC, never a signed int.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql

from alembic_common.core.events import LockWait, Progress
from alembic_common.errors import Interrupted, LockWaitError, signal_name

LOCK_CLASS = 0x4D47
STEP_CLASS = 0x4D53
OWNER_CLASS = 0x4D4F
DEFAULT_LOCK_WAIT = 300.0
POLL_S = 0.25
# Session limits that would end an idle lock session (PostgreSQL 14+ for the first).
SESSION_LIMITS = (
    "idle_session_timeout",
    "idle_in_transaction_session_timeout",
    "statement_timeout",
)


class NotNeeded(Exception):
    """A waiter found, on waking, that there is no longer anything to wait for."""


HELD_BY = """
    SELECT l.pid FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.classid = %(classid)s::pg_catalog.oid AND l.objid = %(objid)s::pg_catalog.oid
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                        WHERE d.datname = pg_catalog.current_database())"""


def _crc(service: str) -> int:
    return zlib.crc32(service.encode())


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def lock_key(service: str) -> tuple[int, int]:
    """The (int4, int4) advisory key of a service's run lock, as ``pg_advisory_lock`` takes it."""
    return LOCK_CLASS, _signed(_crc(service))


def step_key(service: str) -> tuple[int, int]:
    """The key a step's transaction holds from its lock check to its commit."""
    return STEP_CLASS, _signed(_crc(service))


def owner_key(pid: int) -> tuple[int, int]:
    """The key the lock session ``pid`` holds for as long as it holds a run lock."""
    return OWNER_CLASS, pid


def lock_oids(service: str) -> dict[str, int]:
    """The run lock as ``pg_locks`` shows it: ``classid`` and ``objid`` as unsigned oids."""
    return {"classid": LOCK_CLASS, "objid": _crc(service)}


def channel(service: str) -> str:
    """The LISTEN/NOTIFY channel on which a holder announces that it let go."""
    return f"migrate_lock_{service}"


def lock_holder(conn: psycopg.Connection[Any], service: str) -> int | None:
    """The backend pid that holds ``service``'s run lock in this database, if any."""
    row = conn.execute(HELD_BY, lock_oids(service)).fetchone()
    return int(row[0]) if row else None


def keep_session(conn: psycopg.Connection[Any]) -> None:
    """Switch off the session limits that would end an idle lock session."""
    conn.execute(
        "SELECT pg_catalog.set_config(s.name, '0', false) FROM pg_catalog.pg_settings s"
        " WHERE s.name = ANY(%s)",
        [list(SESSION_LIMITS)],
    )


def _try(conn: psycopg.Connection[Any], service: str) -> bool:
    row = conn.execute("SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", lock_key(service))
    got = row.fetchone()
    return bool(got and got[0])


@contextlib.contextmanager
def advisory_lock(
    conn: psycopg.Connection[Any],
    service: str,
    *,
    wait: float = DEFAULT_LOCK_WAIT,
    on_wait: Progress | None = None,
    needed: Callable[[], bool] | None = None,
) -> Iterator[int]:
    """Hold ``service``'s run lock on ``conn`` (autocommit) for the block; yield its pid.

    A waiter that wakes without the lock, once the holder it found has let go, asks
    ``needed()`` (a lock-free look at the database); when it says no, the wait ends with
    ``NotNeeded`` and the lock is never taken: replicas that waited while another did the
    work all leave at once, instead of taking the lock one after another only to find
    nothing to do. While that holder still runs, its intermediate state (a step it may yet
    roll back) decides nothing.

    Releasing never raises: a dead connection has already lost the lock, and an error
    that is on its way out must not be replaced by one about the unlock.
    """
    keep_session(conn)
    _acquire(conn, service, wait, on_wait, needed)
    try:
        yield barrier(conn, service)
    finally:
        _release(conn, service)


def barrier(conn: psycopg.Connection[Any], service: str) -> int:
    """Take the owner key, then wait for a step of an earlier holder that is committing
    right now to finish; return the server's pid of this session (the owner key's id,
    whatever pid libpq was told)."""
    row = conn.execute(
        "SELECT pg_catalog.pg_advisory_lock(%s, pg_catalog.pg_backend_pid()),"
        " pg_catalog.pg_advisory_xact_lock(%s, %s), pg_catalog.pg_backend_pid()",
        [OWNER_CLASS, *step_key(service)],
    ).fetchone()
    assert row is not None
    return int(row[2])


def _acquire(
    conn: psycopg.Connection[Any],
    service: str,
    wait: float,
    on_wait: Progress | None,
    needed: Callable[[], bool] | None = None,
) -> None:
    """Take the lock at once if free; otherwise report the holder and wait up to ``wait``."""
    if _try(conn, service):
        return
    holder = lock_holder(conn, service)
    waiting = LockWait(holder_pid=holder, wait_s=wait)
    if wait <= 0:
        if on_wait is not None:
            on_wait(waiting)
        raise LockWaitError(
            f"{service}: another migration run (pid {holder}) holds the migration lock",
            service=service,
        )
    deadline = time.monotonic() + wait
    listen = sql.Identifier(channel(service))
    try:
        conn.execute(sql.SQL("LISTEN {}").format(listen))
        if on_wait is not None:
            on_wait(waiting)  # listening already: a release from now on wakes this waiter
        _wait(conn, service, deadline, wait, holder, needed)
    except KeyboardInterrupt as exc:
        signum, name = signal_name(exc)
        raise Interrupted(
            f"{service}: interrupted ({name}) while waiting for the migration lock held by "
            f"pid {holder}; nothing was changed",
            signum=signum,
            service=service,
        ) from None
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute(sql.SQL("UNLISTEN {}").format(listen))


def _wait(
    conn: psycopg.Connection[Any],
    service: str,
    deadline: float,
    wait: float,
    holder: int | None,
    needed: Callable[[], bool] | None,
) -> None:
    """Sleep on the channel until the lock is ours, it is no longer needed, or the
    deadline passes."""
    while not _try(conn, service):
        # Only once the holder this waiter found has let go: its run is over (finished,
        # failed or rolled back), and whoever holds the lock now came after it.
        if needed is not None and lock_holder(conn, service) != holder and not needed():
            raise NotNeeded(service)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            holder = lock_holder(conn, service) or holder
            raise LockWaitError(
                f"{service}: waited {wait:g}s for the migration lock held by pid {holder}; "
                "giving up (raise --lock-wait to wait longer)",
                service=service,
            )
        for _ in conn.notifies(timeout=min(POLL_S, remaining), stop_after=1):
            pass


def _release(conn: psycopg.Connection[Any], service: str) -> None:
    """Unlock and tell waiters at once; quietly, whatever state the connection is in."""
    if conn.closed or conn.broken:
        return
    with contextlib.suppress(psycopg.Error):
        # One statement, evaluated in order: the owner key, the run lock, then the news.
        conn.execute(
            "SELECT pg_catalog.pg_advisory_unlock(%s, pg_catalog.pg_backend_pid()),"
            " pg_catalog.pg_advisory_unlock(%s, %s), pg_catalog.pg_notify(%s, '')",
            [OWNER_CLASS, *lock_key(service), channel(service)],
        )
