"""The per-service migration lock: a session-level advisory lock on its own connection.

It lives on a dedicated autocommit connection (the one that read the state), never the
migration connection, so
``CREATE INDEX CONCURRENTLY`` inside ``autocommit_block()`` cannot deadlock against it.
Waiting uses ``lock_timeout`` on ``pg_advisory_lock``, so a waiter wakes the moment the
holder lets go, and gives up after its own bound.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors

from alembic_common.errors import LockWaitError, StateError

# First half of the two-int advisory key: "MG" marks the toolkit's locks.
LOCK_CLASS = 0x4D47
DEFAULT_LOCK_WAIT = 300.0


def lock_key(service: str) -> tuple[int, int]:
    """The advisory lock key for one service's database."""
    crc = zlib.crc32(service.encode())
    return LOCK_CLASS, crc - (1 << 32) if crc >= 1 << 31 else crc


def lock_holder(conn: psycopg.Connection, key: tuple[int, int]) -> int | None:
    """The backend pid that holds ``key``, if PostgreSQL can tell."""
    row = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid::int = %s AND objid::bigint::int = %s AND objsubid = 2"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        key,
    ).fetchone()
    return row[0] if row else None


@contextmanager
def advisory_lock(
    conn: psycopg.Connection,
    service: str,
    *,
    wait: float = DEFAULT_LOCK_WAIT,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[None]:
    """Hold ``service``'s migration lock on ``conn`` (autocommit) for the block."""
    key = lock_key(service)
    _acquire(conn, service, key, wait, on_wait)
    try:
        yield
    finally:
        if not conn.closed:
            released = conn.execute("SELECT pg_advisory_unlock(%s, %s)", key).fetchone()
            if not (released and released[0]):
                raise StateError(f"{service}: the migration lock was lost during the run")


def _acquire(
    conn: psycopg.Connection,
    service: str,
    key: tuple[int, int],
    wait: float,
    on_wait: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Take the lock at once if free; otherwise report the wait and block for at most ``wait``."""
    got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
    if got and got[0]:
        return
    holder = lock_holder(conn, key)
    if on_wait is not None:
        on_wait({"event": "lock_wait", "holder_pid": holder, "wait_s": wait})
    if wait <= 0:
        raise LockWaitError(
            f"{service}: another migration run (pid {holder}) holds the lock",
            service=service,
        )
    conn.execute(f"SET lock_timeout = {max(1, int(wait * 1000))}")
    try:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
    except errors.LockNotAvailable:
        raise LockWaitError(
            f"{service}: waited {wait:g}s for the migration lock held by "
            f"pid {lock_holder(conn, key)}; giving up (raise --lock-wait to wait longer)",
            service=service,
        ) from None
    conn.execute("RESET lock_timeout")
