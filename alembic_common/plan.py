"""Review before deploying: the exact SQL of each version (Alembic's offline mode), the lock
each statement takes, the rows it may touch, and squawk's lint of it.

Nothing here changes a database: SQL comes from ``alembic upgrade --sql``; the only
queries are the version read and the row estimates.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alembic_common.errors import ConfigError, UsageError
from alembic_common.history import OWN_TABLES
from alembic_common.services import Service, revision_id

_RUNNING = re.compile(r"^-- Running (upgrade|downgrade) (\S*)\s*->\s*(\S*)")
_BOOKKEEPING = re.compile(r"\b(alembic_version|schema_migrations)\b")

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
class Plan:
    service: str
    direction: str
    start: int | None
    end: int | None
    prologue: list[Statement]
    versions: list[VersionPlan]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
    from alembic import command

    buffer = io.StringIO()
    cfg = service.config(output_buffer=buffer)
    source = revision_id(start) if start else "base"
    target = revision_id(end) if end else "base"
    with contextlib.redirect_stdout(io.StringIO()):
        if down:
            command.downgrade(cfg, f"{source}:{target}", sql=True)
        else:
            command.upgrade(cfg, f"{source}:{target}", sql=True)
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


def plan(
    service: Service,
    start: int | None,
    end: int | None,
    down: bool = False,
    estimates: dict[str, int | None] | None = None,
) -> Plan:
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
    return Plan(service.name, "down" if down else "up", start, end, head, versions)


def tables_named(p: Plan) -> set[str]:
    return {s.table for v in p.versions for s in v.statements if s.table} - set(OWN_TABLES)


# --- lint -------------------------------------------------------------------------------


@dataclass
class Finding:
    version: int
    rule: str
    message: str
    statement: str
    accepted: str | None = None  # the reason given in the migration file, if accepted


def squawk_binary() -> str:
    """The squawk executable installed with this Python (squawk-cli), or on PATH."""
    candidate = Path(sys.executable).parent / "squawk"
    found = str(candidate) if candidate.exists() else shutil.which("squawk")
    if not found:
        raise ConfigError("squawk is not installed: pip install squawk-cli (or '.[test]')")
    return found


def lint_header(lock_timeout_s: float, statement_timeout_s: float) -> list[str]:
    """The session settings the runner really applies before each migration."""
    return [
        f"SET lock_timeout = '{int(lock_timeout_s * 1000)}ms';",
        f"SET statement_timeout = '{int(statement_timeout_s * 1000)}ms';",
    ]


def lint(
    service: Service,
    versions: list[int],
    *,
    lock_timeout_s: float = 5.0,
    statement_timeout_s: float = 0.0,
) -> list[Finding]:
    """Run squawk over each version's upgrade SQL; mark findings the migration accepts."""
    accepted = accepted_findings(service)
    findings: list[Finding] = []
    binary = squawk_binary()
    for version in versions:
        up = plan(service, version - 1 or None, version).versions
        statements = up[0].migration_sql() if up else []
        if not statements:
            continue
        # Every transaction boundary is explicit (Alembic's BEGIN/COMMIT, and those around
        # autocommit blocks), so squawk sees which statements share a transaction.
        script = lint_header(lock_timeout_s, statement_timeout_s) + statements
        text, starts = _numbered(script)
        for raw in _run_squawk(binary, text):
            index = max(i for i, line in enumerate(starts) if line <= raw["line"])
            rule = raw.get("rule_name") or "unknown"
            reason = accepted.get(version, {}).get(rule)
            findings.append(Finding(version, rule, raw.get("message", ""), script[index], reason))
    return findings


def _numbered(statements: list[str]) -> tuple[str, list[int]]:
    """Join statements into one script and remember the 0-based line each starts on."""
    starts, lines = [], 0
    for s in statements:
        starts.append(lines)
        lines += s.count("\n") + 2
    return "\n\n".join(statements) + "\n", starts


def _run_squawk(binary: str, text: str) -> list[dict[str, Any]]:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(text)
    try:
        done = subprocess.run(
            [binary, "--reporter", "json", handle.name],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        Path(handle.name).unlink()
    try:
        return list(json.loads(done.stdout or "[]"))
    except json.JSONDecodeError:
        raise UsageError(f"squawk failed: {(done.stderr or done.stdout).strip()[:200]}") from None


def accepted_findings(service: Service) -> dict[int, dict[str, str]]:
    """``lint_accepted = {"rule": "reason"}`` declared in each migration file, by version."""
    return {m.version: m.lint_accepted for m in service.migrations}
