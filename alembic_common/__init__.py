"""Shared migration library for the healthcare platform's services."""

from typing import Any

from alembic_common.errors import MigrationError

__all__ = ["MigrationError", "run_migrations"]


def __getattr__(name: str) -> Any:
    # Imported on first use: each service's env.py imports this package too, and plain
    # `alembic upgrade` should not pay for the runner it never calls.
    if name == "run_migrations":
        from alembic_common.fleets.startup import run_migrations

        return run_migrations
    raise AttributeError(f"module 'alembic_common' has no attribute {name!r}")
