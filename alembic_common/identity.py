"""Old import path of :mod:`alembic_common.tenancy.identity`, kept so migrations written before the
move still import; new migrations import :mod:`alembic_common.migration`."""

from alembic_common.tenancy.identity import *  # noqa: F403
