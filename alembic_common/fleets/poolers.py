"""Clients that reach a database through PgBouncer, read from its admin console.

Through a pooler, ``pg_stat_activity`` shows the pooler's server connections, not its
clients: in transaction mode a server connection's ``application_name`` is whichever
client used it last. ``MIGRATE_POOLER_URLS`` lists PgBouncer admin consoles
(``postgresql://stats_user@host:6432/pgbouncer``, comma-separated); for each, ``look``
reads ``SHOW DATABASES`` (which pooled names lead to the database), ``SHOW CLIENTS`` (its
clients, with their own ``application_name``) and ``SHOW SERVERS`` (the backend pids of
its server connections, which the gate then leaves out of what the server shows).

A console that cannot be read is reported, never skipped: the gate then cannot count
that pooler's clients, and holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from alembic_common.core import urls
from alembic_common.errors import ConfigError

VARIABLE = "MIGRATE_POOLER_URLS"


class Client(NamedTuple):
    """One client of the database as a pooler sees it."""

    pooler: str  # host:port of the pooler
    application_name: str
    client: str  # address:port, or 'local'
    since: datetime | None


class Pooled(NamedTuple):
    """What the configured poolers show of one database."""

    clients: list[Client]
    servers: frozenset[tuple[int, int]]  # (backend pid, the pooler's local port) of each
    problem: str | None  # a pooler that could not be read, and why


def configured(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The admin consoles listed in ``MIGRATE_POOLER_URLS`` (canonical URLs)."""
    raw = environ.get(VARIABLE, "")
    if VARIABLE in environ and not raw.strip():
        raise ConfigError(f"{VARIABLE} is empty (an unset shell variable?)")
    found = [urls.parse(u.rstrip(", "), VARIABLE) for u in urls.split_list(raw)]
    for parsed in found:
        if urls.reading(parsed.url()).get("dbname") != "pgbouncer":  # libpq's, ?dbname= wins
            raise ConfigError(
                f"{VARIABLE} lists PgBouncer admin consoles: each URL names the database "
                "pgbouncer (postgresql://stats_user@host:6432/pgbouncer)"
            )
    return list(dict.fromkeys(p.url() for p in found))


def label(url: str) -> str:
    """host:port of a console, never its credentials."""
    found = urls.reading(url)  # where libpq goes: a ?host= or ?port= wins
    host = (found.get("host") or found.get("hostaddr") or "").split(",")[0]
    port = (found.get("port") or "").split(",")[0]
    return f"{host or 'local socket'}:{port or 6432}"


def _show(conn: psycopg.Connection[Any], what: str) -> list[dict[str, Any]]:
    cur = conn.execute(f"SHOW {what}")
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _since(text: Any) -> datetime | None:
    try:
        return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return None


def read(url: str, database: str, connect_timeout: int) -> Pooled:
    """One console's clients and server connections of ``database`` (raises psycopg.Error)."""
    where = label(url)
    # The console speaks the simple query protocol only, and no transactions.
    with psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=connect_timeout,
        cursor_factory=psycopg.ClientCursor,
    ) as conn:
        names = {r["name"] for r in _show(conn, "DATABASES") if r.get("database") == database}
        names.discard("pgbouncer")
        clients = [
            Client(
                where,
                str(r.get("application_name") or ""),
                f"{r.get('addr')}:{r.get('port')}" if r.get("addr") else "local",
                _since(r.get("connect_time")),
            )
            for r in _show(conn, "CLIENTS")
            if r.get("database") in names
        ]
        servers = frozenset(
            (int(r["remote_pid"]), int(r.get("local_port") or 0))
            for r in _show(conn, "SERVERS")
            if r.get("database") in names and r.get("remote_pid")
        )
    return Pooled(clients, servers, None)


def look(database: str, consoles: list[str], connect_timeout: int) -> Pooled:
    """Every configured pooler's clients of ``database``; a console that cannot be read
    is named in ``problem`` (the others are still read)."""
    clients: list[Client] = []
    servers: set[tuple[int, int]] = set()
    problems = []
    for url in {label(u): u for u in reversed(consoles)}.values():  # one read per pooler
        try:
            found = read(url, database, connect_timeout)
        except psycopg.Error as exc:
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            problems.append(
                f"the pooler {label(url)} ({VARIABLE}) cannot be read: {urls.mask(first)}"
            )
            continue
        clients += found.clients
        servers |= found.servers
    return Pooled(clients, frozenset(servers), "; ".join(problems) or None)
