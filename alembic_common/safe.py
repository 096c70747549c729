"""Old import path of :mod:`alembic_common.online.safe`, kept so migrations written before the
move still import; new migrations import :mod:`alembic_common.migration`."""

from alembic_common.online.safe import *  # noqa: F403
