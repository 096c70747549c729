"""Squawk over each version's SQL, exactly as ``up`` runs it, the toolkit's own rules, and
the reasons a migration gives for accepting a finding (``lint_accepted``).

The toolkit's own rules, next to squawk's:

* ``tenant-table-without-rls``: a migration that creates a table with
  ``healthcare_entity_id`` (or adds that column to a table) must, in the same migration,
  ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` on it and ``CREATE POLICY`` on it
  (``tenancy.isolate`` does all three). Tenant rows without a policy are visible to every
  tenant's sessions.
* ``downgrade-drops-data``: a ``downgrade()`` that drops a column or a table
  (``op.drop_column``, ``op.drop_table``, or ``DROP COLUMN``/``DROP TABLE`` in SQL it runs)
  must guard it first: ``safe.refuse_to_drop(table, column)`` for that very drop, or a
  ``safe.refuse_if`` of its own. An unguarded downgrade erases what the column holds.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic_common.authoring.offline import sql_plan
from alembic_common.core.services import Service
from alembic_common.errors import ConfigError, UsageError


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
        up = sql_plan(service, version - 1 or None, version).versions
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
        for rule, message, statement in tenant_findings(statements):
            reason = accepted.get(version, {}).get(rule)
            findings.append(Finding(version, rule, message, statement, reason))
    paths = {m.version: m.path for m in service.migrations}
    for version in versions:
        for rule, message, statement in downgrade_findings(paths[version]):
            reason = accepted.get(version, {}).get(rule)
            findings.append(Finding(version, rule, message, statement, reason))
    return findings


DOWNGRADE_RULE = "downgrade-drops-data"
_DROP_IN_SQL = re.compile(r"\bDROP\s+(?:COLUMN|TABLE)\b", re.IGNORECASE)


def _called(node: ast.AST) -> str | None:
    """The name a call calls (``op.drop_column(...)`` -> ``drop_column``)."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _literals(call: ast.Call) -> tuple[object, ...]:
    return tuple(a.value if isinstance(a, ast.Constant) else None for a in call.args)


def downgrade_findings(path: Path) -> list[tuple[str, str, str]]:
    """(rule, message, statement) for each drop of a column or table in ``path``'s
    ``downgrade()`` that no guard precedes (see the module's docstring)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    down = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "downgrade"), None
    )
    if down is None:
        return []
    calls = [n for n in ast.walk(down) if isinstance(n, ast.Call)]
    guarded = {_literals(c)[:2] for c in calls if _called(c) == "refuse_to_drop"}
    if any(_called(c) == "refuse_if" for c in calls):
        return []  # a guard of its own: what it checks is the migration's to say
    found = []
    for call in calls:
        what = _unguarded_drop(call, guarded)
        if what is not None:
            message = (
                f"the downgrade drops {what} without a guard: it would erase what it holds "
                "(call safe.refuse_to_drop before it, as revision --autogenerate writes)"
            )
            found.append((DOWNGRADE_RULE, message, ast.unparse(call)))
    return found


def _unguarded_drop(call: ast.Call, guarded: set[tuple[object, ...]]) -> str | None:
    """What ``call`` drops when no ``refuse_to_drop`` of the same names guards it."""
    name, args = _called(call), _literals(call)
    if name == "drop_column" and args[:2] not in guarded:
        return f"{args[0]}.{args[1]}" if None not in args[:2] else "a column"
    if name == "drop_table" and args[:1] not in guarded:
        return str(args[0]) if args[:1] != (None,) else "a table"
    sql = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if name == "execute" and any(_DROP_IN_SQL.search(text) for text in sql):
        return "what its SQL drops"
    return None


TENANT_RULE = "tenant-table-without-rls"
_NAME = r'(?:"?[A-Za-z_][\w$]*"?\.)?"?([A-Za-z_][\w$]*)"?'
_TENANT_TABLE = [
    re.compile(
        r"\bCREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
        rf"{_NAME}\s*\((?=.*\bhealthcare_entity_id\b)",
        re.IGNORECASE | re.DOTALL,
    ),
    re.compile(
        rf"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_NAME}\s.*?"
        r'\bADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"?healthcare_entity_id\b',
        re.IGNORECASE | re.DOTALL,
    ),
]
_ALTER = rf"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_NAME}\s+"
_ISOLATION = {
    "ENABLE ROW LEVEL SECURITY": re.compile(
        _ALTER + r"ENABLE\s+ROW\s+LEVEL\s+SECURITY", re.IGNORECASE
    ),
    "FORCE ROW LEVEL SECURITY": re.compile(
        _ALTER + r"FORCE\s+ROW\s+LEVEL\s+SECURITY", re.IGNORECASE
    ),
    "CREATE POLICY": re.compile(rf"\bCREATE\s+POLICY\s+\S+\s+ON\s+{_NAME}", re.IGNORECASE),
}


def tenant_findings(statements: list[str]) -> list[tuple[str, str, str]]:
    """(rule, message, statement) for each table with ``healthcare_entity_id`` that these
    statements (one migration) add without enabling and forcing RLS and a policy on it."""
    done: dict[str, set[str]] = {what: set() for what in _ISOLATION}
    for statement in statements:
        for what, pattern in _ISOLATION.items():
            done[what].update(m.group(1).lower() for m in pattern.finditer(statement))
    found = []
    for statement in statements:
        for pattern in _TENANT_TABLE:
            match = pattern.search(statement)
            if not match:
                continue
            table = match.group(1).lower()
            missing = [what for what in _ISOLATION if table not in done[what]]
            if missing:
                message = (
                    f"{table} holds healthcare_entity_id but this migration does not "
                    f"{', '.join(missing)} on it: every tenant would see its rows "
                    "(use tenancy.isolate)"
                )
                found.append((TENANT_RULE, message, statement))
            break
    return found


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
