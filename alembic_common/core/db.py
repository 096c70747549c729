"""Connections: psycopg for the fast read-only checks, SQLAlchemy for Alembic.

Every connection failure becomes a ``ConnectError`` whose one line names the host,
the port and the database, and never the password.

Every consumer gets the same conninfo: psycopg takes the URL as it is, and SQLAlchemy's
engine is handed psycopg connections made from it (it never parses the URL), so several
hosts and ``target_session_attrs`` mean the same to both, and to the client tools.

``migrate`` talks to the primary directly. The first query of every connection asks the
server for its own backend pid and whether it is in recovery, and sets the session's
``search_path`` only when that pid is the one the connection was given: through a
connection pooler (PgBouncer hands out a pid of its own) no session state is left on a
pooled server connection, and the command refuses (``TopologyError``); so it does on a
standby. Reads of another service's database (``direct=False``) may go through either.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import psycopg

from alembic_common.core.events import DbWait, Progress
from alembic_common.core.settings import Settings, migration_var
from alembic_common.errors import ConnectError, TopologyError
from alembic_common.online.releases import OWN_APPLICATION
from alembic_common.safety import redact
from alembic_common.safety.redact import first_line

if TYPE_CHECKING:
    from sqlalchemy import Engine

# SQLSTATEs worth waiting out while a database container starts.
_TRANSIENT = {None, "57P03"}  # no server answer yet / "the database system is starting up"
# A NAT or firewall that drops idle TCP connections must not silently end a lock session.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
# Our sessions are named "migrate" (unless the URL or PGAPPNAME names them), so a contract
# step does not count them among the releases (releases.py). A run's first connection takes
# the name only once it knows it is no pooler's (``_LANDING``): through PgBouncer a name
# sent at start-up would stay on a pooled server connection for other clients to wear.
# Alembic's and the backfill's connections come after that check, to the same server.
CONNECT_ARGS: dict[str, Any] = {"fallback_application_name": OWN_APPLICATION, **KEEPALIVES}


def connect_error(
    settings: Settings, exc: psycopg.OperationalError, waited: float = 0
) -> ConnectError:
    """Turn a psycopg connection failure into one clear, password-free line."""
    where = f"{settings.service}: database {settings.database!r} at {settings.host_port}"
    state = getattr(exc, "sqlstate", None)
    text = str(exc)
    tried = _attempts(text)
    refused = [(at, why) for at, why in tried if "authentication failed" in why]
    if len(tried) > 1 and refused:  # several hosts: the one whose server said no
        at, why = refused[0]
        message = f"{where}: authentication failed at {at} ({why.split('FATAL:')[-1].strip()})"
    elif state == "3D000" or ("database" in text and "does not exist" in text):
        message = (
            f"{where} does not exist; create it with: createdb -h {settings.host} "
            f"-p {settings.port} -U {settings.user} {settings.database}"
        )
    elif "no password supplied" in text:
        message = (
            f"{where}: authentication failed (the server asks for a password and none was "
            "given: put it in the URL, PGPASSWORD, --password-file or a passfile)"
        )
    elif state in ("28P01", "28000") or "authentication failed" in text:
        message = f"{where}: authentication failed ({first_line(exc).split('FATAL:')[-1].strip()})"
    else:
        after = f" after waiting {waited:g}s" if waited else ""
        said = "; ".join(f"{at}: {why}" for at, why in tried) if len(tried) > 1 else ""
        message = f"{where} is unreachable{after}: {redact.one_line(said) or first_line(exc)}"
    return ConnectError(message, service=settings.service)


# How libpq names each attempt of a connection to several hosts, and why it failed.
_ATTEMPT = re.compile(
    r'connection to server (?:at "(?P<host>[^"]*)"(?: \([^)]*\))?, port (?P<port>\d+)'
    r'|on socket "(?P<socket>[^"]*)") failed: (?P<why>[^\n]*)'
)


def _attempts(text: str) -> list[tuple[str, str]]:
    """Each host libpq tried (``host:port`` or the socket) with the first line of why it
    failed, in the order tried, once each."""
    found: dict[str, str] = {}
    for match in _ATTEMPT.finditer(text.split("All failures were:", 1)[-1]):
        at = match["socket"] or f"{match['host']}:{match['port']}"
        found.setdefault(at, " ".join(match["why"].split()))
    return list(found.items())


def _transient(exc: psycopg.OperationalError) -> bool:
    """Worth retrying while a database container starts: no answer yet, or starting up."""
    text = str(exc)
    permanent = any(
        word in text for word in ("does not exist", "authentication failed", "no password supplied")
    )
    return getattr(exc, "sqlstate", None) in _TRANSIENT and not permanent


# One round trip: the server's own pid for this session, whether it is a standby, and the
# session's search_path and (when nothing named it) application_name, set only when the pid
# is the one libpq was given: no pooler.
_LANDING = """
SELECT pg_catalog.pg_backend_pid(), pg_catalog.pg_is_in_recovery(),
       CASE WHEN pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.=) %(pid)s::pg_catalog.int4
            THEN pg_catalog.set_config('search_path', %(search_path)s, false) END,
       CASE WHEN pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.=) %(pid)s::pg_catalog.int4
             AND pg_catalog.current_setting('application_name')
                 OPERATOR(pg_catalog.=) ''::pg_catalog.text
            THEN pg_catalog.set_config('application_name', %(name)s, false) END
"""
# Every operator in it is pg_catalog's by name: a database or role setting may have put a
# schema of someone else's first on the search_path this query is about to replace.


def refuse_pooler(settings: Settings) -> TopologyError:
    """The one line for a connection that reached a pooler instead of the server, with the
    way out for where the URL came from."""
    source = settings.source
    if source == "--targets-file":
        fix = "list the database by the server's own address in the targets file"
    elif source == "registry":
        fix = "have the registry query return the server's own address for it"
    elif source.endswith("_URLS"):
        fix = (
            f"set {migration_var(settings.service)}S to the servers' own addresses (or give "
            "them with --url) and keep the pooled URLs for the application"
        )
    else:
        fix = (
            f"set {migration_var(settings.service)} (or --url) to the server's own address "
            "and keep the pooled URL for the application"
        )
    return TopologyError(
        f"{settings.service}: {settings.label} is reached through a connection pooler (the "
        "server's backend pid is not the one the connection was given): migrate needs a "
        f"direct connection to the primary; {fix}",
        service=settings.service,
    )


def refuse_standby(settings: Settings, landed: str) -> TopologyError:
    """The one line for a connection that landed on ``landed``, a standby."""
    where = settings.name or f"{landed}/{settings.database}"
    return TopologyError(
        f"{settings.service}: {where} is a standby (in recovery, read-only); nothing "
        "was changed: point the URL at the primary, or list every host with "
        "target_session_attrs=read-write (postgresql://h1:5432,h2:5432/db"
        "?target_session_attrs=read-write)",
        service=settings.service,
    )


def connect(
    settings: Settings,
    *,
    wait: float = 0,
    autocommit: bool = True,
    search_path: str = "pg_catalog",
    on_wait: Progress | None = None,
    direct: bool = True,
) -> psycopg.Connection[Any]:
    """Open a psycopg connection, retrying transient failures for up to ``wait`` seconds.

    ``on_wait`` hears once that the server is not answering yet and how long we will wait.
    The session's ``search_path`` is set first (only ``pg_catalog`` unless told otherwise),
    so a database or role setting cannot put a hostile schema in front of our queries.
    With ``direct`` (every connection to the service's own database), a pooler or a standby
    is refused before anything else is sent; without it (another service's database, read
    only) either is accepted, and on a pooled connection no session setting is made.
    """
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        try:
            conn = psycopg.connect(
                settings.url,
                autocommit=autocommit,
                connect_timeout=settings.connect_timeout,
                **KEEPALIVES,
            )
        except psycopg.OperationalError as exc:
            if not _transient(exc) or time.monotonic() >= deadline:
                raise connect_error(settings, exc, wait if waiting else 0) from None
            if not waiting and on_wait is not None:
                on_wait(DbWait(wait_s=wait, target=settings.label))
            waiting = True
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            continue
        try:
            _land(conn, settings, search_path, direct)
        except BaseException:
            conn.close()
            raise
        if not autocommit:
            conn.commit()
        return conn


def _land(
    conn: psycopg.Connection[Any], settings: Settings, search_path: str, direct: bool
) -> None:
    """Refuse a pooler or a standby (``direct``); set the session's search_path otherwise."""
    row = conn.execute(
        _LANDING,
        {"pid": conn.info.backend_pid, "search_path": search_path, "name": OWN_APPLICATION},
    ).fetchone()
    assert row is not None
    pid, standby = row[0], row[1]
    if direct and pid != conn.info.backend_pid:
        raise refuse_pooler(settings)
    if direct and standby:
        raise refuse_standby(settings, f"{conn.info.host}:{conn.info.port}")


def with_database(url: str, database: str) -> str:
    """The same server and login as ``url``, another database (tests and scratch use it)."""
    return Settings("any", url, "given").for_database(database).url


def engine(settings: Settings) -> Engine:
    """A pool-less SQLAlchemy engine on psycopg 3 for one run, whose connections psycopg
    makes from the run's own URL (SQLAlchemy never parses it: several hosts, sockets and
    every libpq parameter mean what they mean to libpq)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    def made() -> psycopg.Connection[Any]:
        return psycopg.connect(
            settings.url, connect_timeout=settings.connect_timeout, **CONNECT_ARGS
        )

    return create_engine("postgresql+psycopg://", poolclass=NullPool, creator=made)


def pinned(settings: Settings, conn: psycopg.Connection[Any]) -> Settings:
    """``settings`` narrowed to the one host ``conn`` reached, so that every other
    connection of the run (Alembic's, the client tools') lands on that same server, even
    when the URL names several."""
    parts = settings.parts
    if len(settings.addresses) <= 1:
        return settings
    host, port = conn.info.host, conn.info.port
    params = {k: v for k, v in parts.params.items() if k not in ("host", "port", "hostaddr")}
    hostaddr = getattr(conn.info, "hostaddr", "")
    if hostaddr and "hostaddr" in parts.params:
        params["hostaddr"] = hostaddr
    return replace(settings, url=parts._replace(hosts=((host, int(port)),), params=params).url())
