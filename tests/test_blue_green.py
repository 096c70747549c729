"""Old and new releases side by side through an expand/contract (version schemas, gating).

Every version here comes from the history: the first contract step V of the patient
service, its expand step V-1, and the version before it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import phonenumbers
import psycopg
import pytest
from conftest import (
    ROOT,
    Spawned,
    add_step,
    as_owner,
    as_superuser,
    before_first_contract,
    contract_steps,
    history,
    migrate_cmd,
    query,
    release,
    run_cli,
    versions,
)

from alembic_common.core import services
from alembic_common.online import releases

CONTRACT = contract_steps("patient")[0]
EXPAND = CONTRACT - 1
OLD = before_first_contract("patient")[-2]  # what the old release was built for
SCHEMA = releases.schema_name("patient", CONTRACT)
E164 = phonenumbers.PhoneNumberFormat.E164
INSERT = (
    "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
    " date_of_birth, country, phone) VALUES (1, %s, 'A', 'B', '1990-01-01', %s, %s)"
    " RETURNING id"
)


def _version_schemas(db: str) -> list[str]:
    """Schemas the toolkit made for releases, by the ownership comment on each."""
    rows = query(
        db,
        "SELECT nspname FROM pg_namespace WHERE obj_description(oid, 'pg_namespace')"
        " LIKE 'migrate: version schema of the %%' ORDER BY 1",
    )
    return [r[0] for r in rows]


def _new_release(db: str) -> psycopg.Connection[Any]:
    """A release built for the contract step, reading and writing through its schema."""
    return psycopg.connect(
        releases.release_url(db, "patient", CONTRACT, version_schema=True), autocommit=True
    )


def _e164(raw: str, region: str) -> str:
    return phonenumbers.format_number(phonenumbers.parse(raw, region), E164)


def test_rolling_deploy_old_and_new_releases_side_by_side(db: str) -> None:
    assert run_cli("patient", "up", "--version", str(OLD), "--url", db).exit_code == 0
    with release(db, f"patient@{OLD}") as old:
        held = run_cli("patient", "up", "--version", str(CONTRACT), "--url", db)
        assert held.exit_code == 0, held.output  # the held contract is the target: exit 0
        assert history(db) == [v for v in versions("patient") if v <= EXPAND]
        assert f"pid {old.info.backend_pid} (patient@{OLD})" in held.stdout
        assert _version_schemas(db) == [SCHEMA]

        new = _new_release(db)
        new_pid = new.info.backend_pid
        assert new.execute("SHOW search_path").fetchone() == (SCHEMA,)
        errors: list[BaseException] = []
        stop = threading.Event()
        mine: dict[str, list[tuple[str, str]]] = {"old": [], "new": []}

        def old_writer() -> None:  # national Canadian numbers, in the old shape
            try:
                with psycopg.connect(db, autocommit=True, application_name=f"patient@{OLD}") as c:
                    for i in range(10**6):
                        if stop.is_set():
                            return
                        raw = f"(514) 555-{i % 10000:04d}"
                        c.execute(INSERT, (f"OLD{i}", "Canada", raw))
                        if i % 3 == 0:
                            raw = f"(438) 555-{i % 10000:04d}"
                            c.execute(
                                "UPDATE patients SET phone = %s WHERE patient_id = %s",
                                (raw, f"OLD{i}"),
                            )
                        mine["old"].append((f"OLD{i}", raw))
            except BaseException as exc:
                errors.append(exc)

        def new_writer(conn: psycopg.Connection[Any], tag: str) -> None:  # E.164, new shape
            try:
                for i in range(10**6):
                    if stop.is_set():
                        return
                    e164 = f"+3361234{i % 10000:04d}"  # valid French mobiles
                    (pid,) = conn.execute(INSERT, (f"{tag}{i}", "France", e164)).fetchone()
                    if i % 3 == 0:
                        e164 = f"+3369876{i % 10000:04d}"
                        conn.execute("UPDATE patients SET phone = %s WHERE id = %s", (e164, pid))
                    mine["new"].append((f"{tag}{i}", e164))
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=old_writer),
            threading.Thread(target=new_writer, args=(new, "NEW")),
        ]
        for t in threads:
            t.start()
        time.sleep(2)  # both releases write for a while, side by side
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(mine["old"]) > 10 and len(mine["new"]) > 10

        # Each release reads the other's writes in its own format.
        seen_by_new = dict(new.execute("SELECT patient_id, phone FROM patients").fetchall())
        for pid, raw in mine["old"]:
            assert seen_by_new[pid] == _e164(raw, "CA")
        seen_by_old = dict(old.execute("SELECT patient_id, phone FROM patients").fetchall())
        for pid, e164 in mine["new"]:
            national = seen_by_old[pid]
            assert not national.startswith("+") and _e164(national, "FR") == e164
        for pid, raw in mine["old"]:
            assert seen_by_old[pid] == raw  # the old release's text is kept as entered

    # The old release is gone: a plain up runs the contract while the new one keeps writing.
    stop.clear()
    mine["new"].clear()
    writer = threading.Thread(target=new_writer, args=(new, "AFTER"))
    writer.start()
    try:
        done = run_cli("patient", "up", "--version", str(CONTRACT), "--url", db)
    finally:
        time.sleep(0.3)
        stop.set()
        writer.join()
    assert done.exit_code == 0, done.output
    assert history(db) == [v for v in versions("patient") if v <= CONTRACT]
    assert not errors, errors
    assert new.info.backend_pid == new_pid  # no reconnect
    after = dict(new.execute("SELECT patient_id, phone FROM patients").fetchall())
    assert all(after[pid] == e164 for pid, e164 in mine["new"])
    assert query(db, "SELECT count(*) FROM patients WHERE patient_id LIKE 'AFTER%%'")[0][0] > 0
    new.close()


def test_views_are_updatable_and_security_invoker(db: str) -> None:
    assert (
        run_cli(
            "patient", "up", "--hold-contract", "--version", str(CONTRACT), "--url", db
        ).exit_code
        == 0
    )
    with _new_release(db) as new:
        (pid, phone) = new.execute(
            INSERT.replace("RETURNING id", "RETURNING id, phone"), ("V1", "USA", "+12125550123")
        ).fetchone()
        assert phone == "+12125550123" and pid is not None  # the table's identity default
        new.execute("UPDATE patients SET phone = '+12125550124' WHERE id = %s", (pid,))
        ((national,),) = query(db, "SELECT phone FROM public.patients WHERE id = %s", (pid,))
        assert not national.startswith("+") and _e164(national, "US") == "+12125550124"
        new.execute("DELETE FROM patients WHERE id = %s", (pid,))
        assert query(db, "SELECT count(*) FROM public.patients") == [(0,)]
    views = query(
        db,
        "SELECT c.relname, c.reloptions FROM pg_class c WHERE c.relnamespace = %s::regnamespace"
        " AND c.relkind = 'v'",
        (SCHEMA,),
    )
    assert views and all("security_invoker=true" in (opts or []) for _, opts in views)
    updatable = query(
        db,
        "SELECT table_name, is_insertable_into FROM information_schema.tables"
        " WHERE table_schema = %s",
        (SCHEMA,),
    )
    assert dict(updatable)["patients"] == "YES"


def test_row_level_security_applies_through_the_views(db: str) -> None:
    assert (
        run_cli(
            "patient", "up", "--hold-contract", "--version", str(CONTRACT), "--url", db
        ).exit_code
        == 0
    )
    for entity in (1, 2):
        query(
            db,
            INSERT.replace("VALUES (1,", f"VALUES ({entity},"),
            (f"E{entity}", "USA", "(212) 555-0100"),
        )
    role = f"clinic_{uuid.uuid4().hex[:12]}"
    query(
        db,
        f"CREATE ROLE {role} LOGIN PASSWORD 'clinic-pw'; GRANT USAGE ON SCHEMA {SCHEMA} TO {role};"
        f" GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {role};"
        f" GRANT SELECT ON public.patients TO {role};"
        " ALTER TABLE public.patients ENABLE ROW LEVEL SECURITY;"
        f" CREATE POLICY one_clinic ON public.patients TO {role}"
        " USING (healthcare_entity_id = 1)",
    )
    try:
        # The clinic's application logs in as a role of its own.
        with psycopg.connect(as_owner(db, role, "clinic-pw"), autocommit=True) as conn:
            seen = conn.execute(f"SELECT patient_id FROM {SCHEMA}.patients").fetchall()
        assert seen == [("E1",)]
    finally:
        query(db, "DROP POLICY one_clinic ON public.patients")
        query(as_superuser(db), f"DROP OWNED BY {role}; DROP ROLE {role}")


@pytest.mark.parametrize(
    ("announced", "runs"),
    [
        (f"patient@{OLD}", False),  # an old release: the contract waits
        (f"patient@{EXPAND}", False),  # built for the expand step: still the old columns
        (f"patient@{CONTRACT}", True),  # a new release
        ("psql", True),  # unannounced: listed, not counted
        (f"user@{OLD}", True),  # another service's announcement means nothing here
    ],
)
def test_a_plain_up_runs_the_contract_once_no_session_announces_an_older_version(
    db: str, announced: str, runs: bool
) -> None:
    assert run_cli("patient", "up", "--version", str(EXPAND), "--url", db).exit_code == 0
    with release(db, announced) as other:
        result = run_cli("patient", "up", "--version", str(CONTRACT), "--url", db)
        status = run_cli("patient", "status", "--json", "--url", db)
        pid = other.info.backend_pid
    assert result.exit_code == 0, result.output
    assert (history(db)[-1] == CONTRACT) is runs
    if runs:
        if "@" not in announced or not announced.startswith("patient@"):
            assert f"pid {pid} ({announced})" in result.stderr  # listed beside the contract
    else:
        assert (
            "held back by 1 session(s)" in result.stdout
            and f"pid {pid} ({announced})" in result.stdout
        )
        report = json.loads(status.stdout)
        assert report["held"] == [v for v in versions("patient") if v >= CONTRACT]
        assert [h["pid"] for h in report["holders"]] == [pid]


def test_forced_and_held_contracts(db: str) -> None:
    assert run_cli("patient", "up", "--version", str(EXPAND), "--url", db).exit_code == 0
    both = run_cli("patient", "up", "--contract", "--hold-contract", "--url", db)
    assert both.exit_code == 2 and history(db)[-1] == EXPAND
    held = run_cli("patient", "up", "--hold-contract", "--version", str(CONTRACT), "--url", db)
    assert held.exit_code == 0 and "(--hold-contract)" in held.stdout and history(db)[-1] == EXPAND
    with release(db, f"patient@{OLD}"):
        forced = run_cli("patient", "up", "--contract", "--version", str(CONTRACT), "--url", db)
    assert forced.exit_code == 0 and history(db)[-1] == CONTRACT


def test_later_work_behind_a_held_contract_fails_until_the_old_release_goes(
    project_copy: Path, db: str
) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    later = add_step(
        project_copy, "patient", "    op.execute('ALTER TABLE patients ADD COLUMN nickname text')"
    )
    assert run_cli("patient", "up", "--version", str(OLD), "--url", db, env=env).exit_code == 0
    with release(db, f"patient@{OLD}") as old:
        stranded = run_cli("patient", "up", "--url", db, env=env)
        pid = old.info.backend_pid
    assert stranded.exit_code == 1
    lines = stranded.stderr.strip().splitlines()
    assert len(lines[-1:]) == 1 and f"{later}" in lines[-1]
    assert (
        f"wait for contract step {CONTRACT}" in lines[-1]
        and f"pid {pid} (patient@{OLD})" in lines[-1]
    )
    assert history(db) == [v for v in versions("patient") if v <= EXPAND]  # the expand ran
    done = run_cli("patient", "up", "--url", db, env=env)
    assert done.exit_code == 0, done.output
    assert history(db) == versions("patient", project_copy)
    # The pass-through views follow the tables after later steps.
    columns = query(
        db,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = 'patients'",
        (SCHEMA,),
    )
    assert ("nickname",) in columns


def test_wait_rides_out_the_old_release(project_copy: Path, db: str) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    add_step(project_copy, "patient", "    op.execute('SELECT 1')")
    assert run_cli("patient", "up", "--version", str(EXPAND), "--url", db, env=env).exit_code == 0
    old = psycopg.connect(db, autocommit=True, application_name=f"patient@{OLD}")
    waiter = Spawned(migrate_cmd("patient", "up", "--url", db, "--wait", "60"), env=env)
    waiter.wait_for(f"contract step {CONTRACT} held back")
    assert history(db)[-1] == EXPAND
    old.close()
    code, _out, err = waiter.finish()
    assert code == 0, err
    assert history(db) == versions("patient", project_copy)


def test_downgrades_across_the_pair_leave_no_version_schema(db: str) -> None:
    assert run_cli("patient", "up", "--version", str(CONTRACT), "--url", db).exit_code == 0
    assert _version_schemas(db) == [SCHEMA]
    assert run_cli("patient", "down", "--version", str(CONTRACT), "--url", db).exit_code == 0
    assert _version_schemas(db) == [SCHEMA]  # back to pending: the new release still runs
    with _new_release(db) as new:
        new.execute(INSERT, ("BACK", "Morocco", "+212612345678"))
    assert query(db, "SELECT phone FROM public.patients WHERE patient_id = 'BACK'") != [(None,)]
    assert run_cli("patient", "down", "--version", str(EXPAND), "--url", db).exit_code == 0
    assert _version_schemas(db) == []
    assert query(db, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (SCHEMA,)) == [(0,)]


@pytest.mark.parametrize("name", sorted(services.discover(ROOT)))
def test_each_contract_declaration_matches_what_its_step_does(name: str, server: str) -> None:
    """The views before a contract step show exactly the columns the tables have after it."""
    from conftest import create_database, drop_database

    service = services.get(name, ROOT)
    for m in (m for m in service.migrations if m.phase == "contract"):
        url = create_database(server)
        try:
            before = [v for v in versions(name) if v < m.version][-1]
            assert run_cli(name, "up", "--version", str(before), "--url", url).exit_code == 0
            schema = releases.schema_name(name, m.version)
            shown = _view_columns(url, schema)
            assert run_cli(name, "up", "--version", str(m.version), "--url", url).exit_code == 0
            for table, spec in m.contract.items():
                hidden = set(spec.get("hide", []))
                after = [c for c in _table_columns(url, table) if c not in hidden]
                assert sorted(shown[table]) == sorted(after), (m.version, table)
            assert _view_columns(url, schema) == shown  # the same views, no redeploy
        finally:
            drop_database(server, url)


def _view_columns(url: str, schema: str) -> dict[str, list[str]]:
    rows = query(
        url,
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s"
        " ORDER BY table_name, ordinal_position",
        (schema,),
    )
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(table, []).append(column)
    return found


def _table_columns(url: str, table: str) -> list[str]:
    rows = query(
        url,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return [r[0] for r in rows]


def test_release_url_announces_the_version_and_selects_its_schema(db: str) -> None:
    assert (
        run_cli(
            "patient", "up", "--hold-contract", "--version", str(CONTRACT), "--url", db
        ).exit_code
        == 0
    )
    url = releases.release_url(db, "patient", CONTRACT, version_schema=True)
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW application_name").fetchone() == (f"patient@{CONTRACT}",)
        assert conn.execute("SHOW search_path").fetchone() == (SCHEMA,)
        assert conn.execute("SELECT count(*) FROM patients").fetchone() == (0,)


def test_the_new_release_keeps_writing_through_its_schema_at_the_head(db: str) -> None:
    """Later steps' triggers run for writes through the version schema too (their functions
    must not depend on the writer's search_path)."""
    assert run_cli("patient", "up", "--url", db).exit_code == 0
    assert history(db) == versions("patient")
    with _new_release(db) as new:
        (pid,) = new.execute(INSERT, ("HEAD1", "Morocco", "+212612345678")).fetchone()
        new.execute("UPDATE patients SET phone = '+212612345679' WHERE id = %s", (pid,))
        assert new.execute("SELECT phone FROM patients WHERE id = %s", (pid,)).fetchone() == (
            "+212612345679",
        )


def test_what_the_new_release_writes_is_read_as_a_number_never_kept_as_garbage(db: str) -> None:
    assert run_cli("patient", "up", "--version", str(EXPAND), "--url", db).exit_code == 0
    with _new_release(db) as new:
        for pid, country, written in (
            ("G1", "Canada", "514 555 0199 x12"),  # not E.164, but a number: converted
            ("G2", "canada", "+15145550188"),  # a country spelled another way
            ("G3", "France", "garbage"),  # no number: NULL on the new side
        ):
            new.execute(INSERT, (pid, country, written))
        new.execute("UPDATE patients SET phone = NULL WHERE patient_id = 'G1'")
    rows = {
        r[0]: r[1:]
        for r in query(
            db, "SELECT patient_id, phone_e164, phone_extension, phone FROM public.patients"
        )
    }
    assert rows["G1"][:2] == (None, None)  # cleared: the extension goes with the number
    assert rows["G2"][:2] == ("+15145550188", None)
    assert not rows["G2"][2].startswith("+") and _e164(rows["G2"][2], "CA") == "+15145550188"
    assert rows["G3"] == (None, None, "garbage")  # kept as entered, for the old release
    assert run_cli("patient", "up", "--version", str(CONTRACT), "--url", db).exit_code == 0
    with _new_release(db) as new, pytest.raises(psycopg.errors.CheckViolation):
        new.execute(INSERT, ("G4", "France", "06 12 34 56 78"))  # after the contract: E.164 only
