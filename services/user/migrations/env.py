"""Alembic environment: the shared implementation in alembic_common does all the work."""

from alembic_common.core.env import run

run(__file__)
