"""The project's own rules for every service's history, on top of pytest-alembic's."""

from __future__ import annotations

import pytest
from conftest import CONTRACT, ROOT, SERVICES, peers, query, samples, settings, tables

from alembic_common.authoring import schema
from alembic_common.core import db as dbmod
from alembic_common.core import runner, services


def _service(name: str) -> services.Service:
    return services.get(name, ROOT)


def _snapshot(url: str) -> schema.Snapshot:
    with dbmod.connect(settings("x", url)) as conn:
        return schema.snapshot(conn)


def _rows(url: str) -> dict[str, list[tuple]]:
    return {
        t: query(url, f"SELECT * FROM {t} ORDER BY 1")
        for t in sorted(tables(url) - {"schema_migrations", "alembic_version"})
    }


@pytest.mark.parametrize("name", SERVICES)
def test_versions_are_contiguous_from_one(name: str) -> None:
    versions = [m.version for m in _service(name).migrations]
    assert versions == list(range(1, len(versions) + 1)), f"{name}: versions {versions}"
    assert _service(name).disk_versions() == versions, "file names and revision ids disagree"


@pytest.mark.parametrize("name", SERVICES)
def test_every_migration_has_a_docstring_description(name: str) -> None:
    for m in _service(name).migrations:
        assert m.description and not m.description.startswith("revision "), (
            f"{m.path.name} has no docstring"
        )
        assert len(m.description) <= 120, f"{m.path.name}: keep the first paragraph to one line"


@pytest.mark.parametrize("name", SERVICES)
def test_each_downgrade_restores_the_schema_exactly(name: str, db: str) -> None:
    service, conf = _service(name), settings(name, db)
    for m in service.migrations:
        before = _snapshot(db)
        runner.up(service, conf, target=m.version, options=CONTRACT, peers=peers)
        assert _snapshot(db) != before, f"version {m.version} changed nothing"
        runner.down(service, conf, m.version)
        after = _snapshot(db)
        drift = schema.compare(before, after)
        assert not drift, f"{name} v{m.version} down left: {[d.describe() for d in drift]}"
        runner.up(service, conf, target=m.version, options=CONTRACT, peers=peers)


@pytest.mark.parametrize(
    ("name", "version"),
    [(n, m.version) for n in SERVICES for m in services.get(n, ROOT).migrations],
)
def test_data_survives_a_round_trip_to_head_and_back(name: str, version: int, db: str) -> None:
    service, conf = _service(name), settings(name, db)
    runner.up(service, conf, target=version, options=CONTRACT, peers=peers)
    for since, statement in samples(name).round_trip:
        if since <= version:
            query(db, statement)
    before = _rows(db)
    assert any(before.values()), f"no sample rows for {name} at version {version}"
    runner.up(service, conf, options=CONTRACT, peers=peers)
    if version < service.head:
        runner.down(service, conf, version + 1)
    assert _rows(db) == before
