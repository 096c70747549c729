"""Health of a service's schema: constraints left NOT VALID and indexes left INVALID.

A ``NOT VALID`` constraint is checked only for new rows, and an ``INVALID`` index (a
``CREATE INDEX CONCURRENTLY`` that failed) is maintained but never used: both are meant to
be short-lived, so ``status`` lists them and ``status --strict`` fails on them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg

from alembic_common.core.services import Service

_QUERY = """
    SELECT 'constraint', c.conname, n.nspname, t.relname, c.contype::text
    FROM pg_catalog.pg_constraint c
    JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
    WHERE NOT c.convalidated AND n.nspname <> ALL(%(system)s)
      AND n.nspname NOT LIKE 'pg\\_%%'
    UNION ALL
    SELECT 'index', i.relname, n.nspname, t.relname, ''
    FROM pg_catalog.pg_index x
    JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
    JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
    WHERE NOT x.indisvalid AND n.nspname <> ALL(%(system)s)
      AND n.nspname NOT LIKE 'pg\\_%%'
    ORDER BY 1, 3, 4, 2
"""
_KINDS = {"c": "check", "f": "foreign key", "n": "not null", "u": "unique", "p": "primary key"}


class Invalid(NamedTuple):
    """One NOT VALID constraint or INVALID index."""

    kind: str  # "constraint" or "index"
    name: str
    schema: str
    table: str
    detail: str  # the constraint's type
    since: int | None  # the first version whose file names it, when one does

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()

    def __str__(self) -> str:
        what = f"{self.detail} constraint" if self.kind == "constraint" else "index"
        since = f" (since version {self.since})" if self.since is not None else ""
        state = "NOT VALID" if self.kind == "constraint" else "INVALID"
        return f"{state} {what} {self.name} on {self.schema}.{self.table}{since}"


def _since(service: Service, name: str) -> int | None:
    """The first migration whose source names the object, if any."""
    for migration in service.migrations:
        try:
            if name in migration.path.read_text(encoding="utf-8"):
                return migration.version
        except OSError:
            continue
    return None


def problems(conn: psycopg.Connection[Any], service: Service) -> list[Invalid]:
    """Every NOT VALID constraint and INVALID index in the database's own schemas."""
    rows = conn.execute(_QUERY, {"system": ["information_schema"]}).fetchall()
    return [
        Invalid(kind, name, schema, table, _KINDS.get(contype, contype), _since(service, name))
        for kind, name, schema, table, contype in rows
    ]
