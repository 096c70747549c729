"""Small DDL helpers that migrations of several services share."""

from __future__ import annotations

# A data migration that rewrites rows (not a user's edit) sets this for its transaction,
# so updated_at keeps meaning "last changed by the application".
PRESERVE_UPDATED_AT = "SET LOCAL migrate.preserve_updated_at = 'on'"

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
