"""The database it was given, or a refusal: qualified version tables, one service per
database, peers that are never guessed, and no silent fallback to the embedded server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    SERVICES,
    applied_by_default,
    create_database,
    drop_database,
    history,
    peer_env_for,
    query,
    run_cli,
    says,
    tables,
    versions,
)

from alembic_common.core.settings import Settings


def _dbname(url: str) -> str:
    return Settings("x", url, "t").database


HOSTILE = """
CREATE SCHEMA evil;
CREATE TABLE evil.alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO evil.alembic_version VALUES ('{head}');
CREATE TABLE evil.schema_migrations (
    version int PRIMARY KEY, description text NOT NULL, applied_at timestamp DEFAULT now());
INSERT INTO evil.schema_migrations (version, description)
    SELECT g, 'planted' FROM generate_series(1, {top}) g;
"""


@pytest.mark.parametrize("name", SERVICES)
@pytest.mark.parametrize("path", ["evil, public", "evil, pg_catalog, public"])
def test_a_hostile_search_path_cannot_make_a_database_look_migrated(
    name: str, path: str, db: str
) -> None:
    top = max(applied_by_default(name))
    query(db, HOSTILE.format(head=f"{top:04d}", top=top))
    # A function that would answer "yes, that table exists" to an unqualified lookup.
    query(
        db,
        "CREATE FUNCTION evil.to_regclass(text) RETURNS regclass LANGUAGE sql"
        " AS $$ SELECT 'pg_catalog.pg_class'::regclass $$",
    )
    query(db, f'ALTER DATABASE "{_dbname(db)}" SET search_path = {path}')
    env = peer_env_for(name)
    status = run_cli(name, "status", "--json", "--url", db, env=env)
    report = json.loads(status.stdout)
    assert report["current"] is None and report["pending"], status.output
    up = run_cli(name, "up", "--url", db, env=env)
    assert up.exit_code == 0, up.output
    assert "nothing to do" not in up.stdout
    assert history(db) == applied_by_default(name)
    assert query(db, "SELECT count(*) FROM evil.schema_migrations") == [(top,)]
    evil_tables = query(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'evil'")
    assert sorted(t for (t,) in evil_tables) == ["alembic_version", "schema_migrations"]


def test_a_database_belongs_to_the_service_that_first_migrated_it(db: str) -> None:
    assert run_cli("user", "up", "--url", db).exit_code == 0
    before = tables(db)
    refused = run_cli("patient", "up", "--url", db)
    assert refused.exit_code == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "belongs to the user service, not patient" in line
    assert tables(db) == before and history(db) == versions("user")
    status = run_cli("patient", "status", "--url", db)
    assert status.exit_code == 1 and "belongs to the user service" in status.output
    # Plain Alembic keeps the rule too.
    env = {"PATIENT_DATABASE_URL": db, "PATH": "/usr/bin:/bin"}
    plain = subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(ROOT / "services/patient/alembic.ini"),
            "upgrade",
            "head",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert plain.returncode != 0 and "belongs to the user service" in plain.stderr
    assert tables(db) == before


def test_plain_alembic_claims_a_new_database_for_its_service(db: str) -> None:
    env = {"USER_DATABASE_URL": db, "PATH": "/usr/bin:/bin"}
    ini = str(ROOT / "services/user/alembic.ini")
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", ini, "upgrade", "head"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    refused = run_cli("patient", "up", "--url", db)
    assert refused.exit_code == 1 and "belongs to the user service" in refused.stderr


def test_an_unclaimed_history_of_another_service_is_refused(db: str) -> None:
    # A database migrated before ownership was recorded: its history has no owner.
    assert run_cli("user", "up", "--url", db).exit_code == 0
    query(db, "COMMENT ON TABLE public.schema_migrations IS NULL")
    refused = run_cli("patient", "up", "--url", db)
    assert refused.exit_code == 1
    assert (
        "history is not patient's" in refused.stderr
        and "Create healthcare_entities" in refused.stderr
    )
    assert history(db) == versions("user") and "patients" not in tables(db)
    # Its own service claims it back on its next run with work.
    assert run_cli("user", "down", "--version", "1", "--url", db).exit_code == 0
    assert run_cli("user", "up", "--url", db).exit_code == 0
    assert query(db, "SELECT obj_description('public.schema_migrations'::regclass)") == [
        ("migrate: history of the user service",)
    ]


def test_database_url_alone_never_puts_two_services_in_one_database(db: str) -> None:
    env = {"DATABASE_URL": db}
    assert run_cli("user", "up", env=env).exit_code == 0
    refused = run_cli("patient", "up", env=env)
    assert refused.exit_code == 1 and "belongs to the user service, not patient" in refused.stderr
    assert "patients" not in tables(db)
    for args in (["all", "status"], ["all", "up"]):
        result = run_cli(*args, env=env)
        assert result.exit_code == 2, result.output
        assert "both resolve to the database" in result.stderr
    assert "patients" not in tables(db)


def test_all_status_refuses_one_url_for_every_service(db: str) -> None:
    result = run_cli("all", "status", "--url", db)
    assert result.exit_code == 2 and "takes no --url" in result.stderr


def test_status_flags_a_description_that_changed_since_it_was_applied(db: str) -> None:
    assert run_cli("user", "up", "--url", db).exit_code == 0
    query(
        db, "UPDATE public.schema_migrations SET description = 'something else' WHERE version = 1"
    )
    report = json.loads(run_cli("user", "status", "--json", "--url", db).stdout)
    assert report["renamed"] == [1]
    text = run_cli("user", "status", "--url", db).stdout
    assert "description" in text and "differs" in text


# --- peers ------------------------------------------------------------------------------------


@pytest.fixture
def no_embedded(tmp_path: Path) -> dict[str, str]:
    """An embedded data folder that must stay untouched: nothing may start a server there."""
    return {"MIGRATE_PGDATA": str(tmp_path / "must-not-exist")}


def test_peers_are_never_guessed_for_an_explicit_target(
    db: str, no_embedded: dict[str, str], tmp_path: Path
) -> None:
    for env in ({}, {"DATABASE_URL": db}, {"USER_DATABASE_URL": db}):
        args = ["--url", db] if "DATABASE_URL" not in env else []
        result = run_cli("appointment", "up", *args, env={**no_embedded, **env})
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.strip().splitlines()
        assert "set PATIENT_DATABASE_URL" in line or "set USER_DATABASE_URL" in line, line
        assert history(db) == []
    assert not (tmp_path / "must-not-exist").exists()


def test_peer_messages_name_the_database_looked_at(server: str, db: str) -> None:
    patient, user = create_database(server), create_database(server)
    try:
        assert run_cli("user", "up", "--url", user).exit_code == 0
        env = {"PATIENT_DATABASE_URL": patient, "USER_DATABASE_URL": user}
        behind = run_cli("appointment", "up", "--url", db, env=env)
        assert behind.exit_code == 1
        label = Settings("p", patient, "t").label
        assert says(behind.stderr, f"patient is at no version in {label}")
        # The patient variable pointing at the user database is caught, and named.
        wrong = run_cli("appointment", "up", "--url", db, env={**env, "PATIENT_DATABASE_URL": user})
        assert wrong.exit_code == 1
        assert Settings("u", user, "t").label in wrong.stderr
        assert "belongs to the user service" in wrong.stderr
        assert history(db) == []
    finally:
        drop_database(server, patient)
        drop_database(server, user)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--url", ""], {}),
        (["--url", "   "], {}),
        ([], {"PATIENT_DATABASE_URL": ""}),
        ([], {"DATABASE_URL": ""}),
    ],
)
def test_an_empty_url_is_a_usage_error_never_the_embedded_default(
    args: list[str], env: dict[str, str], no_embedded: dict[str, str], tmp_path: Path
) -> None:
    for command in ("up", "status"):
        result = run_cli("patient", command, *args, env={**no_embedded, **env})
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert "is empty" in line
    assert not (tmp_path / "must-not-exist").exists()


def test_version_tables_live_in_the_configured_schema(project_copy: Path, db: str) -> None:
    ini = project_copy / "services/user/alembic.ini"
    ini.write_text(
        ini.read_text().replace("[alembic]\n", "[alembic]\nversion_table_schema = users_svc\n")
    )
    env = {"MIGRATE_ROOT": str(project_copy)}
    result = run_cli("user", "up", "--url", db, env=env)
    assert result.exit_code == 0, result.output
    assert query(db, "SELECT version FROM users_svc.schema_migrations") == [
        (v,) for v in versions("user")
    ]
    assert query(db, "SELECT version_num FROM users_svc.alembic_version") == [
        (f"{versions('user')[-1]:04d}",)
    ]
    assert history(db) == []  # nothing in public
    assert run_cli("user", "up", "--url", db, env=env).stdout.count("nothing to do") == 1
    status = json.loads(run_cli("user", "status", "--json", "--url", db, env=env).stdout)
    assert status["current"] == versions("user")[-1]
