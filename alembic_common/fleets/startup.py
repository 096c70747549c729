"""The startup hook: the Python twin of the seed's ``RunMigrations(db)``."""

from __future__ import annotations

import os
from typing import Any

from alembic_common.core import runner, services, settings


def run_migrations(
    service: str, url: str | None = None, *, wait: float = 0, **options: Any
) -> runner.RunResult:
    """Bring ``service``'s database to head; call this when the service starts.

    ``url`` falls back to ``<SERVICE>_MIGRATION_URL``, ``<SERVICE>_DATABASE_URL``,
    ``DATABASE_URL`` and then the embedded server. ``wait`` is how many seconds to keep retrying while the database comes up.
    Other keyword arguments are ``RunOptions`` fields (lock_wait, lock_timeout, ...); the
    environment is ``APP_ENV``'s, as for ``migrate up`` (in production a backup is taken
    first; an unknown name raises ``ConfigError`` before anything connects).
    Raises ``MigrationError`` on failure, so the service can refuse to start.
    """
    if "environment" not in options:
        options["environment"] = settings.environment(os.environ.get("APP_ENV"), "APP_ENV")
    target = services.get(service)
    resolved = settings.resolve(service, url=url)
    return runner.up(target, resolved, options=runner.RunOptions(wait=wait, **options))
