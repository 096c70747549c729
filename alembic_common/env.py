"""Old import path of :mod:`alembic_common.core.env`, kept so a service's ``env.py``
written before the move still imports (``from alembic_common.env import run``)."""

from alembic_common.core.env import *  # noqa: F403
