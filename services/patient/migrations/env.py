"""Alembic environment: the shared implementation in alembic_common does all the work."""

from alembic_common.env import run

run(__file__)
