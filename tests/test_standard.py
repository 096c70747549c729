"""pytest-alembic's built-in tests, run for every service on a fresh real PostgreSQL database.

The fixtures are parametrised over the discovered services, so a new service folder is
covered without touching this file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import ROOT, SERVICES, settings
from pytest_alembic.plugin.fixtures import alembic_runner  # noqa: F401 - the fixture
from pytest_alembic.tests import (  # noqa: F401 - collected here as this module's tests
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine

from alembic_common.core import db as dbmod
from alembic_common.core import services


@pytest.fixture(params=SERVICES)
def alembic_config(request: pytest.FixtureRequest) -> object:
    return services.get(request.param, ROOT).config()


@pytest.fixture
def alembic_engine(db: str) -> Iterator[Engine]:
    engine = dbmod.engine(settings("test", db))
    yield engine
    engine.dispose()
