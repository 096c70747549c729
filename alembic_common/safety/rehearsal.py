"""Rehearse the pending steps on a throwaway copy of the database, and prove the way back.

The copy is a new database on the same server, restored from a fresh verified dump (or a
given backup); the original is only read. On the copy ``up`` runs what it would run on the
original now (the original's sessions decide whether a contract step is held), measured
step by step; then ``down`` goes back to where it started and every table's rows are
compared, by hash, with the copy before the run. The copy is dropped at the end, also
when the run fails or is interrupted, and the dump (0600 in a 0700 folder) is removed.

Measured per step: its wall time; each lock on a table it held, with the longest time it
held it (a sampler reads ``pg_locks`` every few milliseconds, and the locks a step's
transaction holds are read in that transaction just before it commits, so none is
missed); the rows it inserted, updated and deleted (``pg_stat_xact_user_tables`` at each
commit, or what a backfill reports); and each table's and its indexes' size before and
after. No figure holds a value from a row.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from alembic_common.core import db, deps, events, history, plan, runner
from alembic_common.core.events import Progress
from alembic_common.core.executor import refuse_unseen
from alembic_common.core.locking import advisory_lock
from alembic_common.core.project import Project
from alembic_common.core.services import Service
from alembic_common.core.settings import Settings
from alembic_common.core.state import read
from alembic_common.errors import (
    Interrupted,
    LockTimeoutError,
    MigrationError,
    PrivilegeError,
    RefusedError,
    StepError,
    UsageError,
    signal_name,
)
from alembic_common.online import partial
from alembic_common.safety import backup

MAX_LOCK_MS = 1000.0
POLL_S = 0.005  # the lock sampler's period
COPY_INFIX = "_rehearsal_"
MARK = "migrate rehearsal copy"
# Modes that block the application's reads or writes while held: what --max-lock-ms judges.
# ROW EXCLUSIVE (DML), ACCESS SHARE (reads) and SHARE UPDATE EXCLUSIVE (CONCURRENTLY,
# VALIDATE) let traffic through, however long they are held.
BLOCKING = frozenset(("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"))
MODES = (  # PostgreSQL's table lock modes, weakest first
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
BOOKKEEPING = frozenset(("alembic_version", history.TABLE, partial.TABLE))

_TABLES = """
SELECT c.oid::int8, pg_catalog.format('%%I.%%I', n.nspname, c.relname), c.relkind::text,
       pg_catalog.pg_table_size(c.oid), pg_catalog.pg_indexes_size(c.oid)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
   AND c.relname <> ALL (%(bookkeeping)s)
"""
_COLUMNS = """
SELECT c.relforcerowsecurity,
       pg_catalog.array_agg(a.attname::text ORDER BY a.attname)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.oid = %s::regclass
 GROUP BY c.relforcerowsecurity
"""
_SAMPLE = """
SELECT l.pid, l.relation::int8, l.mode FROM pg_catalog.pg_locks l
 WHERE l.locktype = 'relation' AND l.granted AND l.relation >= 16384
   AND l.database = (SELECT oid FROM pg_catalog.pg_database
                      WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
   AND l.pid <> ALL (%(mine)s)
"""
_HELD = """
SELECT l.relation::int8, l.mode,
       EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) pg_catalog.now())
  FROM pg_catalog.pg_locks l
 WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' AND l.granted
   AND l.relation >= 16384
"""
_CHANGED = """
SELECT relid::int8, n_tup_ins + n_tup_upd + n_tup_del FROM pg_catalog.pg_stat_xact_user_tables
"""


# --- the report ------------------------------------------------------------------------------


@dataclass
class Lock:
    """A lock a step held on a table, and the longest it held it."""

    table: str
    mode: str
    held_ms: float


@dataclass
class Size:
    """A table's size (its heap and TOAST) and its indexes', before and after a step."""

    table: str
    bytes_before: int | None
    bytes_after: int | None
    index_bytes_before: int | None
    index_bytes_after: int | None


@dataclass
class StepFigures:
    """What one pending step did on the copy."""

    version: int
    description: str
    ok: bool = True
    seconds: float = 0.0
    error: str | None = None
    locks: list[Lock] = field(default_factory=list)
    rows_changed: dict[str, int] = field(default_factory=dict)
    sizes: list[Size] = field(default_factory=list)
    # the versions whose figures these are: this one, or (--atomic, on the batch's last
    # step) every step of the one transaction; empty on the batch's other steps
    covers: list[int] = field(default_factory=list)


@dataclass
class TableRows:
    """One table's rows before the run and after the way back: counts, never values."""

    table: str
    rows_before: int | None
    rows_after: int | None
    lost: int  # rows before the run not found after the way back (deleted or changed)
    added: int  # rows after the way back that were not there before
    compared: bool = True


@dataclass
class WayBack:
    """``down`` to where the rehearsal started, and the rows compared with the start."""

    ok: bool
    error: str | None = None
    to: int | None = None
    tables: list[TableRows] = field(default_factory=list)


@dataclass
class Rehearsal:
    """What a rehearsal found: the steps' figures, the way back, and what is wrong."""

    service: str
    target: str
    source: str  # "dump" (a fresh one), "empty" (nothing to copy) or the backup file's name
    start: int | None
    end: int | None = None
    copy_seconds: float = 0.0
    seconds: float = 0.0
    max_lock_ms: float = MAX_LOCK_MS
    steps: list[StepFigures] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    why_held: str | None = None
    way_back: WayBack | None = None
    roles_dropped: list[str] = field(default_factory=list)  # server-wide: roles are no copy's
    roles_left: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def judge(self) -> None:
        """Name every problem: a failed step, a lock held too long, rows lost on the way back."""
        for step in self.steps:
            if not step.ok:
                self.problems.append(f"version {step.version} failed: {step.error}")
            for lock in step.locks:
                if lock.mode in BLOCKING and lock.held_ms > self.max_lock_ms:
                    self.problems.append(
                        f"version {step.version} held {lock.mode} on {lock.table} for "
                        f"{lock.held_ms:,.0f} ms (more than {self.max_lock_ms:,.0f} ms)"
                    )
        for role in self.roles_dropped:
            self.problems.append(f"the rehearsal dropped the role {role} from the server")
        for role in self.roles_left:
            self.problems.append(f"the rehearsal left the role {role} on the server")
        back = self.way_back
        if back is None:
            return
        if back.error is not None:
            self.problems.append(f"the way back failed: {back.error}")
        for t in back.tables:
            if t.rows_before is None and t.rows_after is not None:
                self.problems.append(
                    f"the way back leaves {t.table} ({t.rows_after} rows), made by the run"
                )
            elif not t.compared:
                self.problems.append(f"the way back: {t.table} could not be compared")
            elif t.lost or t.added or t.rows_before != t.rows_after:
                self.problems.append(
                    f"the way back changes {t.table}: {t.lost} of its {t.rows_before} rows "
                    f"lost or changed, {t.added} not there before"
                )
        back.ok = back.error is None and not any(
            not t.compared or t.lost or t.added or t.rows_before != t.rows_after
            for t in back.tables
        )


# --- the copy ----------------------------------------------------------------------------------


def copy_name(database: str) -> str:
    """A new database's name beside ``database``, within PostgreSQL's 63 bytes."""
    tail = COPY_INFIX + uuid.uuid4().hex[:10]
    head = database.encode()[: 63 - len(tail)].decode("utf-8", "ignore")
    return head + tail


def _mark(database: str) -> str:
    return f"{MARK} of {database} by pid {os.getpid()} on {socket.gethostname()}"


def _create(conn: psycopg.Connection[Any], service: str, name: str, original: str) -> None:
    try:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege:
        raise PrivilegeError(
            f"{service}: a rehearsal makes a copy of the database on the same server, and the "
            f"role {conn.info.user} may not create databases (ALTER ROLE ... CREATEDB); "
            "nothing was changed",
            service=service,
        ) from None
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(_mark(original))
        )
    )


def _drop(conn: psycopg.Connection[Any], name: str, settings: Settings | None = None) -> None:
    """Drop the copy, ending any session still on it; SIGINT and SIGTERM wait meanwhile.
    With ``settings``, a connection lost meanwhile (a restart, an idle timeout) is made
    again, to the original's database, for the drop."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    main = threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked) if main else set()
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    try:
        try:
            conn.execute(drop)
        except psycopg.OperationalError:
            if settings is None:
                raise
            with db.connect(settings) as again:
                again.execute(drop)
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def may_create(conn: psycopg.Connection[Any], service: str) -> None:
    """Refuse, before the dump, a role that may not create the copy's database."""
    row = conn.execute(
        "SELECT rolcreatedb OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not (row and row[0]):
        raise PrivilegeError(
            f"{service}: a rehearsal makes a copy of the database on the same server, and the "
            f"role {conn.info.user} may not create databases (ALTER ROLE ... CREATEDB); "
            "nothing was changed",
            service=service,
        )


def server_roles(conn: psycopg.Connection[Any]) -> dict[str, bool]:
    """The server's roles (its own pg_* left out), each with whether it may log in."""
    rows = conn.execute(
        "SELECT rolname, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_'"
    ).fetchall()
    return dict(rows)


def keep_roles(conn: psycopg.Connection[Any], copy: str, roles: dict[str, bool]) -> None:
    """Roles belong to the server, not to the copy: a downgrade that drops a group role once
    no database uses it (tenancy's drop_roles) finds the copy using every group role that
    was there before, and keeps it. The grant goes with the copy."""
    groups = [sql.Identifier(r) for r, login in sorted(roles.items()) if not login]
    if groups:
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(copy), sql.SQL(", ").join(groups)
            )
        )


def _roles_after(
    conn: psycopg.Connection[Any], service: str, before: dict[str, bool], result: Rehearsal
) -> None:
    """The roles migrations make with the toolkit's helpers (tenancy's): one the rehearsal
    made and did not drop is dropped now, the copy gone; one still missing or still there
    is a problem of the report. Other roles are left alone: on a shared server, one made
    or dropped meanwhile may be someone else's doing."""
    from alembic_common.tenancy import rls

    ours = {rls.app_role(service), rls.OPERATOR_ROLE}
    after = {r: login for r, login in server_roles(conn).items() if r in ours}
    before = {r: login for r, login in before.items() if r in ours}
    for role in sorted(after.keys() - before.keys()):
        try:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        except psycopg.Error:
            result.roles_left.append(role)
    result.roles_dropped = sorted(before.keys() - after.keys())


def left_behind(conn: psycopg.Connection[Any], original: str) -> list[str]:
    """Copies of ``original`` that a rehearsal killed on this host (SIGKILL) left behind."""
    rows = conn.execute(
        "SELECT d.datname, pg_catalog.shobj_description(d.oid, 'pg_database') "
        "FROM pg_catalog.pg_database d WHERE d.datname LIKE '%%\\_rehearsal\\_%%'"
    ).fetchall()
    found = []
    mine = f"{MARK} of {original} by pid "
    for name, comment in rows:
        if not (comment or "").startswith(mine):
            continue
        pid, _, host = comment[len(mine) :].partition(" on ")
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            found.append(name)
    return found


RUNTIME = ("alembic.command", "alembic.runtime.environment", "sqlalchemy.dialects.postgresql")


def _import_runtime() -> None:
    """What the steps run on, imported ahead (the modules ``up`` imports when it has work)."""
    for name in RUNTIME:
        importlib.import_module(name)


def _signal_of(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, Interrupted):
        signum = exc.exit_code - 128
        return signum, {2: "SIGINT", 15: "SIGTERM"}.get(signum, f"signal {signum}")
    return signal_name(exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _private_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="migrate-rehearsal-"))  # 0700
    try:
        yield folder
    finally:
        backup._remove(folder)


# --- what the copy holds -----------------------------------------------------------------------


def tables(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, str, int, int]]:
    """The copy's tables by name: oid, kind, size and indexes' size (the bookkeeping left out)."""
    rows = conn.execute(_TABLES, {"bookkeeping": sorted(BOOKKEEPING)}).fetchall()
    return {name: (oid, kind, size, index) for oid, name, kind, size, index in rows}


def row_hashes(conn: psycopg.Connection[Any], table: str) -> array[int] | None:
    """The sorted 64-bit hashes of a table's rows, each the hash of the row's columns taken
    in the order of their names (so a column's place does not count, its name, type and
    value do); None when row-level security would hide rows.

    A table whose owner is subject to its own policies (FORCE ROW LEVEL SECURITY, as tenant
    isolation makes them) is read with NO FORCE in a transaction that is rolled back: the
    copy is the rehearsal's own, and its owner may."""
    ident = sql.SQL(table)  # quoted by the server's format('%I.%I')
    found: array[int] = array("q")
    try:
        with conn.transaction(force_rollback=True):
            forced, names = conn.execute(_COLUMNS, [table]).fetchone() or (False, [])
            if forced:
                conn.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(ident))
            conn.execute("SET LOCAL row_security = off")
            # the names, then the values: a column renamed changes every row
            row = sql.SQL(", ").join(
                [sql.Literal(",".join(names))]
                + [sql.SQL("t.{}").format(sql.Identifier(n)) for n in names]
            )
            query = sql.SQL(
                "SELECT pg_catalog.hashtextextended(ROW({})::text, 0) FROM {} t"
            ).format(row, ident)
            with conn.cursor(binary=True) as cur:
                found.extend(h for (h,) in cur.execute(query))
    except psycopg.errors.InsufficientPrivilege:
        return None
    return array("q", sorted(found))


def compare(before: array[int], after: array[int]) -> tuple[int, int]:
    """Rows of ``before`` missing from ``after``, and rows of ``after`` not in ``before``
    (both sorted, as multisets)."""
    i = j = lost = added = 0
    while i < len(before) and j < len(after):
        if before[i] == after[j]:
            i, j = i + 1, j + 1
        elif before[i] < after[j]:
            lost, i = lost + 1, i + 1
        else:
            added, j = added + 1, j + 1
    return lost + len(before) - i, added + len(after) - j


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, array[int] | None]:
    """Every table's row hashes (materialized views are derived: left out)."""
    return {name: row_hashes(conn, name) for name, t in tables(conn).items() if t[1] != "m"}


def way_back_rows(
    before: dict[str, array[int] | None], after: dict[str, array[int] | None]
) -> list[TableRows]:
    """Each table that was there before the run, compared with itself after the way back."""
    found = []
    for name, rows in sorted(before.items()):
        now = after.get(name)
        if rows is None or (name in after and now is None):
            found.append(TableRows(name, None, None, 0, 0, compared=False))
            continue
        now = now if now is not None else array("q")
        lost, added = compare(rows, now)
        found.append(TableRows(name, len(rows), len(now) if name in after else None, lost, added))
    for name in sorted(after.keys() - before.keys()):  # made by the run, not undone
        left = after[name]
        count = len(left) if left is not None else None
        found.append(TableRows(name, None, count, 0, count or 0, compared=left is not None))
    return found


# --- measuring the steps -------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Reads the copy's table locks every ``POLL_S``: when each was first seen, and each
    hold that ended (the lock gone from one sample to the next)."""

    def __init__(self, settings: Settings, mine: list[int]) -> None:
        super().__init__(name="rehearsal-locks", daemon=True)
        self.conn = db.connect(settings)
        self.mine = [*mine, self.conn.info.backend_pid]
        self.guard = threading.Lock()
        self.open: dict[tuple[int, int, str], float] = {}
        self.ended: list[tuple[int, str, float, float]] = []  # oid, mode, first, last seen
        self.started = time.monotonic()  # when the last complete sample began
        self.stopping = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(psycopg.Error):
            while not self.stopping.is_set():
                began = time.monotonic()
                rows = self.conn.execute(_SAMPLE, {"mine": self.mine}).fetchall()
                seen = {(pid, oid, mode) for pid, oid, mode in rows}
                with self.guard:
                    for key in seen - self.open.keys():
                        self.open[key] = began
                    for key in self.open.keys() - seen:
                        self.ended.append((key[1], key[2], self.open.pop(key), began))
                    self.started = began
                self.stopping.wait(POLL_S)

    def first_seen(self, pid: int, oid: int, mode: str) -> float | None:
        with self.guard:
            return self.open.get((pid, oid, mode))

    def holds_since(self, since: float) -> list[tuple[int, str, float]]:
        """Holds that began at or after ``since`` (ended, or still open now): oid, mode, ms."""
        now = time.monotonic()
        with self.guard:
            done = [
                (o, m, (last - first) * 1000) for o, m, first, last in self.ended if first >= since
            ]
            going = [(o, m, (now - f) * 1000) for (_, o, m), f in self.open.items() if f >= since]
        return done + going

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=5)
        self.conn.close()


@dataclass
class Meter:
    """Figures of the step running now, from the commit hook, the sampler and the events."""

    copy: str
    sampler: Sampler
    descriptions: dict[int, str]
    sizes: dict[str, tuple[int, str, int, int]]  # at the start of the step running now
    atomic: bool = False  # --atomic: each step's event comes after the batch committed
    since: float = field(default_factory=time.monotonic)
    locks: dict[tuple[int, str], float] = field(default_factory=dict)  # (oid, mode) -> ms
    rows: dict[int, int] = field(default_factory=dict)  # oid -> rows
    filled: dict[str, int] = field(default_factory=dict)  # a backfill's table -> rows
    steps: list[StepFigures] = field(default_factory=list)
    forward: Progress | None = None
    after: dict[str, tuple[int, str, int, int]] | None = None  # at the latest commit
    pending: tuple[int, float] | None = None  # a step whose history is written, not committed
    counted: dict[int, int] = field(default_factory=dict)  # the counters as a transaction began

    def at_begin(self, raw: psycopg.Connection[Any]) -> None:
        """As a transaction begins: the row counters' start. They hold what earlier
        transactions of the session did until the session reports them (at most once a
        second, when idle), so a transaction's rows are the difference."""
        if raw.info.dbname == self.copy:
            self.counted = dict(raw.execute(_CHANGED).fetchall())

    def at_commit(self, raw: psycopg.Connection[Any]) -> None:
        """In a step's transaction, just before it commits: its locks, its rows and the
        tables' sizes (read there: another session would wait for the step's locks)."""
        if raw.info.dbname != self.copy:
            return
        now = time.monotonic()
        with self.sampler.guard:
            unseen_since = self.sampler.started
        for oid, mode, xact_s in raw.execute(_HELD).fetchall():
            first = self.sampler.first_seen(raw.info.backend_pid, oid, mode)
            # never seen: taken after the last sample began, and within this transaction
            held = (
                (now - first) * 1000
                if first is not None
                else min(float(xact_s) * 1000, (now - unseen_since) * 1000)
            )
            self.locks[(oid, mode)] = max(self.locks.get((oid, mode), 0.0), held)
        for oid, count in raw.execute(_CHANGED).fetchall():
            if count > self.counted.get(oid, 0):
                self.rows[oid] = self.rows.get(oid, 0) + int(count) - self.counted.get(oid, 0)
        self.counted = {}
        self.after = tables(raw)
        if self.pending is not None:
            self.close(*self.pending)

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.Backfill):
            self.filled[event.table] = max(self.filled.get(event.table, 0), event.rows_done)
        if isinstance(event, events.Applied) and self.atomic:  # after the batch committed
            description = self.descriptions.get(event.version, "")
            self.steps.append(
                StepFigures(event.version, description, seconds=event.duration_ms / 1000)
            )
        elif isinstance(event, events.Applied):  # sent in the step's transaction, before COMMIT
            self.pending = (event.version, event.duration_ms / 1000)
        if self.forward is not None:
            self.forward(event)

    def settle(self) -> None:
        """--atomic: the one transaction's figures go to the batch's last step."""
        if self.atomic and self.steps:
            last = self.steps.pop()
            self.close(last.version, last.seconds)
            self.steps[-1].covers = [s.version for s in self.steps]

    def close(self, version: int, seconds: float) -> None:
        """The step ``version`` committed: its figures, then the next step's start."""
        before = self.sizes
        after = self.after if self.after is not None else before
        names = {t[0]: name for name, t in before.items()}  # locks on tables the step found
        for oid, mode, held in self.sampler.holds_since(self.since):
            if oid in names and (oid, mode) not in self.locks:  # the commit's reading is exact
                self.locks[(oid, mode)] = max(self.locks.get((oid, mode), 0.0), held)
        named = {t[0]: name for name, t in after.items()} | names
        step = StepFigures(version, self.descriptions.get(version, ""), seconds=round(seconds, 3))
        step.covers = [version]
        step.locks = sorted(
            (
                Lock(names[oid], mode, round(ms, 1))
                for (oid, mode), ms in self.locks.items()
                if oid in names
            ),
            key=_weight,
        )
        rows = {named[oid]: n for oid, n in self.rows.items() if oid in named}
        for table, n in self.filled.items():
            key = next((name for name in named.values() if name.rpartition(".")[2] == table), table)
            rows[key] = max(rows.get(key, 0), n)
        step.rows_changed = dict(sorted(rows.items()))
        step.sizes = [
            Size(
                name,
                before[name][2] if name in before else None,
                after[name][2] if name in after else None,
                before[name][3] if name in before else None,
                after[name][3] if name in after else None,
            )
            for name in sorted(before.keys() | after.keys())
            if before.get(name, (0, "", -1, -1))[2:] != after.get(name, (0, "", -1, -1))[2:]
            or name in step.rows_changed
        ]
        self.steps.append(step)
        self.sizes, self.since = after, time.monotonic()
        self.locks, self.rows, self.filled = {}, {}, {}
        self.after, self.pending = None, None


def _weight(lock: Lock) -> tuple[bool, float, int, str]:
    """A step's locks in the order a reviewer needs them: those that block traffic first,
    then the longest held, then the strongest."""
    strength = MODES.index(lock.mode) if lock.mode in MODES else -1
    return (lock.mode not in BLOCKING, -lock.held_ms, -strength, lock.table)


@contextlib.contextmanager
def commit_hook(meter: Meter) -> Iterator[None]:
    """SQLAlchemy's begin and commit events, for the copy's connections only, while the block runs."""
    from sqlalchemy import event
    from sqlalchemy.engine import Connection, Engine

    def at_begin(conn: Connection) -> None:
        raw = conn.connection.driver_connection
        if isinstance(raw, psycopg.Connection):
            meter.at_begin(raw)

    def before_commit(conn: Connection) -> None:
        raw = conn.connection.driver_connection
        if isinstance(raw, psycopg.Connection):
            meter.at_commit(raw)

    event.listen(Engine, "begin", at_begin)
    event.listen(Engine, "commit", before_commit)
    try:
        yield
    finally:
        event.remove(Engine, "begin", at_begin)
        event.remove(Engine, "commit", before_commit)


# --- the rehearsal -----------------------------------------------------------------------------


def rehearse(
    service: Service,
    settings: Settings,
    target: int | None = None,
    options: runner.RunOptions = runner.RunOptions(),
    *,
    from_backup: Path | None = None,
    max_lock_ms: float = MAX_LOCK_MS,
    progress: Progress | None = None,
) -> Rehearsal:
    """Rehearse what ``up`` would run now on a copy of the database (see the module)."""
    started = time.monotonic()
    given = backup.verify(service, from_backup) if from_backup is not None else None
    with db.connect(settings, wait=options.wait) as conn:
        settings = db.pinned(settings, conn)
        look = runner.plan_on(conn, service, target, options)
        runner.refuse_unusable(service, look.found)
        refuse_unseen(service, look)  # as up: a contract step is never judged blind
        if given is not None and given.version != look.found.current:
            at = "no version" if look.found.current is None else f"version {look.found.current}"
            raise UsageError(
                f"{service.name}: {given.path.name} holds version {given.version or 'none'} and "
                f"the database is at {at}: a rehearsal runs what up would run on the database "
                "now, from a backup taken at its version",
                service=service.name,
            )
        if look.run:  # what other services must have first: refused before any copy
            project = Project.of(service)
            unmet = deps.unmet(service, look.run, project.peers(settings), project.services)
            if unmet:
                raise deps.refusal(unmet)
        result = Rehearsal(
            service.name,
            settings.label,
            "dump" if given is None else given.path.name,  # "empty" once it is known
            look.found.current,
            max_lock_ms=max_lock_ms,
            held=look.held,
            why_held=look.why_held,
        )
        for stale in left_behind(conn, settings.database):
            _drop(conn, stale)
        if look.idle:
            result.end = result.start
            result.seconds = round(time.monotonic() - started, 3)
            return result  # nothing pending: nothing to copy
        may_create(conn, service.name)
        # a held contract step is reported, not waited for: the copy runs what comes before it
        until = look.run[-1] if look.held else target
        roles = server_roles(conn)
        name = copy_name(settings.database)
        copy = settings.for_database(name)
        try:
            with _private_folder() as folder, ThreadPoolExecutor(2) as aside:
                # while pg_dump runs: the copy's database is made, and what the steps will
                # run on (SQLAlchemy, Alembic) is imported
                creating = aside.submit(_create, conn, service.name, name, settings.database)
                aside.submit(_import_runtime)
                # an empty database (no version yet) is copied as a new, empty one
                empty = given is None and look.found.current is None and not look.found.legacy
                dump = None if empty else given or backup.take(service, settings, folder)
                result.source = "empty" if empty else result.source
                creating.result()
                if dump is not None:
                    with db.connect(copy) as into, advisory_lock(into, service.name):
                        backup.restore_under_lock(service, copy, into, dump.path)
            result.copy_seconds = round(time.monotonic() - started, 3)
            keep_roles(conn, name, roles)
            _run_on_copy(service, copy, look, until, options, result, progress)
        except (KeyboardInterrupt, Interrupted) as exc:
            signum, signame = _signal_of(exc)
            _drop(conn, name, settings)
            raise Interrupted(
                f"{service.name}: rehearsal interrupted ({signame}); its copy {name} was "
                "dropped and the database was not changed",
                signum=signum,
                service=service.name,
            ) from None
        finally:
            _drop(conn, name, settings)
        _roles_after(conn, service.name, roles, result)
    result.judge()
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _run_on_copy(
    service: Service,
    copy: Settings,
    look: plan.Plan,
    target: int | None,
    options: runner.RunOptions,
    result: Rehearsal,
    progress: Progress | None,
) -> None:
    """``up`` on the copy as on the original now, measured; then ``down`` to the start."""
    on_copy = options._replace(
        wait=0.0,
        backup=False,
        on_failure="stop",
        hold_contract=options.hold_contract or bool(look.held),
        allow_production=True,  # a throwaway copy: its way back is the point
        # Every step through Alembic, whose transactions the meter hooks into; a plain-SQL
        # step sends the same statements either way (core/sqlsteps.py).
        plain_sql=False,
    )
    with db.connect(copy) as observer:
        start = plan.assess_for(service, read(observer, service.schema)).current
        result.start = start
        before = snapshot(observer)
        sampler = Sampler(copy, [observer.info.backend_pid])
        meter = Meter(
            copy.database,
            sampler,
            service.descriptions,
            tables(observer),
            atomic=options.atomic,
            forward=progress,
        )
        sampler.start()
        pending = [v for v in service.disk_versions() if (start is None or v > start)]
        try:
            with commit_hook(meter):
                try:
                    done = runner.up(service, copy, target, on_copy, meter)
                    meter.settle()
                    result.end = done.after
                except (StepError, RefusedError, LockTimeoutError) as exc:
                    failed = exc.version or (
                        pending[len(meter.steps)] if len(meter.steps) < len(pending) else None
                    )
                    result.end = meter.steps[-1].version if meter.steps else start
                    if failed is not None:
                        step = StepFigures(failed, service.descriptions.get(failed, ""), ok=False)
                        step.error = str(exc)
                        step.seconds = round(time.monotonic() - meter.since, 3)
                        meter.steps.append(step)
        finally:
            sampler.stop()
        result.steps = meter.steps
        applied = [s.version for s in meter.steps if s.ok]
        if not applied:
            return
        back = WayBack(ok=False, to=start)
        try:
            runner.down(service, copy, min(applied), on_copy, progress)
        except Interrupted:
            raise
        except MigrationError as exc:
            back.error = str(exc)
        back.tables = way_back_rows(before, snapshot(observer))
        result.way_back = back
