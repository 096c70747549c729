"""Steps that are plain SQL, run without Alembic or SQLAlchemy.

A migration whose ``upgrade()`` and ``downgrade()`` only send SQL (no backfill, no
transaction of its own, no ``-x`` argument, no reading of the database: see
``authoring/compile.py``) does to a database exactly what its offline SQL says: the
statements ``plan`` shows and its checksum pins. ``migrate SERVICE hash`` writes those
statements to ``migrations/plain.json`` beside ``checksums.txt``, each with the
fingerprint of the file it came from (CI checks both files are current).

A run sends them itself on the connection that holds the run lock: one transaction per
step, sent as one query, with the bookkeeping of Alembic's path (``env.py`` and
``history.py``) in the same order: the session's timeouts and ``search_path``, the version
schemas' views dropped, the step's statements, ``alembic_version`` moved, the
``schema_migrations`` row written (exactly one row each, checked on the server, else
nothing commits) and the views rebuilt. The lock's own
session runs the step, so the step cannot outlive the lock: no lock check is needed.

A step whose file changed since the last ``hash``, a step that needs Python, a step
part-way, ``--atomic`` and ``-x`` go through Alembic as before.
"""

from __future__ import annotations

import bisect
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg
from psycopg import pq, sql

from alembic_common.core import history
from alembic_common.core.services import Service, revision_id
from alembic_common.errors import ScriptError, StateError
from alembic_common.online import releases

if TYPE_CHECKING:
    from alembic_common.core.state import DbState

FILE = "plain.json"
FORMAT = 1


class Compiled(NamedTuple):
    """One version's own statements each way (None: that way needs Alembic)."""

    fingerprint: str  # sha256 of the migration file they were rendered from
    up: tuple[str, ...] | None
    down: tuple[str, ...] | None


def path(service: Service) -> Path:
    return service.path / "migrations" / FILE


# The file as last parsed, by path and what stat says of it: a fleet reads it for every
# target, and a run asks of it at every step.
_PARSED: dict[Path, tuple[tuple[int, int, int], dict[int, Compiled]]] = {}


def read(service: Service) -> dict[int, Compiled]:
    """Every version the file holds (empty when there is no file)."""
    where = path(service)
    try:
        found = where.stat()
    except FileNotFoundError:
        return {}
    seen = (found.st_mtime_ns, found.st_size, found.st_ino)
    known = _PARSED.get(where)
    if known is None or known[0] != seen:
        known = _PARSED[where] = (seen, _parse(where, where.read_text(encoding="utf-8")))
    return known[1]


def _parse(where: Path, text: str) -> dict[int, Compiled]:
    try:
        document = json.loads(text)
        return {
            int(version): Compiled(
                entry["file"],
                None if entry.get("up") is None else tuple(entry["up"]),
                None if entry.get("down") is None else tuple(entry["down"]),
            )
            for version, entry in document["steps"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ScriptError(
            f"{where.name} is not a file 'migrate hash' wrote ({type(exc).__name__}: {exc}); "
            "run 'migrate SERVICE hash' again"
        ) from None


def render(service: Service, compiled: dict[int, Compiled]) -> str:
    """The file's text: stable (sorted, indented) so that a change reads as a diff."""
    document = {
        "about": f"The SQL of {service.name}'s plain-SQL steps, written by 'migrate "
        f"{service.name} hash' (CI checks it is current); a run sends it instead of "
        "running the file through Alembic while the file is unchanged.",
        "format": FORMAT,
        "steps": {
            f"{v:04d}": {"file": c.fingerprint, "up": c.up, "down": c.down}
            for v, c in sorted(compiled.items())
        },
    }
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def write(service: Service, compiled: dict[int, Compiled]) -> Path:
    target = path(service)
    target.write_text(render(service, compiled), encoding="utf-8")
    return target


def statements(service: Service, version: int, down: bool) -> tuple[str, ...] | None:
    """What ``version`` sends, one way, as plain SQL; None when it must go through Alembic
    (it needs Python at run time, or its file is not the one the SQL was rendered from)."""
    found = read(service).get(version)
    if found is None or found.fingerprint != service.file_hashes.get(version):
        return None
    return found.down if down else found.up


def prepare(conn: psycopg.Connection[Any], service: Service, state: DbState) -> None:
    """What env.py's session set-up does before Alembic's first step: the schema, the
    history table (made, claimed, given its extra columns) and Alembic's version table."""
    with conn.transaction():
        if service.schema != "public":
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(service.schema))
            )
        history.ensure(
            conn,
            service.name,
            service.schema,
            exists=state.history_table,
            columns={c.name for c in state.shape.columns} if state.shape else set(),
            owner=state.owner,
        )
        if not state.alembic_table:
            history.create_version_table(conn, service.schema)


def session_sql(service: Service, lock_timeout_ms: int, statement_timeout_ms: int) -> str:
    """The settings env.py gives a migration session, for one step's transaction."""
    from alembic_common.core import env

    given = {"lock_timeout_ms": lock_timeout_ms, "statement_timeout_ms": statement_timeout_ms}
    return ";\n".join(
        s.replace("SET ", "SET LOCAL ", 1) for s in env.session_settings(service, given)
    )


# The bookkeeping's own SQLSTATE (class MG: this toolkit's): alembic_version and
# schema_migrations did not each change exactly one row, so nothing of the step commits.
UNMOVED = "MG001"


def run_step(
    conn: psycopg.Connection[Any],
    service: Service,
    version: int,
    body: tuple[str, ...],
    *,
    down: bool,
    session: str,
    description: str,
    checksum: str | None,
) -> int:
    """Run one step in a transaction of its own on ``conn`` (autocommit, holding the run
    lock) under ``session`` (``session_sql``); return its duration in ms, as its history
    row records it."""
    versions = service.disk_versions()
    at = bisect.bisect_left(versions, version)
    below = versions[at - 1] if at > 0 else None
    revision, previous = revision_id(version), revision_id(below) if below else None
    old, new = (revision, previous) if down else (previous, revision)
    table = history.qualified(service.schema, history.ALEMBIC_TABLE).as_string(conn)
    kind = "insert" if old is None else "delete" if new is None else "update"
    write = history.step_write(
        conn,
        history.qualified(service.schema, history.TABLE).as_string(conn),
        version,
        up=not down,
        description=description,
        duration_ms="step_ms",
        checksum=checksum,
    )
    clear = releases.clear_sql(service)
    rebuild = releases.sync_sql(service, below if down else version, history.OWN_TABLES)
    # One round trip: the transaction opened, the session set, the views dropped, the
    # step's statements, then the bookkeeping, checked on the server (an error there stops
    # the text before its COMMIT, so nothing of the step is kept), the views rebuilt, the
    # step's duration (the server's clock since the transaction began) read back, COMMIT.
    checked = _checked(history.version_sql(kind, table, old, new), write)
    text = [
        "BEGIN",
        session,
        *([clear] if clear else []),
        *body,
        checked,
        *([rebuild] if rebuild else []),
        "SELECT current_setting('migrate.step_ms')::int",
        "COMMIT",
    ]
    try:
        # Statements end on a line of their own: one may end in a comment.
        cursor = conn.execute("\n;\n".join(s.rstrip().removesuffix(";") for s in text))
        found = cursor.set_result(-2).fetchone()
    except BaseException as exc:
        if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        if isinstance(exc, psycopg.Error) and exc.sqlstate == UNMOVED:
            raise StateError(
                f"{service.name}: alembic_version and schema_migrations did not move together "
                f"at version {version} ({exc.diag.message_detail}, expected 1 each); nothing "
                "of it was kept; run 'status' to see both",
                service=service.name,
                version=version,
            ) from None
        raise
    assert found is not None, "the step's duration is its text's last result"
    return int(found[0])


def _checked(moved: str, recorded: str) -> str:
    """Both bookkeeping writes in a DO block that raises ``UNMOVED`` unless each changed
    exactly one row, and keeps the step's duration for the transaction's rest."""
    block = (
        "DECLARE step_ms int := round(extract(epoch FROM clock_timestamp() - now()) * 1000);\n"
        "  moved bigint; recorded bigint;\n"
        f"BEGIN\n  {moved};\n  GET DIAGNOSTICS moved = ROW_COUNT;\n"
        f"  {recorded};\n  GET DIAGNOSTICS recorded = ROW_COUNT;\n"
        "  IF moved <> 1 OR recorded <> 1 THEN\n"
        "    RAISE EXCEPTION 'alembic_version and schema_migrations did not move together'\n"
        "      USING ERRCODE = '" + UNMOVED + "', DETAIL = format("
        "'changed %s and %s rows', moved, recorded);\n"
        "  END IF;\n"
        "  PERFORM set_config('migrate.step_ms', step_ms::text, true);\n"
        "END"
    )
    tag = "$step$"
    while tag in block:  # a description may hold anything, dollar quotes included
        tag = tag[:-1] + "_$"
    return f"DO {tag}\n{block}\n{tag}"
