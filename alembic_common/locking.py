"""The per-service migration lock: a session-level advisory lock on its own connection.

It lives on a dedicated autocommit connection, never the migration connection, so
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

from alembic_common.db import connect
from alembic_common.errors import LockWaitError, StateError
from alembic_common.settings import Settings

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
    settings: Settings,
    *,
    wait: float = DEFAULT_LOCK_WAIT,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[psycopg.Connection]:
    """Hold the service's migration lock for the duration of the block.

    Yields the lock's own connection, which callers may use for diagnostics.
    """
    key = lock_key(settings.service)
    conn = connect(settings)
    try:
        _acquire(conn, settings, key, wait, on_wait)
    except BaseException:
        conn.close()
        raise
    try:
        yield conn
    finally:
        try:
            released = conn.execute("SELECT pg_advisory_unlock(%s, %s)", key).fetchone()
        finally:
            conn.close()
        if not (released and released[0]):
            raise StateError(f"{settings.service}: the migration lock was lost during the run")


def _acquire(
    conn: psycopg.Connection,
    settings: Settings,
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
            f"{settings.service}: another migration run (pid {holder}) holds the lock",
            service=settings.service,
        )
    conn.execute(f"SET lock_timeout = {max(1, int(wait * 1000))}")
    try:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
    except errors.LockNotAvailable:
        raise LockWaitError(
            f"{settings.service}: waited {wait:g}s for the migration lock held by "
            f"pid {lock_holder(conn, key)}; giving up (raise --lock-wait to wait longer)",
            service=settings.service,
        ) from None
    conn.execute("RESET lock_timeout")
