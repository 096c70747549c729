"""Legacy and broken version tables: refused in one clear line, all or nothing, never guessed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import alembic_head, history, query, run_cli

LEGACY_SQL = (Path(__file__).parent / "legacy" / "patient_v2_from_go.sql").read_text()


def _shape(db: str) -> list[tuple[str, str, bool]]:
    return query(
        db,
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = 'public.schema_migrations'::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
    )


def _comment(db: str) -> str | None:
    return query(db, "SELECT obj_description('public.schema_migrations'::regclass)")[0][0]


UNADOPTABLE = {
    "no description column": (
        "ALTER TABLE schema_migrations DROP COLUMN description",
        "has no description column",
    ),
    "no applied_at column": (
        "ALTER TABLE schema_migrations DROP COLUMN applied_at",
        "has no applied_at column",
    ),
    "no primary key": (
        "ALTER TABLE schema_migrations DROP CONSTRAINT schema_migrations_pkey",
        "no primary key on version",
    ),
    "primary key on two columns": (
        "ALTER TABLE schema_migrations DROP CONSTRAINT schema_migrations_pkey;"
        " ALTER TABLE schema_migrations ADD PRIMARY KEY (version, description)",
        "no primary key on version",
    ),
    "unique version, no primary key": (
        "ALTER TABLE schema_migrations DROP CONSTRAINT schema_migrations_pkey;"
        " CREATE UNIQUE INDEX ON schema_migrations (version)",
        "no primary key on version",
    ),
    "text versions": (
        "ALTER TABLE schema_migrations ALTER COLUMN version TYPE text",
        "schema_migrations.version is text, not integer",
    ),
    "bigint versions": (
        "ALTER TABLE schema_migrations ALTER COLUMN version TYPE bigint",
        "schema_migrations.version is bigint, not integer",
    ),
    "extra NOT NULL column": (
        "ALTER TABLE schema_migrations ADD COLUMN go_checksum text NOT NULL DEFAULT 'x';"
        " ALTER TABLE schema_migrations ALTER COLUMN go_checksum DROP DEFAULT",
        "NOT NULL column(s) without a default that this toolkit cannot fill: go_checksum",
    ),
}


@pytest.mark.parametrize("case", sorted(UNADOPTABLE))
def test_a_legacy_table_that_cannot_be_adopted_is_refused_and_left_alone(
    case: str, db: str
) -> None:
    alteration, message = UNADOPTABLE[case]
    query(db, LEGACY_SQL)
    query(db, alteration)
    shape, rows = _shape(db), query(db, "SELECT * FROM schema_migrations ORDER BY 1")
    for command in (["up"], ["up", "--contract"], ["status"]):
        result = run_cli("patient", *command, "--url", db)
        assert result.exit_code == 1, result.output
        if command[0] == "up":
            (line,) = result.stderr.strip().splitlines()
            assert message in line and "error: unexpected" not in line, line
        else:
            assert message in result.stdout, result.stdout
    assert _shape(db) == shape, "no column may be added half way"
    assert query(db, "SELECT * FROM schema_migrations ORDER BY 1") == rows
    assert alembic_head(db) == [] and _comment(db) is None


def test_status_exits_1_on_a_legacy_history_with_a_gap(db: str) -> None:
    query(db, LEGACY_SQL)
    query(db, "DELETE FROM schema_migrations WHERE version = 1")
    result = run_cli("patient", "status", "--json", "--url", db)
    assert result.exit_code == 1
    assert "skips version(s) [1]" in json.loads(result.stdout)["problem"]


ADOPTABLE = {
    "as the Go tool made it": "",
    "a primary key that includes another column": (
        "ALTER TABLE schema_migrations DROP CONSTRAINT schema_migrations_pkey;"
        " ALTER TABLE schema_migrations ADD PRIMARY KEY (version) INCLUDE (description)"
    ),
}


@pytest.mark.parametrize("case", sorted(ADOPTABLE))
def test_an_adoptable_legacy_table_gains_the_extra_columns_and_an_owner(case: str, db: str) -> None:
    query(db, LEGACY_SQL)
    if ADOPTABLE[case]:
        query(db, ADOPTABLE[case])
    assert run_cli("patient", "up", "--version", "2", "--url", db).exit_code == 0
    names = [name for name, _, _ in _shape(db)]
    assert names[:3] == ["version", "description", "applied_at"]
    assert {"duration_ms", "applied_by"} <= set(names)
    assert _comment(db) == "migrate: history of the patient service"
    assert alembic_head(db) == ["0002"]


BROKEN_HEADS = {
    "unpadded": ["2"],
    "superscript digit": ["\u00b2"],
    "over-padded": ["00002"],
    "garbage": ["not-a-revision"],
    "two rows": ["0001", "0002"],
    "arabic-indic digits": ["\u0660\u0660\u0660\u0662"],
}


@pytest.mark.parametrize("case", sorted(BROKEN_HEADS))
def test_an_alembic_version_naming_no_known_revision_is_refused(case: str, db: str) -> None:
    assert run_cli("patient", "up", "--version", "2", "--url", db).exit_code == 0
    query(db, "ALTER TABLE alembic_version DROP CONSTRAINT alembic_version_pkc")
    query(db, "DELETE FROM alembic_version")
    for value in BROKEN_HEADS[case]:
        query(db, "INSERT INTO alembic_version VALUES (%s)", [value])
    status = run_cli("patient", "status", "--json", "--url", db)
    assert status.exit_code == 1, status.output
    assert "alembic_version" in json.loads(status.stdout)["problem"]
    text = run_cli("patient", "status", "--url", db)
    assert text.exit_code == 1 and "alembic_version" in text.stdout
    for command in (["up"], ["down", "--version", "2"]):
        result = run_cli("patient", *command, "--url", db)
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.strip().splitlines()
        assert "alembic_version" in line and "error: unexpected" not in line, line
    assert history(db) == [1, 2]
    assert sorted(alembic_head(db)) == sorted(BROKEN_HEADS[case])


def test_an_empty_alembic_version_beside_a_history_is_refused(db: str) -> None:
    assert run_cli("patient", "up", "--version", "2", "--url", db).exit_code == 0
    query(db, "DELETE FROM alembic_version")
    result = run_cli("patient", "up", "--url", db)
    assert result.exit_code == 1 and "alembic_version is empty" in result.stderr
    assert history(db) == [1, 2]
