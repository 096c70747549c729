"""The migrate command line: actions, output, connection precedence and exit codes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest
from conftest import (
    PATIENT_HEAD,
    SERVICES,
    alembic_head,
    applied_by_default,
    as_superuser,
    contract_steps,
    history,
    migrate_cmd,
    query,
    release,
    run_cli,
    run_script,
    says,
    versions,
)
from relay import SilentServer

from alembic_common.core.settings import HostOptions, explicit_url, resolve


def test_up_status_down_through_the_cli(db: str) -> None:
    up = run_cli("patient", "up", "--url", db)
    assert up.exit_code == 0, up.output
    assert says(up.stdout, f"applied {', '.join(map(str, applied_by_default('patient')))}")
    assert "applied version 3" in up.stderr
    again = run_cli("patient", "up", "--url", db)
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    down = run_cli("patient", "down", "--version", "3", "--url", db)
    assert down.exit_code == 0, down.output
    assert history(db) == [1, 2]
    status = run_cli("patient", "status", "--url", db)
    assert status.exit_code == 0
    assert (
        says(status.stdout, f"patient: version 2 of {PATIENT_HEAD}") and "pending" in status.stdout
    )


def test_status_json_shape(db: str) -> None:
    run_cli("patient", "up", "--version", "2", "--url", db)
    with release(db, "patient@2") as old, release(db, "psql"):
        result = run_cli("patient", "status", "--json", "--url", db)
        old_pid = old.info.backend_pid
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [h["pid"] for h in report["holders"]] == [old_pid]
    assert [h["application_name"] for h in report["unannounced"]] == ["psql"]
    assert report["service"] == "patient"
    assert report["current"] == 2 and report["head"] == PATIENT_HEAD
    assert [m["version"] for m in report["migrations"]] == versions("patient")
    assert [m["applied"] for m in report["migrations"]] == [v <= 2 for v in versions("patient")]
    first_contract = contract_steps("patient")[0]
    assert report["held"] == [v for v in versions("patient") if v >= first_contract]
    assert report["behind"] is True  # 3 and 4 are runnable
    applied_at = report["migrations"][0]["applied_at"]
    assert applied_at is not None and applied_at[:4].isdigit() and "T" in applied_at
    assert report["migrations"][2]["applied_at"] is None
    assert report["consistent"] is True and report["ahead"] is False


def test_status_flags_a_database_ahead_of_the_code(db: str) -> None:
    run_cli("patient", "up", "--contract", "--url", db)
    future = PATIENT_HEAD + 1
    query(
        db,
        "INSERT INTO schema_migrations (version, description) VALUES (%s, 'from the future')",
        [future],
    )
    query(db, "UPDATE alembic_version SET version_num = %s", [f"{future:04d}"])
    result = run_cli("patient", "status", "--json", "--url", db)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["unknown"] == [future] and report["ahead"] is True
    up = run_cli("patient", "up", "--url", db)
    assert up.exit_code == 1
    assert (
        f"database is at version {future} but this code knows only up to {PATIENT_HEAD}"
        in up.stderr
    )
    assert history(db) == [*versions("patient"), future]


def test_status_flags_disagreeing_tables(db: str) -> None:
    run_cli("patient", "up", "--url", db)
    query(db, "DELETE FROM schema_migrations WHERE version = 3")
    result = run_cli("patient", "status", "--url", db)
    assert result.exit_code == 1
    assert "INCONSISTENT" in result.stdout and "lacks [3]" in result.stdout
    up = run_cli("patient", "up", "--url", db)
    assert up.exit_code == 1 and "lacks [3]" in up.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nosuch", "up"], 2, "valid services: appointment, patient, user"),
        (["patient", "down"], 2, "down needs --version N"),
        (["patient", "up", "--version", "two"], 2, "Invalid value for '--version'"),
        (["patient", "down", "--version", "1.5"], 2, "Invalid value for '--version'"),
        (
            ["patient", "up", "--version", str(PATIENT_HEAD + 4)],
            2,
            f"version {PATIENT_HEAD + 4} lies beyond the head ({PATIENT_HEAD})",
        ),
        (["patient", "up", "--version", "0"], 2, "no migration has version 0"),
        (["patient", "up", "--url", "http://example.org/db"], 2, "unsupported scheme 'http'"),
        (["patient", "up", "--url", "postgresql://h:notaport/db"], 2, "--url cannot be used"),
        (["patient", "up", "--url", "not a url"], 2, "--url is not a URL"),
        (["patient", "frobnicate"], 2, "no such command 'frobnicate'"),
        (["patient", "up", "--bogus"], 2, "No such option: --bogus"),
        (["all", "down", "--version", "1"], 2, "'all' works with 'up', 'status' and 'report' only"),
        (
            ["all", "up", "--url", "postgresql://u@h/d"],
            2,
            "'all up' takes neither --version nor --url",
        ),
        (["patient", "seed", "--profile", "nope"], 2, "no seed profile 'nope'; available: demo"),
        (["patient", "plan", "--down"], 2, "plan --down needs --version N"),
        (
            [
                "patient",
                "status",
                "--url",
                "postgresql://u@h/a",
                "--url",
                "postgresql://u@h/b",
                "--jobs",
                "0",
            ],
            2,
            "--jobs",
        ),
    ],
)
def test_bad_usage_is_one_line_exit_2(args: list[str], code: int, message: str) -> None:
    result = run_cli(*args)
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("migrate: error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_down_of_a_version_not_applied_is_exit_1_and_changes_nothing(db: str) -> None:
    run_cli("patient", "up", "--version", "2", "--url", db)
    result = run_cli("patient", "down", "--version", "3", "--url", db)
    assert result.exit_code == 1
    assert "version 3 is not applied (the database is at 2)" in result.stderr
    assert history(db) == [1, 2]


def test_unreachable_host_names_host_and_port_within_the_timeout() -> None:
    with SilentServer() as hung:
        started = time.monotonic()
        url = f"postgresql://postgres@127.0.0.1:{hung.port}/x"
        result = run_cli("patient", "up", "--url", url, "--connect-timeout", "2")
        elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 8, elapsed
    assert result.exit_code == 1
    assert says(result.stderr, f"127.0.0.1:{hung.port}") and "unreachable" in result.stderr
    refused = run_cli("patient", "status", "--url", "postgresql://postgres@127.0.0.1:1/x")
    assert refused.exit_code == 1 and "127.0.0.1:1" in refused.stderr


def test_missing_database_says_how_to_create_it(server: str) -> None:
    from conftest import with_database

    result = run_cli("patient", "up", "--url", with_database(server, "no_such_db_here"))
    assert result.exit_code == 1
    assert "does not exist" in result.stderr and "createdb" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_database_a_query_parameter_names_is_the_one_used_and_named(
    server: str, db: str
) -> None:
    """libpq lets ``?dbname=``, ``?host=`` and ``?port=`` win over the URL's authority: the
    run goes where libpq goes, and its messages name that database and server."""
    from alembic_common.core import urls
    from alembic_common.core.settings import Settings

    given = Settings("patient", db, "test")
    (host, port), database = given.addresses[0], given.database
    parts = urls.parse(db)
    # The authority names a server that does not answer and a database never created; the
    # query names the real ones.
    overridden = parts._replace(
        hosts=(("127.0.0.1", 1),),
        database="decoy_never_created",
        params={**parts.params, "dbname": database, "host": host, "port": str(port)},
    ).url()
    result = run_cli("patient", "up", "--url", overridden)
    assert result.exit_code == 0, result.stderr
    assert alembic_head(db) == [f"{PATIENT_HEAD:04d}"]
    elsewhere = parts._replace(params={**parts.params, "dbname": "no_such_db_there"}).url()
    missing = run_cli("patient", "status", "--url", elsewhere)
    assert missing.exit_code == 1
    (line,) = missing.stderr.strip().splitlines()
    assert (
        "'no_such_db_there'" in line and "createdb" in line and line.endswith(" no_such_db_there")
    )
    assert f"'{database}'" not in line


def test_broken_migration_file_is_named(project_copy: Path, db: str) -> None:
    new = PATIENT_HEAD + 1
    broken = (
        project_copy / "services" / "patient" / "migrations" / "versions" / f"{new:04d}_broken.py"
    )
    broken.write_text(
        f'"""Broken"""\nrevision = "{new:04d}"\ndown_revision = "{new - 1:04d}"\nimport no_such_module\n'
    )
    result = run_script("patient", "up", "--url", db, env={"MIGRATE_ROOT": str(project_copy)})
    assert result.returncode == 1, result.stderr
    assert broken.name in result.stderr and "no_such_module" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert history(db) == []


def test_debug_shows_the_traceback(db: str) -> None:
    result = run_cli("patient", "down", "--version", "1", "--url", db, "--debug")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "not applied" in result.stderr


def test_help_explains_the_commands() -> None:
    top = run_cli("--help")
    assert top.exit_code == 0
    assert "SERVICE" in top.stdout and "up" in top.stdout and "status" in top.stdout
    up = run_cli("patient", "up", "--help")
    assert "--version" in up.stdout and "--wait" in up.stdout and "--url" in up.stdout


# Connection precedence: --url > <SERVICE>_MIGRATION_URL > <SERVICE>_DATABASE_URL >
# DATABASE_URL > --host... > embedded.

A, B, C = "postgresql://a@h1/a", "postgres://b@h2/b", "postgresql://c@h3/c"
M = "postgresql://m@direct:5432/m"


@pytest.mark.parametrize("name", SERVICES)
def test_the_migration_url_wins_over_the_database_url(name: str) -> None:
    """The direct connection beside an application's pooled URL: only --url beats it, and
    another service's migration URL is not this one's."""
    from alembic_common.core.settings import migration_var, peer

    var, pooled = migration_var(name), f"{name.upper()}_DATABASE_URL"
    env = {var: M, pooled: B, "DATABASE_URL": C}
    assert explicit_url(name, environ=env) == (M, var)
    assert explicit_url(name, url=A, environ=env) == (A, "--url")
    other = next((o for o in SERVICES if o != name), f"{name}_other")
    assert explicit_url(other, environ={var: M}) is None
    target = resolve(other, url=A, environ={})
    assert peer(name, target, environ=env).url == M  # a peer is read where it migrates
    assert peer(name, target, environ={pooled: B}).url == "postgresql://b@h2/b"


def test_precedence_order() -> None:
    env = {"PATIENT_DATABASE_URL": B, "DATABASE_URL": C}
    host = HostOptions(host="h4")
    assert explicit_url("patient", url=A, host=host, environ=env) == (A, "--url")
    assert explicit_url("patient", host=host, environ=env) == (
        "postgresql://b@h2/b",
        "PATIENT_DATABASE_URL",
    )
    assert explicit_url("patient", host=host, environ={"DATABASE_URL": C}) == (C, "DATABASE_URL")
    assert explicit_url("user", environ={"PATIENT_DATABASE_URL": B}) is None
    url, source = explicit_url("patient", host=host, environ={}) or ("", "")
    assert url == "postgresql://postgres:postgres@h4:5432/patient_service_db"
    assert source.startswith("--host")


def test_seed_defaults_fill_in_the_host_flags() -> None:
    conf = resolve("appointment", host=HostOptions(port=6543), environ={})
    assert conf.host == "localhost" and conf.port == 6543 and conf.user == "postgres"
    assert conf.database == "appointment_service_db" and conf.password == "postgres"
    assert "postgres:***@" in conf.display


def test_per_service_variable_beats_database_url_end_to_end(server: str, db: str) -> None:
    from conftest import create_database, drop_database

    other = create_database(server)
    try:
        result = run_cli("patient", "up", env={"PATIENT_DATABASE_URL": db, "DATABASE_URL": other})
        assert result.exit_code == 0, result.output
        assert history(db) == applied_by_default("patient")
        assert query(other, "SELECT to_regclass('schema_migrations')") == [(None,)]
        via_url = run_cli("user", "up", "--url", other, env={"DATABASE_URL": db})
        assert via_url.exit_code == 0 and alembic_head(other) == [f"{versions('user')[-1]:04d}"]
    finally:
        drop_database(server, other)


def test_alembic_connects_where_libpq_does_through_a_socket_directory(db: str) -> None:
    """SQLAlchemy never parses the URL: its connections are psycopg's, made from the run's
    own conninfo, so a socket directory written in the authority (%2Fdir) reaches the
    same database as libpq (SQLAlchemy would pass the escapes on as written)."""
    from urllib.parse import quote

    from sqlalchemy import text

    from alembic_common.core import db as dbmod
    from alembic_common.core.settings import Settings

    conf = Settings("t", db, "t")
    with psycopg.connect(as_superuser(db)) as conn:  # the setting is the superuser's to read
        row = conn.execute("SHOW unix_socket_directories").fetchone()
        port = conn.info.port
    folders = [f.strip() for f in (row[0] if row else "").split(",") if f.strip()]
    if not folders:
        pytest.skip("the test server listens on no Unix socket")
    via_socket = conf.parts._replace(hosts=((folders[0], int(port)),)).url()
    assert f"@{quote(folders[0], safe='')}:" in via_socket
    engine = dbmod.engine(Settings("t", via_socket, "t"))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == conf.database
    finally:
        engine.dispose()


# --- wait: the schema gate of init containers and compose services ------------------------


def test_wait_gives_up_naming_what_it_saw_and_refuses_an_unknown_version(db: str) -> None:
    head = versions("patient")[-1]
    began = time.monotonic()
    late = run_cli("patient", "wait", "--url", db, "--timeout", "0.5")
    assert late.exit_code == 1 and time.monotonic() - began < 30
    heard, line = late.stderr.strip().splitlines()  # what it saw, then why it gave up
    assert heard == f"patient: waiting for version {head}: the database has no version yet"
    assert f"not ready for version {head} after 0.5 s" in line and "no version yet" in line
    beyond = run_cli("patient", "wait", "--url", db, "--version", str(head + 1))
    assert beyond.exit_code == 2 and "beyond the head" in beyond.stderr
    assert history(db) == []  # wait never migrates


def test_wait_returns_once_another_process_has_migrated(db: str) -> None:
    import subprocess

    target = versions("patient")[len(versions("patient")) // 2]
    waiting = subprocess.Popen(
        migrate_cmd("patient", "wait", "--url", db, "--version", str(target), "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    up = run_cli("patient", "up", "--url", db, "--version", str(target), "--contract")
    assert up.exit_code == 0, up.output
    stdout, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, stderr
    assert json.loads(stdout) == {"service": "patient", "version": target, "current": target}


def test_wait_is_ready_while_a_contract_step_is_held_for_an_older_release(db: str) -> None:
    contract = contract_steps("patient")
    if not contract:
        pytest.skip("the patient history has no contract step")
    step = contract[0]
    up = run_cli("patient", "up", "--url", db, "--version", str(step), "--hold-contract")
    assert up.exit_code == 0, up.output
    assert history(db)[-1] == step - 1
    ready = run_cli("patient", "wait", "--url", db, "--version", str(step), "--timeout", "0")
    assert ready.exit_code == 0, ready.output
    assert says(ready.stdout, f"ready for version {step}")
    later = next((v for v in versions("patient") if v > step and v not in contract), None)
    if later is not None:  # an expand step beyond the held one is not there yet
        waited = run_cli("patient", "wait", "--url", db, "--version", str(later), "--timeout", "0")
        assert waited.exit_code == 1 and says(waited.stderr, f"not ready for version {later}")


def test_no_service_folder_says_where_it_looked_and_names_migrate_root(tmp_path: Path) -> None:
    done = run_script("patient", "status", env={"MIGRATE_ROOT": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert str(tmp_path) in done.stderr and "MIGRATE_ROOT" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_several_unreachable_hosts_are_each_named_in_the_order_tried() -> None:
    url = "postgresql://postgres@127.0.0.1:1,127.0.0.1:2/nowhere"
    result = run_cli("patient", "status", "--url", url)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "is unreachable: 127.0.0.1:1: Connection refused" in line, line
    assert line.endswith("; 127.0.0.1:2: Connection refused"), line
