"""Shared migration library for the healthcare platform's services."""

from alembic_common.errors import MigrationError
from alembic_common.startup import run_migrations

__all__ = ["MigrationError", "run_migrations"]
