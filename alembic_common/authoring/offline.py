"""What a run would send, statement by statement: each version's SQL from Alembic's
offline mode, the lock each statement takes and what that means for traffic.

Nothing here touches a database: the SQL comes from ``alembic upgrade --sql``. The same
per-version SQL, whitespace normalised, is what a checksum of a migration is taken over.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from alembic_common.core.history import OWN_TABLES
from alembic_common.core.services import Service, revision_id
from alembic_common.errors import ScriptError
from alembic_common.online import partial, releases
from alembic_common.online.releases import Seen

_RUNNING = re.compile(r"^-- Running (upgrade|downgrade) (\S*)\s*->\s*(\S*)")
_BOOKKEEPING = re.compile(r"\b(alembic_version|schema_migrations)\b")
_OWN = re.compile(rf"{_BOOKKEEPING.pattern}|\b{partial.TABLE}\b|{re.escape(releases.MARKER)}")

# (pattern, lock mode, what it means for traffic). First match wins; group 1 is the table.
_LOCKS: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(p, re.IGNORECASE | re.DOTALL), mode, effect)
    for p, mode, effect in [
        (
            r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b.*?\bON\s+(?:ONLY\s+)?(\S+)",
            "SHARE UPDATE EXCLUSIVE",
            "reads and writes go on",
        ),
        (
            r"^CREATE\s+(?:UNIQUE\s+)?INDEX\b.*?\bON\s+(?:ONLY\s+)?(\S+)",
            "SHARE",
            "blocks writes while the index builds",
        ),
        (
            r"^DROP\s+INDEX\s+CONCURRENTLY\s+(?:IF\s+EXISTS\s+)?(\S+)",
            "SHARE UPDATE EXCLUSIVE",
            "reads and writes go on",
        ),
        (
            r"^DROP\s+INDEX\s+(?:IF\s+EXISTS\s+)?(\S+)",
            "ACCESS EXCLUSIVE",
            "blocks reads and writes",
        ),
        (
            r"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(\S+)\s+VALIDATE\s+CONSTRAINT",
            "SHARE UPDATE EXCLUSIVE",
            "reads and writes go on while it scans",
        ),
        (
            r"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(\S+)\s+ADD\s+CONSTRAINT\s+\S+\s+FOREIGN\s+KEY",
            "SHARE ROW EXCLUSIVE",
            "blocks writes",
        ),
        (
            r"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(\S+)",
            "ACCESS EXCLUSIVE",
            "blocks reads and writes",
        ),
        (r"^CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\S+)", "ACCESS EXCLUSIVE", "new table"),
        (
            r"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(\S+)",
            "ACCESS EXCLUSIVE",
            "blocks reads and writes",
        ),
        (
            r"^CREATE\s+(?:OR\s+REPLACE\s+)?TRIGGER\s+\S+\s+.*?\bON\s+(\S+)",
            "SHARE ROW EXCLUSIVE",
            "blocks writes",
        ),
        (
            r"^DROP\s+TRIGGER\s+(?:IF\s+EXISTS\s+)?\S+\s+ON\s+(\S+)",
            "ACCESS EXCLUSIVE",
            "blocks reads and writes",
        ),
        (
            r"^WITH\s.*?\bUPDATE\s+(?:ONLY\s+)?(\S+)",
            "ROW EXCLUSIVE",
            "one batch: locks the rows it changes until that batch commits",
        ),
        (
            r"^UPDATE\s+(?:ONLY\s+)?(\S+)",
            "ROW EXCLUSIVE",
            "locks every row it changes until commit",
        ),
        (
            r"^DELETE\s+FROM\s+(?:ONLY\s+)?(\S+)",
            "ROW EXCLUSIVE",
            "locks every row it deletes until commit",
        ),
        (r"^INSERT\s+INTO\s+(\S+)", "ROW EXCLUSIVE", "-"),
        (r"^LOCK\s+TABLE\s+(\S+)\s+IN\s+([A-Z ]+?)\s+MODE", "", ""),
    ]
]


@dataclass
class Statement:
    """One statement of a plan, with the lock it takes."""

    sql: str
    lock: str = "-"
    effect: str = "-"
    table: str | None = None
    rows: int | None = None

    @property
    def bookkeeping(self) -> bool:
        """The run's own statements (transaction boundaries, the version tables, the record
        of a step part-way, the version schemas' views), not the migration's."""
        return self.sql in ("BEGIN;", "COMMIT;") or bool(_OWN.search(self.sql))


def classify(sql: str) -> tuple[str, str, str | None]:
    """The lock mode a statement takes, its effect on traffic, and the table it names."""
    text = sql.strip()
    for pattern, mode, effect in _LOCKS:
        match = pattern.match(text)
        if match:
            table = match.group(1).strip('";(')
            if not mode:  # LOCK TABLE names its own mode
                mode, effect = match.group(2).upper(), "as requested"
            return mode, effect, table
    return "-", "-", None


@dataclass
class VersionPlan:
    version: int
    description: str
    direction: str
    statements: list[Statement] = field(default_factory=list)

    def migration_sql(self) -> list[str]:
        """The migration's own statements with their transaction boundaries, no bookkeeping."""
        return [s.sql for s in self.statements if not _BOOKKEEPING.search(s.sql)]


@dataclass
class SqlPlan:
    service: str
    direction: str
    start: int | None
    end: int | None
    prologue: list[Statement]
    versions: list[VersionPlan]
    held: list[int] = field(default_factory=list)  # wanted, but behind a held contract step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def held_note(self) -> str | None:
        """Why the plan stops before what was asked, when a contract step holds it."""
        if not self.held:
            return None
        shown = ", ".join(map(str, self.held[:6])) + (", ..." if len(self.held) > 6 else "")
        return (
            f"held: version(s) {shown} wait for contract step {self.held[0]}, which up runs "
            "once no session announces an older release (--contract includes them)"
        )

    def sql(self) -> str:
        """The whole plan as one SQL script, each statement annotated with its lock."""
        lines = [f"-- {self.service}: {self.direction} from {self.start} to {self.end}"]
        lines += [s.sql for s in self.prologue]
        for v in self.versions:
            lines.append(f"\n-- version {v.version}: {v.description}")
            for s in v.statements:
                if s.lock != "-":
                    rows = f", ~{s.rows} rows" if s.rows is not None else ""
                    lines.append(f"-- lock: {s.lock} on {s.table} ({s.effect}{rows})")
                lines.append(s.sql)
        return "\n".join(lines) + "\n"


def offline_sql(service: Service, start: int | None, end: int | None, down: bool = False) -> str:
    """Alembic's offline SQL for moving ``service`` from ``start`` to ``end`` (None = base)."""
    buffer = io.StringIO()
    cfg = service.config(output_buffer=buffer, compare_models=False)
    source = revision_id(start) if start else "base"
    target = revision_id(end) if end else "base"
    revisions = service.walk(() if start is None else (source,), target, down=down)
    if revisions is None:
        raise ScriptError(f"{service.name}: no way from {source} to {target} in its history")
    with contextlib.redirect_stdout(io.StringIO()):
        service.run_alembic(cfg, revisions, down=down, start=source)
    return buffer.getvalue()


def split(script: str, down: bool) -> tuple[list[str], dict[int, list[str]]]:
    """Split offline SQL into a prologue and each version's statements, BEGIN to COMMIT."""
    prologue: list[str] = []
    per_version: dict[int, list[str]] = {}
    current = prologue
    for chunk in script.split(";\n\n"):
        lines = chunk.strip().splitlines()
        while lines and (lines[0].startswith("-- ") or not lines[0].strip()):
            match = _RUNNING.match(lines.pop(0))
            if match:
                version = int(match.group(2) if down else match.group(3))
                # Alembic opens a version's transaction before printing its marker.
                opened = (
                    len(current) - current[::-1].index("BEGIN;") - 1
                    if "BEGIN;" in current
                    else None
                )
                moved = (
                    current[opened:]
                    if opened is not None and "COMMIT;" not in current[opened:]
                    else []
                )
                del current[len(current) - len(moved) :]
                current = per_version.setdefault(version, moved)
        statement = "\n".join(lines).strip()
        if statement:
            current.append(statement + ";")
    return prologue, per_version


def sql_plan(
    service: Service,
    start: int | None,
    end: int | None,
    down: bool = False,
    estimates: dict[str, int | None] | None = None,
) -> SqlPlan:
    """The SQL, per version, of moving from ``start`` to ``end``, with locks and row estimates."""
    descriptions = {m.version: m.description for m in service.migrations}
    prologue, per_version = split(offline_sql(service, start, end, down), down)
    versions = []
    for version, statements in per_version.items():
        vp = VersionPlan(version, descriptions.get(version, ""), "down" if down else "up")
        for sql in statements:
            lock, effect, table = classify(sql)
            rows = (estimates or {}).get(table) if table else None
            vp.statements.append(Statement(sql, lock, effect, table, rows))
        versions.append(vp)
    head = [Statement(sql, *classify(sql)) for sql in prologue]
    return SqlPlan(service.name, "down" if down else "up", start, end, head, versions)


def tables_named(p: SqlPlan) -> set[str]:
    return {s.table for v in p.versions for s in v.statements if s.table} - set(OWN_TABLES)


def review(
    service: Service,
    current: int | None,
    version: int | None = None,
    *,
    down: bool = False,
    contract: bool = False,
    sessions: Seen | None = None,
) -> SqlPlan:
    """The SQL ``up`` (to ``version``) or ``down --version`` would run from ``current``.

    An ``up`` stops where the run plan does: before a contract step that the ``sessions``
    on the database hold back (all of them when unknown), unless ``contract``.
    """
    from alembic_common.core.plan import split_held

    disk = service.disk_versions()
    start: int | None
    end: int | None
    held: list[int] = []
    if down:
        assert version is not None
        below = [v for v in disk if v < version]
        start, end = current if current is not None else max(disk), (below[-1] if below else None)
    else:
        start, end = current, (version if version is not None else max(disk))
        wanted = [v for v in disk if (start or 0) < v <= end]
        runnable, _, _ = split_held(
            wanted,
            service.contract_versions(wanted),
            contract,
            sessions=None if sessions is None else lambda: sessions,
        )
        held = wanted[len(runnable) :]
        end = runnable[-1] if runnable else start
    direction = "down" if down else "up"
    if (start or 0) == (end or 0) or (not down and (start or 0) > (end or 0)):
        return SqlPlan(service.name, direction, start, end, [], [], held)
    found = sql_plan(service, start, end, down=down)
    found.held = held
    return found
