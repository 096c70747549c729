"""Connections: psycopg for the fast read-only checks, SQLAlchemy for Alembic.

Every connection failure becomes a ``ConnectError`` whose one line names the host,
the port and the database, and never the password.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from alembic_common.errors import ConnectError
from alembic_common.releases import OWN_APPLICATION
from alembic_common.settings import Settings, mask

if TYPE_CHECKING:
    from sqlalchemy import Engine

# SQLSTATEs worth waiting out while a database container starts.
_TRANSIENT = {None, "57P03"}  # no server answer yet / "the database system is starting up"
# A NAT or firewall that drops idle TCP connections must not silently end a lock session;
# our sessions are named "migrate" (unless the URL names them), so a contract step does not
# count them among the releases (releases.py).
CONNECT_ARGS: dict[str, Any] = {
    "fallback_application_name": OWN_APPLICATION,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return mask(lines[0] if lines else type(exc).__name__)


def connect_error(
    settings: Settings, exc: psycopg.OperationalError, waited: float = 0
) -> ConnectError:
    """Turn a psycopg connection failure into one clear, password-free line."""
    where = f"{settings.service}: database {settings.database!r} at {settings.host_port}"
    state = getattr(exc, "sqlstate", None)
    text = str(exc)
    if state == "3D000" or ("database" in text and "does not exist" in text):
        message = (
            f"{where} does not exist; create it with: createdb -h {settings.host} "
            f"-p {settings.port} -U {settings.user} {settings.database}"
        )
    elif state in ("28P01", "28000") or "authentication failed" in text:
        message = f"{where}: authentication failed ({_first_line(exc).split('FATAL:')[-1].strip()})"
    else:
        after = f" after waiting {waited:g}s" if waited else ""
        message = f"{where} is unreachable{after}: {_first_line(exc)}"
    return ConnectError(message, service=settings.service)


def _transient(exc: psycopg.OperationalError) -> bool:
    """Worth retrying while a database container starts: no answer yet, or starting up."""
    text = str(exc)
    permanent = "does not exist" in text or "authentication failed" in text
    return getattr(exc, "sqlstate", None) in _TRANSIENT and not permanent


def connect(
    settings: Settings,
    *,
    wait: float = 0,
    autocommit: bool = True,
    search_path: str = "pg_catalog",
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> psycopg.Connection[Any]:
    """Open a psycopg connection, retrying transient failures for up to ``wait`` seconds.

    ``on_wait`` hears once that the server is not answering yet and how long we will wait.
    The session's ``search_path`` is set first (only ``pg_catalog`` unless told otherwise),
    so a database or role setting cannot put a hostile schema in front of our queries.
    """
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        try:
            conn = psycopg.connect(
                settings.url,
                autocommit=autocommit,
                connect_timeout=settings.connect_timeout,
                **CONNECT_ARGS,
            )
        except psycopg.OperationalError as exc:
            if not _transient(exc) or time.monotonic() >= deadline:
                raise connect_error(settings, exc, wait if waiting else 0) from None
            if not waiting and on_wait is not None:
                on_wait({"event": "db_wait", "wait_s": wait, "target": settings.label})
            waiting = True
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            continue
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(search_path)))
        if not autocommit:
            conn.commit()
        return conn


def with_database(url: str, database: str) -> str:
    """The same server and login as ``url``, another database (tests and scratch use it)."""
    return Settings("any", url, "given").for_database(database).url


def engine(settings: Settings) -> Engine:
    """A pool-less SQLAlchemy engine on psycopg 3 for one run."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(
        settings.sqlalchemy_url(),
        poolclass=NullPool,
        connect_args={"connect_timeout": settings.connect_timeout, **CONNECT_ARGS},
    )
