"""Old import path of :mod:`alembic_common.online.backfill`, kept so migrations written before the
move still import; new migrations import :mod:`alembic_common.migration`."""

from alembic_common.online.backfill import *  # noqa: F403
