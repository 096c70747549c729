"""The ``migrate`` command line: the only code that prints or exits.

``app`` is the frame (errors, scrubbing, signals); the commands live by concern in
``migrate`` (up, down, status), ``platform`` (all), ``authoring`` (revision, check, diff,
plan, lint) and ``ops`` (seed), and register themselves on import.
"""

from alembic_common.cli import (  # noqa: F401 - registers commands
    authoring,
    backup,
    migrate,
    ops,
    platform,
)
from alembic_common.cli.app import app, main, run

__all__ = ["app", "main", "run"]
