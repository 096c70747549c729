"""Issue 31, rehearsal: the pending steps on a throwaway copy of real data, measured, and back.

Every rehearsal here runs as the non-superuser owner of the database; what it must leave
alone is checked with independent oracles: pg_dump of the original (as the superuser),
the server's list of databases, and the folder the dump went through.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import (
    OWNER,
    ROOT,
    add_step,
    as_owner,
    as_superuser,
    contract_steps,
    history,
    peer_env_for,
    query,
    release,
    run_cli,
    says,
    versions,
    wait_until,
)
from conftest import up as migrate_up
from markdown_it import MarkdownIt
from test_clinical import fake_patients, load_patients

from alembic_common.core.services import Service, discover
from alembic_common.tenancy import rls

COPY_LIKE = "%\\_rehearsal\\_%"


def databases(server_url: str) -> set[str]:
    return {r[0] for r in query(server_url, "SELECT datname FROM pg_database")}


def copies(server_url: str, url: str | None = None) -> set[str]:
    """Rehearsal copies on the server (of ``url``'s database only, when given: other runs
    may share the server)."""
    found = {
        r[0]
        for r in query(
            server_url, "SELECT datname FROM pg_database WHERE datname LIKE %s", [COPY_LIKE]
        )
    }
    if url is None:
        return found
    name = query(url, "SELECT current_database()")[0][0]
    return {d for d in found if d.startswith(name + "_rehearsal_")}


def sleeping(server_url: str, url: str) -> list[Any]:
    """Sessions on a copy of ``url``'s database running the test step's pg_sleep."""
    return query(
        server_url,
        "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s) AND query LIKE %s",
        [sorted(copies(server_url, url)), "%pg_sleep(60)%"],
    )


def dump(url: str) -> str:
    """The whole database as pg_dump writes it (schema and rows): the original's oracle."""
    done = subprocess.run(
        ["pg_dump", "--no-owner", "--no-privileges", "--dbname", as_superuser(url)],
        capture_output=True,
        text=True,
        check=True,
    )
    # pg_dump's \restrict key is new on every run
    return "".join(
        line
        for line in done.stdout.splitlines(True)
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def rehearse(url: str, *args: str, root: Path | None = None, tmp: Path | None = None) -> Any:
    env = {"MIGRATE_ROOT": str(root)} if root is not None else {}
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    return run_cli("patient", "rehearse", "--url", url, *args, env=env)


def at_head_with_patients(url: str, count: int) -> list[tuple[Any, ...]]:
    """A database at head holding ``count`` Faker patients, loaded at the first version."""
    migrate_up("patient", url, versions("patient")[0])
    patients = fake_patients(count)
    load_patients(url, patients)
    migrate_up("patient", url, contract=True)
    return patients


def values_of(patients: list[tuple[Any, ...]]) -> set[str]:
    """Values a leak would show: emails, phones and full names of the rows loaded."""
    found = {p[7] for p in patients if p[7]} | {p[6] for p in patients if p[6]}
    return found | {f"{p[2]} {p[3]}" for p in patients}


@pytest.fixture
def private_tmp(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir(mode=0o700)
    return folder


# --- figures for every pending step, the original untouched ---------------------------------


def test_every_pending_step_is_measured_on_a_copy_and_the_original_is_untouched(
    db: str, server: str, private_tmp: Path
) -> None:
    start = versions("patient")[0]
    migrate_up("patient", db, start)
    patients = fake_patients(20000)
    load_patients(db, patients)
    before, listed = dump(db), databases(server)
    result = rehearse(db, "--json", tmp=private_tmp)
    report = json.loads(result.stdout)
    pending = [v for v in versions("patient") if v > start]
    assert [s["version"] for s in report["steps"]] == pending, result.output
    for step in report["steps"]:
        assert step["ok"] and step["seconds"] > 0, step
        assert {"locks", "rows_changed", "sizes"} <= step.keys(), step
        for lock in step["locks"]:
            assert lock["held_ms"] >= 0 and lock["mode"].endswith("Lock"), lock
    assert report["start"] == start and report["end"] == pending[-1]
    assert report["way_back"]["to"] == start
    compared = {t["table"]: t for t in report["way_back"]["tables"]}
    assert compared["public.patients"]["rows_before"] == 20000
    assert result.exit_code == (0 if report["ok"] else 1), result.output
    assert dump(db) == before, "the original database changed"
    assert not copies(server, db), "a copy was left on the server"
    # the server's list: nothing of this rehearsal's in it (others may share the server)
    assert not {d for d in databases(server) - listed if "_rehearsal_" in d}
    assert history(db) == versions("patient")[:1]
    assert list(private_tmp.iterdir()) == [], "the dump was left on disk"
    shown = result.stdout + result.stderr
    assert not [v for v in values_of(patients) if v in shown], "a patient value was printed"


def test_rows_locks_and_sizes_of_a_step_are_what_it_did(
    db: str, server: str, project_copy: Path
) -> None:
    at_head_with_patients(db, 3000)
    step = add_step(
        project_copy,
        "patient",
        "    op.execute('UPDATE patients SET updated_at = updated_at')\n"
        "    op.execute('SELECT pg_sleep(0.3)')",
        "Touch every patient",
        downgrade="    op.execute('SELECT 1')",
    )
    result = rehearse(db, "--json", root=project_copy)
    report = json.loads(result.stdout)
    (figures,) = report["steps"]
    assert figures["version"] == step and figures["ok"], figures
    count = query(db, "SELECT count(*) FROM patients")[0][0]
    assert figures["rows_changed"] == {"public.patients": count}, figures
    held = {(lock["table"], lock["mode"]): lock["held_ms"] for lock in figures["locks"]}
    assert held[("public.patients", "RowExclusiveLock")] >= 300, figures["locks"]
    (size,) = [s for s in figures["sizes"] if s["table"] == "public.patients"]
    assert size["bytes_after"] > size["bytes_before"], size  # every row has a new version
    assert result.exit_code == (0 if report["ok"] else 1), result.output


# --- what makes a rehearsal fail -------------------------------------------------------------


def test_a_lossy_downgrade_is_caught_with_counts_never_values(
    db: str, server: str, project_copy: Path
) -> None:
    patients = at_head_with_patients(db, 2000)
    add_step(
        project_copy,
        "patient",
        "    op.execute(\"DELETE FROM patients WHERE country = 'France'\")",
        "Forget French patients",
    )
    changed = query(db, "SELECT count(*) FROM patients WHERE country = 'France'")[0][0]
    assert changed > 0
    before = dump(db)
    result = rehearse(db, "--json", root=project_copy)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["way_back"]["ok"] is False
    (patients_row,) = [t for t in report["way_back"]["tables"] if t["table"] == "public.patients"]
    assert patients_row["lost"] == changed and patients_row["added"] == 0, patients_row
    assert patients_row["rows_after"] == patients_row["rows_before"] - changed, patients_row
    assert any("public.patients" in p and str(changed) in p for p in report["problems"])
    assert says(result.stderr, "migrate: error: rehearse"), result.stderr
    shown = result.stdout + result.stderr
    assert not [v for v in values_of(patients) if v in shown]
    assert dump(db) == before and not copies(server, db)


def test_a_lock_held_longer_than_the_threshold_fails_the_rehearsal(
    db: str, server: str, project_copy: Path
) -> None:
    head = versions("patient")[-1]
    migrate_up("patient", db, head, contract=True)
    add_step(
        project_copy,
        "patient",
        "    op.execute('LOCK TABLE patients IN ACCESS EXCLUSIVE MODE')\n"
        "    op.execute('SELECT pg_sleep(0.4)')",
        "Hold patients",
        downgrade="    op.execute('SELECT 1')",
    )
    strict = rehearse(db, "--max-lock-ms", "150", root=project_copy)
    assert strict.exit_code == 1, strict.output
    assert says(strict.stdout, "AccessExclusiveLock on public.patients"), strict.stdout
    assert "more than 150 ms" in strict.output
    lenient = rehearse(db, "--max-lock-ms", "5000", "--json", root=project_copy)
    assert lenient.exit_code == 0, lenient.output
    (figures,) = json.loads(lenient.stdout)["steps"]
    held = {(lock["table"], lock["mode"]): lock["held_ms"] for lock in figures["locks"]}
    assert 400 <= held[("public.patients", "AccessExclusiveLock")] < 5000, figures
    assert not copies(server, db)


def test_a_failing_step_is_reported_and_the_way_back_undoes_the_ones_before(
    db: str, server: str, project_copy: Path
) -> None:
    head = versions("patient")[-1]
    migrate_up("patient", db, head, contract=True)
    made = add_step(
        project_copy,
        "patient",
        "    op.execute('CREATE TABLE rehearsed (id int)')",
        "Make a table",
        downgrade="    op.execute('DROP TABLE rehearsed')",
    )
    failing = add_step(project_copy, "patient", "    op.execute('SELECT 1/0')", "Fails")
    result = rehearse(db, "--json", root=project_copy)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [(s["version"], s["ok"]) for s in report["steps"]] == [(made, True), (failing, False)]
    assert "division by zero" in report["steps"][-1]["error"]
    assert report["way_back"]["ok"] and report["way_back"]["to"] == head, report["way_back"]
    assert says(result.stderr, f"version {failing} failed"), result.stderr
    assert history(db)[-1] == head and not copies(server, db)


# --- the copy never outlives the rehearsal -----------------------------------------------------


def test_an_interrupted_rehearsal_leaves_no_copy_and_no_dump(
    db: str, server: str, project_copy: Path, private_tmp: Path
) -> None:
    at_head_with_patients(db, 500)
    add_step(project_copy, "patient", "    op.execute('SELECT pg_sleep(60)')", "Sleeps")
    before = dump(db)
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env |= {"MIGRATE_ROOT": str(project_copy), "TMPDIR": str(private_tmp)}
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "migrate.py"), "patient", "rehearse", "--url", db],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: sleeping(server, db),
            "the rehearsal's step to be running on its copy",
        )
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "was dropped" in err, err
    assert not copies(server, db) and dump(db) == before
    assert list(private_tmp.iterdir()) == []


def test_a_copy_left_by_a_killed_rehearsal_is_dropped_by_the_next(
    db: str, server: str, project_copy: Path
) -> None:
    head = versions("patient")[-1]
    migrate_up("patient", db, head, contract=True)
    add_step(project_copy, "patient", "    op.execute('SELECT pg_sleep(60)')", "Sleeps")
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env["MIGRATE_ROOT"] = str(project_copy)
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "migrate.py"), "patient", "rehearse", "--url", db],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: copies(server, db), "the rehearsal's copy")
        wait_until(
            lambda: sleeping(server, db),
            "the step running on the copy",
        )
    finally:
        child.kill()
        child.wait()
    left = copies(server, db)
    assert left, "SIGKILL gives no chance to drop the copy"
    for (pid,) in query(
        server, "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", [sorted(left)]
    ):
        query(server, "SELECT pg_terminate_backend(%s)", [pid])
    # the next rehearsal (nothing left to rehearse without the sleeping step) drops it
    (project_copy / "services" / "patient" / "migrations" / "versions").joinpath(
        f"{head + 1:04d}_extra_{head + 1}.py"
    ).unlink()
    result = rehearse(db, root=project_copy)
    assert result.exit_code == 0, result.output
    assert not copies(server, db)


# --- where the copy comes from, and what is refused ---------------------------------------------


def test_a_copy_from_a_backup_file(db: str, server: str, tmp_path: Path) -> None:
    start = versions("patient")[0]
    migrate_up("patient", db, start)
    load_patients(db, fake_patients(300))
    taken = run_cli("patient", "backup", "--url", db, "--to", str(tmp_path / "b"))
    assert taken.exit_code == 0, taken.output
    path = Path(taken.stdout.strip())
    result = rehearse(db, "--from-backup", str(path), "--json")
    report = json.loads(result.stdout)
    assert report["source"] == path.name and report["start"] == start, result.output
    assert [s["version"] for s in report["steps"]] == [v for v in versions("patient") if v > start]
    assert path.exists(), "a given backup is the user's: it stays"
    assert not copies(server, db)


def test_nothing_pending_makes_no_copy(db: str, server: str) -> None:
    migrate_up("patient", db, contract=True)
    result = rehearse(db)
    assert result.exit_code == 0 and "nothing to rehearse" in result.stdout, result.output
    assert not copies(server, db)


@pytest.mark.parametrize(
    "args",
    [
        ("--json", "--markdown"),
        ("--from-backup", "/nonexistent/backup.dump"),
        ("--max-lock-ms", "-1"),
        ("--version", "999999"),
        ("--contract", "--hold-contract"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    db: str, server: str, args: tuple[str, ...]
) -> None:
    result = rehearse(db, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not copies(server, db) and history(db) == []


def test_a_role_that_may_not_create_databases_is_told_so(db: str, server: str) -> None:
    role = f"mt_nocreate_{uuid.uuid4().hex[:8]}"
    name = query(db, "SELECT current_database()")[0][0]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'Secret pw 9' NOCREATEDB")
        conn.execute(f'ALTER DATABASE "{name}" OWNER TO "{role}"')
    try:
        owner = as_owner(db, role, "Secret pw 9")
        result = run_cli("patient", "rehearse", "--url", owner, "--hold-contract")
        assert result.exit_code == 1, result.output
        assert "CREATEDB" in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert "Secret pw 9" not in result.output
        assert not copies(server, db) and history(db) == []
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" OWNER TO "{OWNER}"')
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


# --- the Markdown report ---------------------------------------------------------------------


def test_markdown_has_a_row_per_step_for_a_pull_request(db: str, server: str) -> None:
    start = versions("patient")[0]
    migrate_up("patient", db, start)
    result = rehearse(db, "--markdown")
    tokens = MarkdownIt("commonmark").enable("table").parse(result.stdout)
    rows = [t for t in tokens if t.type == "tr_open"]
    pending = [v for v in versions("patient") if v > start]
    assert len(rows) == 1 + len(pending), result.stdout  # the header and a row per step
    cells = [t.content for t in tokens if t.type == "inline"]
    for version in pending:
        assert str(version) in cells, cells
    assert result.exit_code in (0, 1) and not copies(server, db)


def test_every_service_can_be_rehearsed(db: str, server: str) -> None:
    """The mechanism is the same for every discovered service: a copy, the steps, the way back."""
    found: dict[str, Service] = discover(ROOT)
    for name in found:
        result = run_cli(name, "rehearse", "--url", db, "--json", env=peer_env_for(name))
        report = json.loads(result.stdout)
        assert [s["version"] for s in report["steps"]] == versions(name), result.output
        assert not copies(server, db) and history(db) == []


# --- what up would do now, and nothing of the server's ---------------------------------------


def test_a_held_contract_step_is_reported_and_what_comes_before_it_rehearsed(
    db: str, server: str
) -> None:
    held = [v for v in contract_steps("patient") if v > versions("patient")[0]]
    if not held:
        pytest.skip("patient has no contract step after its first version")
    contract = held[0]
    start = max(v for v in versions("patient") if v < contract - 1) if contract > 2 else None
    if start is None:
        pytest.skip("no step between the first version and the contract step")
    migrate_up("patient", db, start)
    with release(db, f"patient@{start}"):
        result = rehearse(db, "--json")
    report = json.loads(result.stdout)
    ran = [v for v in versions("patient") if start < v < contract]
    assert [s["version"] for s in report["steps"]] == ran, result.output
    assert report["held"] == [v for v in versions("patient") if v >= contract], report
    assert report["way_back"]["to"] == start and report["way_back"]["ok"], report["way_back"]
    assert result.exit_code == 0 and history(db)[-1] == start, result.output


def test_roles_are_the_servers_a_way_back_keeps_the_ones_that_were_there(
    db: str, server: str
) -> None:
    name = "patient"
    making = [
        m.version
        for m in discover(ROOT)[name].migrations
        if "create_roles(" in m.path.read_text(encoding="utf-8")
    ]
    if not making:
        pytest.skip(f"{name} makes no role")
    role, login = rls.app_role(name), f"mt_login_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        made = not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        if made:
            conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
        conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE "{role}"')
    try:
        migrate_up(name, db, making[0] - 1)
        result = rehearse(db, "--version", str(making[0]), "--json")
        report = json.loads(result.stdout)
        assert [s["version"] for s in report["steps"]] == [making[0]], result.output
        assert report["roles_dropped"] == [] and report["roles_left"] == [], report
        member = query(
            server,
            "SELECT pg_has_role(%s, %s, 'MEMBER')",
            [login, role],
        )
        assert member == [(True,)], "the login lost its group role"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{login}"')
            if made:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_atomic_figures_are_the_batchs_on_its_last_step(
    db: str, server: str, project_copy: Path
) -> None:
    head = versions("patient")[-1]
    migrate_up("patient", db, head, contract=True)
    first = add_step(
        project_copy,
        "patient",
        "    op.execute('LOCK TABLE patients IN ACCESS EXCLUSIVE MODE')\n"
        "    op.execute('SELECT pg_sleep(0.3)')",
        "Hold patients",
        downgrade="    op.execute('SELECT 1')",
    )
    second = add_step(
        project_copy, "patient", "    op.execute('SELECT 1')", "Nothing",
        downgrade="    op.execute('SELECT 1')",
    )  # fmt: skip
    result = rehearse(db, "--atomic", "--json", root=project_copy)
    steps = json.loads(result.stdout)["steps"]
    assert [(s["version"], s["covers"]) for s in steps] == [
        (first, []),
        (second, [first, second]),
    ], result.output
    held = {(lock["table"], lock["mode"]): lock["held_ms"] for lock in steps[-1]["locks"]}
    assert held[("public.patients", "AccessExclusiveLock")] >= 300, steps
    assert steps[0]["locks"] == [] and result.exit_code == 0, result.output


def test_a_long_lock_that_lets_traffic_through_does_not_fail(
    db: str, server: str, project_copy: Path
) -> None:
    head = versions("patient")[-1]
    migrate_up("patient", db, head, contract=True)
    add_step(
        project_copy,
        "patient",
        "    op.execute('SELECT count(*) FROM patients')\n    op.execute('SELECT pg_sleep(0.3)')",
        "Read slowly",
        downgrade="    op.execute('SELECT 1')",
    )
    result = rehearse(db, "--max-lock-ms", "100", "--json", root=project_copy)
    (figures,) = json.loads(result.stdout)["steps"]
    held = {(lock["table"], lock["mode"]): lock["held_ms"] for lock in figures["locks"]}
    assert held[("public.patients", "AccessShareLock")] >= 300, figures
    assert result.exit_code == 0, result.output


def test_a_backup_of_another_version_is_refused(db: str, server: str, tmp_path: Path) -> None:
    start = versions("patient")[0]
    migrate_up("patient", db, start)
    taken = run_cli("patient", "backup", "--url", db, "--to", str(tmp_path / "b"))
    assert taken.exit_code == 0, taken.output
    migrate_up("patient", db, versions("patient")[1])
    result = rehearse(db, "--from-backup", taken.stdout.strip())
    assert result.exit_code == 2 and "holds version" in result.stderr, result.output
    assert not copies(server, db)


def test_a_group_role_the_copy_keeps_survives_the_downgrades_drop(server: str) -> None:
    """The mechanism behind the test above, on a role no other database uses: what a
    downgrade runs (tenancy's drop_role_sql) keeps a role the copy was made to use."""
    from conftest import create_database, drop_database

    from alembic_common.safety import rehearsal

    role = f"mt_group_{uuid.uuid4().hex[:8]}"
    url = create_database(server, owner=None)
    name = query(url, "SELECT current_database()")[0][0]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            rehearsal.keep_roles(conn, name, {role: False})
        query(url, rls.drop_role_sql(role))
        assert query(server, "SELECT count(*) FROM pg_roles WHERE rolname = %s", [role]) == [(1,)]
    finally:
        drop_database(server, url)
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
