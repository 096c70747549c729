"""Small DDL helpers that migrations of several services share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# A data migration that rewrites rows (not a user's edit) sets this for its transaction,
# so updated_at keeps meaning "last changed by the application".
PRESERVE_UPDATED_AT = "SET LOCAL migrate.preserve_updated_at = 'on'"

# A backfill's own writes carry this setting, so a sync trigger between old and new columns
# (an expand step's) can skip them: ``CREATE TRIGGER ... WHEN (NOT_BACKFILL)``.
SET_BACKFILL = "SET migrate.backfill = 'on'"
NOT_BACKFILL = "coalesce(current_setting('migrate.backfill', true), '') <> 'on'"

SET_UPDATED_AT = """
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('migrate.preserve_updated_at', true), '') <> 'on' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$"""


def create_updated_at_trigger(table: str) -> list[str]:
    """Statements that keep ``table.updated_at`` current on every UPDATE."""
    return [
        SET_UPDATED_AT,
        f"CREATE TRIGGER {table}_set_updated_at BEFORE UPDATE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION set_updated_at()",
    ]


def drop_updated_at_trigger(table: str, *, last: bool = True) -> list[str]:
    """Statements that undo ``create_updated_at_trigger``; ``last`` drops the function too."""
    statements = [f"DROP TRIGGER IF EXISTS {table}_set_updated_at ON {table}"]
    if last:
        statements.append("DROP FUNCTION IF EXISTS set_updated_at()")
    return statements


def literal_sql(statement: str) -> Any:
    """``statement`` for ``op.execute`` with every colon literal (a regex's ``(?:``, JSON,
    ``::`` casts), so neither SQLAlchemy nor an offline plan reads a bind parameter in it."""
    from sqlalchemy import text

    return text(statement.replace(":", "\\:"))


_DOLLAR = re.compile(r"(\$[A-Za-z_]*\$)")


def sql_statements(script: str) -> list[str]:
    """A SQL script's statements: ``--`` comment lines dropped, split at the semicolons that
    lie outside dollar-quoted bodies (``$fn$ ... $fn$``)."""
    text = "\n".join(ln for ln in script.splitlines() if not ln.lstrip().startswith("--"))
    statements, current, quote = [], "", None
    for part in _DOLLAR.split(text):
        if _DOLLAR.fullmatch(part):
            quote = None if quote == part else quote or part
            current += part
        elif quote is not None:
            current += part
        else:
            first, *rest = part.split(";")
            current += first
            for piece in rest:
                statements.append(current)
                current = piece
    statements.append(current)
    return [s.strip() for s in statements if s.strip()]


def run_sql_file(path: Path) -> None:
    """Run each statement of a SQL file with ``op.execute`` (so offline plans show each)."""
    from alembic import op

    for statement in sql_statements(path.read_text()):
        op.execute(literal_sql(statement))
