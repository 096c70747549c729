"""Tenant isolation enforced by the database (issue 14): row-level security, roles, the lint
rule, drift, logins. Every test runs against real PostgreSQL; roles are cluster-wide, so
logins made here have unique names and are dropped again."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import (
    OWNER,
    ROOT,
    SERVICES,
    add_step,
    as_owner,
    as_superuser,
    copied_service,
    create_database,
    drop_database,
    peers,
    query,
    run_cli,
    samples,
    says,
    settings,
    versions,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from psycopg import errors
from psycopg import sql as psql

from alembic_common.authoring import lint
from alembic_common.core import runner, services
from alembic_common.errors import UsageError
from alembic_common.tenancy import rls as tenancy

CONTRACT = runner.RunOptions(contract=True)

ENTITY_A, ENTITY_B = 1, 2


def tenant_tables(url: str) -> list[str]:
    rows = query(
        url,
        "SELECT c.relname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c"
        " ON c.oid = a.attrelid WHERE c.relnamespace = 'public'::regnamespace"
        " AND c.relkind = 'r' AND a.attname = 'healthcare_entity_id' AND NOT a.attisdropped"
        " ORDER BY 1",
    )
    return [r[0] for r in rows]


def at_head(name: str, url: str) -> None:
    runner.up(services.get(name, ROOT), settings(name, url), options=CONTRACT, peers=peers)


def rls_version(name: str) -> int:
    """The version that isolates tenants: the first that calls ``isolate``."""
    for m in services.get(name, ROOT).migrations:
        if re.search(r"\bisolate\(", m.path.read_text()):
            return m.version
    raise AssertionError(f"{name} has no migration calling isolate")


# Each service's tenant tables, from the rows its folder's samples.py gives for them (a tenant
# table of a service without a template there fails test_every_tenant_table_is_covered).
CASES = [(name, table) for name in SERVICES for table in samples(name).tenant_rows]


def row(name: str, table: str) -> str:
    """The INSERT of one row of ``table`` for entity %(e)s, unique by %(k)s and %(n)s."""
    return samples(name).tenant_rows[table]


def touch(name: str, table: str) -> str:
    """A column every row of ``table`` leaves writable, to update rows without their tenant."""
    return samples(name).writable[table]


def seed(url: str, name: str, table: str, entity: int, count: int, tag: str = "") -> None:
    """``count`` rows of ``entity`` in ``table``, written by the owner (superuser here)."""
    if table in samples(name).tenant_setup:
        query(url, samples(name).tenant_setup[table], {"e": entity})
    for i in range(count):
        query(
            url, row(name, table), {"e": entity, "k": f"{tag}{entity}-{i}", "n": entity * 1000 + i}
        )


@contextmanager
def as_app(url: str, service: str, entity: int | None = None) -> Iterator[psycopg.Connection[Any]]:
    """A session acting as ``<service>_app`` (SET ROLE from the superuser), bound to
    ``entity`` with tenancy.set_entity when given."""
    with psycopg.connect(as_superuser(url), autocommit=True) as conn:
        conn.execute(psql.SQL("SET ROLE {}").format(psql.Identifier(tenancy.app_role(service))))
        if entity is not None:
            tenancy.set_entity(conn, entity)
        yield conn


@pytest.fixture(scope="module")
def heads(server: str) -> Iterator[dict[str, str]]:
    """One database per service at head, with rows of entities A and B in each tenant table."""
    urls = {}
    for name in SERVICES:
        urls[name] = create_database(server)
        at_head(name, urls[name])
        for table in samples(name).tenant_rows:
            seed(urls[name], name, table, ENTITY_A, 3)
            seed(urls[name], name, table, ENTITY_B, 2)
    yield urls
    for url in urls.values():
        drop_database(server, url)


@pytest.mark.parametrize("name", SERVICES)
def test_every_tenant_table_is_covered(name: str, heads: dict[str, str]) -> None:
    covered = sorted(t for n, t in CASES if n == name)
    assert tenant_tables(heads[name]) == covered, (
        f"{name}: give the table a row in services/{name}/samples.py"
    )


@pytest.mark.parametrize(("name", "table"), CASES)
def test_tenant_table_has_rls_enabled_and_forced(
    name: str, table: str, heads: dict[str, str]
) -> None:
    flags = query(
        heads[name],
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
        [table],
    )
    assert flags == [(True, True)]


@pytest.mark.parametrize(("name", "table"), CASES)
def test_without_an_entity_nothing_is_visible(name: str, table: str, heads: dict[str, str]) -> None:
    assert query(heads[name], f"SELECT count(*) FROM {table}") == [(5,)]  # the owner sees all
    with as_app(heads[name], name) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        tenancy.set_entity(conn, None)  # reset to '' also fails closed
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        assert conn.execute(f"UPDATE {table} SET {touch(name, table)} = 'x'").rowcount == 0


@pytest.mark.parametrize(("name", "table"), CASES)
def test_an_entity_sees_and_changes_only_its_rows_even_without_a_filter(
    name: str, table: str, heads: dict[str, str], server: str
) -> None:
    url = heads[name]
    before_b = query(
        url, f"SELECT * FROM {table} WHERE healthcare_entity_id = %s ORDER BY id", [ENTITY_B]
    )
    with as_app(url, name, ENTITY_A) as conn:
        seen = conn.execute(f"SELECT DISTINCT healthcare_entity_id FROM {table}").fetchall()
        assert seen == [(ENTITY_A,)]
        with conn.transaction(force_rollback=True):
            # the tenant filter forgotten: only A's three rows change
            updated = conn.execute(f"UPDATE {table} SET {touch(name, table)} = 'changed'").rowcount
            assert updated == 3
            assert conn.execute(f"DELETE FROM {table}").rowcount == 3
    after_b = query(
        url, f"SELECT * FROM {table} WHERE healthcare_entity_id = %s ORDER BY id", [ENTITY_B]
    )
    assert after_b == before_b


@pytest.mark.parametrize(("name", "table"), CASES)
def test_writing_a_row_of_another_entity_fails(
    name: str, table: str, heads: dict[str, str]
) -> None:
    with as_app(heads[name], name, ENTITY_A) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(row(name, table), {"e": ENTITY_B, "k": "intruder", "n": 999_999})
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(f"UPDATE {table} SET healthcare_entity_id = %s", [ENTITY_B])
        with conn.transaction(force_rollback=True):  # its own entity: accepted
            conn.execute(row(name, table), {"e": ENTITY_A, "k": "own", "n": 999_998})


@pytest.mark.parametrize(("name", "table"), CASES)
@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE {t} ADD COLUMN shoe_size int",
        "TRUNCATE {t}",
        "DROP TABLE {t}",
        "ALTER TABLE {t} DISABLE ROW LEVEL SECURITY",
        "DROP POLICY {t}_tenant ON {t}",
        "CREATE INDEX ON {t} (id)",
    ],
)
def test_ddl_fails_for_the_app_role(
    name: str, table: str, statement: str, heads: dict[str, str]
) -> None:
    with as_app(heads[name], name, ENTITY_A) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement.format(t=table))


@pytest.mark.parametrize("name", sorted({n for n, _ in CASES}))
def test_the_app_role_has_dml_only(name: str, heads: dict[str, str]) -> None:
    role = tenancy.app_role(name)
    attrs = query(
        heads[name],
        "SELECT rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
        " WHERE rolname = %s",
        [role],
    )
    assert attrs == [(False, False, False, False, False)]
    owned = query(heads[name], "SELECT count(*) FROM pg_class WHERE relowner = %s::regrole", [role])
    assert owned == [(0,)]
    granted = query(
        heads[name],
        "SELECT c.relname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE a.grantee = %s::regrole AND c.relnamespace = 'public'::regnamespace"
        " ORDER BY 1, 2",
        [role],
    )
    kinds = {p for _, p in granted}
    assert kinds <= {"SELECT", "INSERT", "UPDATE", "DELETE", "USAGE"}, granted
    assert not {"schema_migrations", "alembic_version"} & {t for t, _ in granted}


def test_an_entity_reads_only_its_own_healthcare_entity(heads: dict[str, str]) -> None:
    url = heads["user"]
    with as_app(url, "user", ENTITY_A) as conn:
        assert conn.execute("SELECT id FROM healthcare_entities").fetchall() == [(ENTITY_A,)]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE healthcare_entities SET name = 'mine now'")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO healthcare_entities (name, type, country) VALUES ('x', 'clinic', 'USA')"
            )
    with as_app(url, "user") as conn:
        assert conn.execute("SELECT count(*) FROM healthcare_entities").fetchone() == (0,)


def test_the_lookup_table_and_version_schema_views_are_readable_by_patient_app(
    heads: dict[str, str],
) -> None:
    url = heads["patient"]
    schemas = [
        r[0]
        for r in query(url, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'patient\\_v%'")
    ]
    assert schemas, "no version schema at head"
    with as_app(url, "patient", ENTITY_A) as conn:
        assert conn.execute("SELECT count(*) > 0 FROM patient_phone_rules").fetchone() == (True,)
        for schema in schemas:
            # security_invoker views: the table's RLS applies through them
            rows = conn.execute(
                f"SELECT DISTINCT healthcare_entity_id FROM {schema}.patients"
            ).fetchall()
            assert rows == [(ENTITY_A,)]
    with as_app(url, "patient") as conn:
        assert conn.execute(f"SELECT count(*) FROM {schemas[0]}.patients").fetchone() == (0,)


@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(1, 2**62),
            st.text(
                st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12
            ),
        ),
        min_size=0,
        max_size=30,
    ),
    probe=st.integers(1, 2**62),
)
def test_random_entities_see_exactly_their_rows(
    heads: dict[str, str], rows: list[tuple[int, str]], probe: int
) -> None:
    url = heads["patient"]
    entities = sorted({e for e, _ in rows} | {probe})
    with psycopg.connect(url) as owner:
        owner.execute("DELETE FROM patients WHERE patient_id LIKE 'hyp-%'")
        for i, (entity, name) in enumerate(rows):
            owner.execute(
                row("patient", "patients").replace("'Ana'", "%(f)s"),
                {"e": entity, "k": f"hyp-{i}", "f": name},
            )
        owner.commit()
    try:
        with as_app(url, "patient") as conn:
            for entity in entities:
                with conn.transaction():
                    tenancy.set_entity(conn, entity, local=True)
                    seen = conn.execute(
                        "SELECT healthcare_entity_id, first_name FROM patients"
                        " WHERE patient_id LIKE 'hyp-%' ORDER BY patient_id"
                    ).fetchall()
                expected = [
                    (e, n)
                    for i, (e, n) in sorted(enumerate(rows), key=lambda r: f"hyp-{r[0]}")
                    if e == entity
                ]
                assert seen == expected
                # set_entity(local=True) ended with the transaction
                assert conn.execute("SELECT count(*) FROM patients").fetchone() == (0,)
    finally:
        query(url, "DELETE FROM patients WHERE patient_id LIKE 'hyp-%'")


# --- drift ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("DROP POLICY patients_tenant ON patients", "missing policy patients.patients_tenant"),
        (
            "ALTER TABLE patients NO FORCE ROW LEVEL SECURITY",
            "changed row security patients.row level security",
        ),
        (
            "ALTER TABLE patients DISABLE ROW LEVEL SECURITY",
            "missing row security patients.row level security",
        ),
        (
            "ALTER POLICY patients_tenant ON patients USING (true)",
            "changed policy patients.patients_tenant",
        ),
        ("GRANT TRUNCATE ON patients TO patient_app", "changed grant patients.patient_app"),
        ("GRANT SELECT ON patients TO PUBLIC", "unexpected grant patients.PUBLIC"),
    ],
)
def test_check_and_diff_report_tenancy_drift_made_by_hand(
    db: str, damage: str, expected: str
) -> None:
    at_head("patient", db)
    assert run_cli("patient", "check", "--url", db).exit_code == 0
    query(db, damage)
    checked = run_cli("patient", "check", "--url", db)
    assert checked.exit_code == 1 and expected in checked.stdout, checked.output
    report = json.loads(run_cli("patient", "diff", "--url", db, "--json").stdout)
    for statement in report["drift_sql"]:  # the suggested SQL repairs it
        query(db, statement)
    repaired = run_cli("patient", "check", "--url", db)
    assert repaired.exit_code == 0, repaired.output


# --- lint -------------------------------------------------------------------------------------

TENANT_TABLE = (
    "    op.execute('CREATE TABLE invoices (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " healthcare_entity_id bigint NOT NULL, total numeric NOT NULL)')\n"
)


@pytest.mark.parametrize("name", SERVICES)
def test_lint_finds_a_tenant_table_added_without_rls(name: str, project_copy: Path) -> None:
    version = add_step(project_copy, name, TENANT_TABLE, "Add invoices")
    found = lint.lint(copied_service(project_copy, name), [version])
    assert [f.rule for f in found if f.accepted is None] == [lint.TENANT_RULE], found


def test_lint_accepts_a_tenant_table_isolated_in_the_same_migration(project_copy: Path) -> None:
    body = TENANT_TABLE + "    tenancy.isolate('invoices', 'patient')\n"
    version = add_step(project_copy, "patient", body, header="from alembic_common import tenancy\n")
    assert lint.lint(copied_service(project_copy, "patient"), [version]) == []


def test_lint_finds_a_policy_without_force_and_the_cli_fails(project_copy: Path) -> None:
    body = (
        TENANT_TABLE
        + "    op.execute('ALTER TABLE invoices ENABLE ROW LEVEL SECURITY')\n"
        + "    op.execute('CREATE POLICY p ON invoices USING (true)')\n"
        + "    op.execute('ALTER TABLE patients ADD COLUMN healthcare_entity_id_old bigint')\n"
    )
    add_step(project_copy, "patient", body)
    env = {"MIGRATE_ROOT": str(project_copy)}
    result = run_cli("patient", "lint", "--all", env=env)
    assert result.exit_code == 1
    assert (
        "tenant-table-without-rls: invoices" in result.stdout
        and "FORCE ROW LEVEL SECURITY" in result.stdout
    )


def test_lint_finds_a_tenant_column_added_to_an_existing_table() -> None:
    found = lint.tenant_findings(
        ["ALTER TABLE public.notes ADD COLUMN healthcare_entity_id bigint"]
    )
    assert [(r, m.split()[0]) for r, m, _ in found] == [(lint.TENANT_RULE, "notes")]


def test_lint_accepted_reason_accepts_the_rule_in_the_first_versions() -> None:
    for name in sorted({n for n, _ in CASES}):
        first = services.get(name, ROOT).migrations[0]
        assert lint.TENANT_RULE in first.lint_accepted, f"{name} v1"
        assert says(first.lint_accepted[lint.TENANT_RULE], f"version {rls_version(name)}")


# --- round trips and roles ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted({n for n, _ in CASES}))
def test_round_trip_through_the_rls_step_keeps_rows_and_roles(name: str, db: str) -> None:
    service, conf = services.get(name, ROOT), settings(name, db)
    step = rls_version(name)
    runner.up(service, conf, target=step - 1, options=CONTRACT, peers=peers)
    (table, *_) = samples(name).tenant_rows
    seed(db, name, table, ENTITY_A, 2)
    before = query(db, f"SELECT * FROM {table} ORDER BY id")
    runner.up(service, conf, target=step, options=CONTRACT, peers=peers)
    runner.down(service, conf, step)
    assert query(db, f"SELECT relrowsecurity FROM pg_class WHERE oid = '{table}'::regclass") == [
        (False,)
    ]
    assert query(db, "SELECT count(*) FROM pg_policy") == [(0,)]
    runner.up(service, conf, target=step, options=CONTRACT, peers=peers)
    assert query(db, f"SELECT * FROM {table} ORDER BY id") == before


# --- logins ----------------------------------------------------------------------------------


@pytest.fixture
def login_name(server: str) -> Iterator[str]:
    name = f"mt_login_{uuid.uuid4().hex[:10]}"
    yield name
    query(server, f"DROP ROLE IF EXISTS {name}")


def test_login_is_idempotent_hides_the_password_and_reads_its_entity(
    heads: dict[str, str], login_name: str, tmp_path: Path
) -> None:
    url = heads["patient"]
    secret = f"pw-{uuid.uuid4().hex}"
    (tmp_path / "pw").write_text(secret + "\n")
    args = (
        "patient",
        "login",
        login_name,
        "--login-password-file",
        str(tmp_path / "pw"),
        "--url",
        url,
    )
    first, second = run_cli(*args), run_cli(*args)
    assert first.exit_code == 0 and "created" in first.stdout, first.output
    assert second.exit_code == 0 and "updated" in second.stdout, second.output
    for result in (first, second):
        assert secret not in result.output
    members = query(
        url,
        "SELECT r.rolcanlogin, r.rolsuper, r.rolbypassrls, pg_has_role(r.oid, 'patient_app', 'USAGE')"
        " FROM pg_roles r WHERE r.rolname = %s",
        [login_name],
    )
    assert members == [(True, False, False, True)]
    stored = query(
        as_superuser(url), "SELECT rolpassword FROM pg_authid WHERE rolname = %s", [login_name]
    )
    assert stored[0][0].startswith("SCRAM-SHA-256$") and secret not in stored[0][0]
    login_url = as_owner(url, login_name, secret)
    with psycopg.connect(
        login_url, autocommit=True, options=f"-c{tenancy.SETTING}={ENTITY_A}"
    ) as conn:
        assert conn.execute("SELECT DISTINCT healthcare_entity_id FROM patients").fetchall() == [
            (ENTITY_A,)
        ]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("TRUNCATE patients")


def test_login_from_an_environment_variable(heads: dict[str, str], login_name: str) -> None:
    url = heads["user"]
    result = run_cli(
        "user",
        "login",
        login_name,
        "--login-password-env",
        "MT_PW",
        "--url",
        url,
        env={"MT_PW": "s3cret-from-env"},
    )
    assert result.exit_code == 0 and "s3cret-from-env" not in result.output, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["Robert'); DROP TABLE patients;--", "--login-password-env", "MT_PW"],
        ["ok_name"],
        ["ok_name", "--login-password-env", "MT_PW", "--login-password-file", "/nonexistent"],
        ["ok_name", "--login-password-env", "MT_UNSET"],
        ["ok_name", "--login-password-file", "/nonexistent/pw"],
        ["postgres", "--login-password-env", "MT_PW"],
        # group roles of the toolkit, reserved and system names: refused before any SQL
        ["user_app", "--login-password-env", "MT_PW"],
        ["patient_app", "--login-password-env", "MT_PW"],
        ["platform_operator", "--login-password-env", "MT_PW"],
        ["public", "--login-password-env", "MT_PW"],
        ["none", "--login-password-env", "MT_PW"],
        ["current_user", "--login-password-env", "MT_PW"],
        ["pg_monitor", "--login-password-env", "MT_PW"],
    ],
)
def test_login_refuses_bad_input_with_exit_2(
    heads: dict[str, str], args: list[str], server: str
) -> None:
    result = run_cli(
        "patient", "login", *args, "--url", heads["patient"], env={"MT_PW": "pw-value"}
    )
    assert result.exit_code == 2, result.output
    assert "pw-value" not in result.output and "SCRAM" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert query(server, "SELECT 1 FROM pg_roles WHERE rolname = 'ok_name'") == []
    if args[0] in ("user_app", "patient_app", "platform_operator"):  # left as they were
        assert query(server, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [args[0]]) in (
            [],
            [(False,)],
        )


def test_plain_identifier_refuses_quoting_tricks() -> None:
    for bad in ['a"b', "A", "1abc", "a b", "x" * 64, ""]:
        with pytest.raises(UsageError):
            tenancy.plain_identifier(bad)
    assert tenancy.plain_identifier("patient_app") == "patient_app"


def test_history_has_one_rls_step_per_service() -> None:
    for name in sorted({n for n, _ in CASES}):
        assert rls_version(name) in versions(name)


# --- a login holds LOGIN and <service>_app, nothing else ----------------------------------------

POWERS = {  # how a role comes to hold more, as the superuser grants it (ROLE: the candidate)
    "superuser": ["ALTER ROLE {role} SUPERUSER"],
    "createdb": ["ALTER ROLE {role} CREATEDB"],
    "createrole": ["ALTER ROLE {role} CREATEROLE"],
    "replication": ["ALTER ROLE {role} REPLICATION"],
    "bypassrls": ["ALTER ROLE {role} BYPASSRLS"],
    "inherits the owner": ["GRANT {owner} TO {role}"],
    "a chain to a predefined role": [
        "CREATE ROLE {role}_mid NOLOGIN",
        "GRANT pg_read_all_data TO {role}_mid",
        "GRANT {role}_mid TO {role}",
    ],
    "the app role WITH ADMIN": ["GRANT patient_app TO {role} WITH ADMIN OPTION"],
    "owns a database": ["CREATE DATABASE {role}_db OWNER {role}"],
    "a grant of its own": ["GRANT SELECT ON patients TO {role}"],
    "owns a table": ["CREATE TABLE {role}_t (id int)", "ALTER TABLE {role}_t OWNER TO {role}"],
}


def _refused_unchanged(url: str, server: str, name: str) -> None:
    """login refuses ``name`` in one line, exit 2, and leaves it exactly as it was."""
    before = query(
        server,
        "SELECT rolpassword, (SELECT array_agg(roleid::regrole::text ORDER BY 1)"
        " FROM pg_auth_members WHERE member = a.oid) FROM pg_authid a WHERE rolname = %s",
        [name],
    )
    result = run_cli(
        "patient", "login", name, "--login-password-env", "MT_PW", "--url", url,
        env={"MT_PW": "pw-value-9"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "nothing was changed" in result.stderr
    assert "pw-value-9" not in result.output
    after = query(
        server,
        "SELECT rolpassword, (SELECT array_agg(roleid::regrole::text ORDER BY 1)"
        " FROM pg_auth_members WHERE member = a.oid) FROM pg_authid a WHERE rolname = %s",
        [name],
    )
    assert after == before


def _drop_candidate(server: str, url: str, name: str) -> None:
    with psycopg.connect(as_superuser(url), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}_t")
        conn.execute(f"REVOKE ALL ON patients FROM {name}")
    query(server, f"DROP DATABASE IF EXISTS {name}_db")
    for role in (name, f"{name}_mid"):
        query(server, f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize("power", sorted(POWERS))
def test_login_refuses_a_role_that_holds_more_than_the_app_role(
    heads: dict[str, str], server: str, power: str
) -> None:
    url = heads["patient"]
    name = f"mt_cand_{uuid.uuid4().hex[:8]}"
    try:
        query(server, f"CREATE ROLE {name} LOGIN")
        with psycopg.connect(as_superuser(url), autocommit=True) as conn:
            for statement in POWERS[power]:
                conn.execute(statement.format(role=name, owner=OWNER))
        _refused_unchanged(url, server, name)
    finally:
        _drop_candidate(server, url, name)


def test_login_refuses_a_member_of_every_predefined_role(
    heads: dict[str, str], server: str
) -> None:
    """The whole class: every predefined role this server has (PostgreSQL 15's and 18's)."""
    url = heads["patient"]
    # pg_database_owner is the one predefined role that can have no members.
    predefined = [
        r
        for (r,) in query(server, "SELECT rolname FROM pg_roles WHERE rolname ~ '^pg_'")
        if r != "pg_database_owner"
    ]
    assert "pg_read_all_data" in predefined and "pg_monitor" in predefined
    for role in predefined:
        name = f"mt_cand_{uuid.uuid4().hex[:8]}"
        try:
            query(server, f"CREATE ROLE {name} LOGIN")
            query(server, f"GRANT {role} TO {name}")
            _refused_unchanged(url, server, name)
        finally:
            _drop_candidate(server, url, name)


def test_login_checks_an_existing_login_again_at_each_run(
    heads: dict[str, str], server: str, login_name: str
) -> None:
    url = heads["patient"]
    args = ("patient", "login", login_name, "--login-password-env", "MT_PW", "--url", url)
    assert run_cli(*args, env={"MT_PW": "pw-1"}).exit_code == 0
    query(server, f"GRANT pg_read_all_data TO {login_name}")
    _refused_unchanged(url, server, login_name)
    query(server, f"REVOKE pg_read_all_data FROM {login_name}")
    assert run_cli(*args, env={"MT_PW": "pw-2"}).exit_code == 0
