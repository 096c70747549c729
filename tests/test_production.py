"""The safety promises where production PostgreSQL runs: a least-privilege owner, PgBouncer
in both pool modes, a streaming standby, URLs of several hosts, passwords from every source.

Everything here runs on the private SCRAM cluster of ``tests/topology.py`` (every login
needs its password). The migrating role ``mt_owner`` owns each test's database, may create
roles and reads every session's activity (``pg_read_all_stats``), and nothing more; the
applications log in as ``mt_app``. Tests about a missing privilege make a role of their own.
Expectations come from the services' histories (their contract and role-creating steps).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import psycopg
import pytest
from conftest import (
    ROOT,
    SERVICES,
    Spawned,
    add_step,
    contract_steps,
    documentation,
    history,
    migrate_cmd,
    peer_env,
    query,
    run_cli,
    run_script,
    says,
    versions,
    wait_until,
)
from psycopg import sql
from topology import POOLED_ROLES, SUPERUSER_PASSWORD, Topology, tcp_url

from alembic_common.core import locking, services
from alembic_common.core.settings import migration_var

OWNER, OWNER_PASSWORD = "mt_owner", POOLED_ROLES["mt_owner"]
APP, APP_PASSWORD = "mt_app", POOLED_ROLES["mt_app"]
MODES = ("session", "transaction")
# A service that needs no other service's database (peers live on the main test server).
PLAIN = next(n for n in SERVICES if not any(m.requires for m in services.get(n, ROOT).migrations))
GATED = [n for n in SERVICES if contract_steps(n)]
ROLE_MAKERS = {
    n: [m.version for m in services.get(n, ROOT).migrations if m.creates_roles] for n in SERVICES
}


class Prod(NamedTuple):
    """One test database on the private cluster, and the ways to reach it."""

    topology: Topology
    name: str

    def direct(
        self, user: str = OWNER, password: str | None = OWNER_PASSWORD, **params: str
    ) -> str:
        assert self.topology.primary is not None
        return self.topology.primary.url(user, password, self.name, **params)

    @property
    def superuser(self) -> str:
        assert self.topology.primary is not None
        return self.topology.primary.url(database=self.name)

    def pooled(self, mode: str, user: str = OWNER) -> str:
        return self.topology.need(mode).url(user, self.name)

    def console(self, mode: str) -> str:
        return str(self.topology.need(mode).admin)

    def two_hosts(self, form: str = "authority", **params: str) -> str:
        """The standby first, then the primary, as an HA URL names them: in the authority
        (``h1:p1,h2:p2``) or, as libpq also takes it, in the query (``?host=h1,h2&port=...``)."""
        standby, primary = self.topology.need("standby"), self.topology.primary
        assert primary is not None
        ports = [standby.port, primary.port]
        if form == "authority":
            return tcp_url(ports, OWNER, OWNER_PASSWORD, self.name, **params)
        hosts = {"host": "127.0.0.1,127.0.0.1", "port": ",".join(map(str, ports))}
        return tcp_url([], OWNER, OWNER_PASSWORD, self.name, **hosts, **params)


@pytest.fixture
def prod(topology: Topology) -> Iterator[Prod]:
    assert topology.primary is not None
    name = f"prod_{uuid.uuid4().hex[:10]}"
    admin = topology.primary.admin
    query(admin, sql.SQL("CREATE DATABASE {} OWNER mt_owner").format(sql.Identifier(name)))
    yield Prod(topology, name)
    query(admin, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def lesser_owner(topology: Topology, prod: Prod) -> Iterator[tuple[str, str, str]]:
    """A migrating role with less than docs/reference.md asks for (LOGIN and ownership only; a
    test grants what it is about), owning the test's database: (role, password, URL)."""
    role, password = f"owner_{uuid.uuid4().hex[:8]}", "Lesser pw 9"
    admin = prod.superuser
    query(
        admin,
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        ),
    )
    query(
        admin,
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(prod.name), sql.Identifier(role)
        ),
    )
    yield role, password, prod.direct(role, password)
    query(admin, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    query(
        admin,
        sql.SQL("ALTER DATABASE {} OWNER TO mt_owner").format(sql.Identifier(prod.name)),
    )
    assert prod.topology.primary is not None
    query(prod.topology.primary.admin, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def app_session(url: str, announce: str) -> psycopg.Connection[Any]:
    """An application's session that announces its release, with one query run."""
    conn = psycopg.connect(url, autocommit=True, application_name=announce)
    conn.execute("SELECT 1")
    return conn


def before(name: str, contract: int) -> list[int]:
    return [v for v in versions(name) if v < contract]


def advisory_locks(prod: Prod) -> list[tuple[Any, ...]]:
    return query(
        prod.superuser,
        "SELECT l.pid, l.classid, l.objid FROM pg_locks l JOIN pg_database d"
        " ON d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = %s",
        [prod.name],
    )


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("migrate: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --- the contract gate ------------------------------------------------------------------


@pytest.mark.parametrize("name", GATED)
def test_the_gate_refuses_when_the_owner_cannot_see_other_roles_sessions(
    name: str, prod: Prod, lesser_owner: tuple[str, str, str]
) -> None:
    """Without pg_read_all_stats an old release logged in as another role is invisible: the
    run refuses before changing anything, naming the grant; with it, the contract holds."""
    role, _, url = lesser_owner
    contract = contract_steps(name)[0]
    query(prod.superuser, sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(role)))
    with app_session(prod.direct(APP, APP_PASSWORD), f"{name}@{before(name, contract)[-1]}"):
        blind = run_cli(name, "up", "--url", url)
        assert blind.exit_code == 1, blind.output
        line = one_line(blind.stderr)
        assert says(line, f"GRANT pg_read_all_stats TO {role}") and "nothing was changed" in line
        assert history(prod.superuser) == []
        status = run_cli(name, "status", "--url", url, "--json")
        assert status.exit_code == 0, status.output
        assert says(status.stdout, f"GRANT pg_read_all_stats TO {role}")
        query(prod.superuser, sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(role)))
        seeing = run_cli(name, "up", "--url", url, "--version", str(contract))
        assert seeing.exit_code == 0, seeing.output
        assert history(prod.superuser) == before(name, contract)
        assert "held back by 1 session(s)" in seeing.output and APP not in seeing.output


@pytest.mark.parametrize("name", GATED)
def test_the_superuser_sees_the_old_release_without_any_grant(name: str, prod: Prod) -> None:
    contract = contract_steps(name)[0]
    with app_session(prod.direct(APP, APP_PASSWORD), f"{name}@{before(name, contract)[-1]}"):
        result = run_cli(name, "up", "--url", prod.superuser, "--version", str(contract))
    assert result.exit_code == 0, result.output
    assert history(prod.superuser) == before(name, contract)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", GATED)
def test_the_gate_counts_the_clients_of_each_pool(name: str, mode: str, prod: Prod) -> None:
    """An old release behind PgBouncer holds the contract when its console is listed. In
    transaction mode the server shows only whichever client used a connection last: the
    old release is not in pg_stat_activity at all, and only the console tells."""
    contract = contract_steps(name)[0]
    pooled = prod.topology.need(mode)
    env = {"MIGRATE_POOLER_URLS": prod.console(mode)}
    assert (
        run_cli(name, "up", "--url", prod.direct(), "--version", str(contract - 1)).exit_code == 0
    )
    old = app_session(pooled.url(APP, prod.name), f"{name}@{before(name, contract)[-1]}")
    new = app_session(pooled.url(APP, prod.name), f"{name}@{contract}")
    try:
        shown = {
            r[0] for r in query(prod.superuser, "SELECT application_name FROM pg_stat_activity")
        }
        if mode == "transaction":
            assert f"{name}@{before(name, contract)[-1]}" not in shown, shown
        held = run_cli(name, "up", "--url", prod.direct(), "--version", str(contract), env=env)
        assert held.exit_code == 0, held.output
        assert history(prod.superuser) == before(name, contract)
        assert says(held.output, f"via the pooler 127.0.0.1:{pooled.port}")
        status = run_cli(name, "status", "--url", prod.direct(), "--json", env=env)
        report = __import__("json").loads(status.stdout)
        assert [h["pooler"] for h in report["holders"]] == [f"127.0.0.1:{pooled.port}"]
        old.close()
        wait_until(
            lambda: len(pooled.show("CLIENTS")) == 2, "the old release's client to leave"
        )  # the new release's client, and the console's own
        ran = run_cli(name, "up", "--url", prod.direct(), "--version", str(contract), env=env)
        assert ran.exit_code == 0, ran.output
        assert history(prod.superuser) == [v for v in versions(name) if v <= contract]
    finally:
        old.close()
        new.close()


@pytest.mark.parametrize("name", GATED)
def test_an_unreachable_pooler_holds_the_contract(name: str, prod: Prod) -> None:
    from topology import free_port

    contract = contract_steps(name)[0]
    gone = f"postgresql://pgb_admin:x@127.0.0.1:{free_port()}/pgbouncer"
    result = run_cli(
        name, "up", "--url", prod.direct(), "--version", str(contract),
        env={"MIGRATE_POOLER_URLS": gone},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert history(prod.superuser) == before(name, contract)
    assert "cannot be read" in result.output and "MIGRATE_POOLER_URLS" in result.output


def test_a_console_url_that_is_no_console_is_a_usage_error(prod: Prod) -> None:
    result = run_cli(
        "user", "status", "--url", prod.direct(), env={"MIGRATE_POOLER_URLS": prod.direct()}
    )
    assert result.exit_code == 2
    assert "database pgbouncer" in one_line(result.stderr)
    assert OWNER_PASSWORD not in result.output


# --- poolers in front of the migration --------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "command",
    [["up"], ["status"], ["down", "--version", "1"], ["backup"], ["seed"], ["rehearse"]],
)
def test_through_a_pool_every_command_refuses_and_leaves_nothing(
    mode: str, command: list[str], prod: Prod, tmp_path: Path
) -> None:
    name = PLAIN
    pooled = prod.pooled(mode)
    env = {"MIGRATE_BACKUP_DIR": str(tmp_path)}
    result = run_cli(name, *command, "--url", pooled, env=env)
    assert result.exit_code == 1, result.output
    line = one_line(result.stderr)
    assert "connection pooler" in line and migration_var(name) in line
    assert OWNER_PASSWORD not in result.output
    assert history(prod.superuser) == [] and advisory_locks(prod) == []
    assert list(tmp_path.iterdir()) == []
    # Nothing of ours stayed on the pool's server connection: the next client of the pool
    # finds the database's own search_path.
    with psycopg.connect(pooled, autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)


def test_wait_through_a_pool_refuses_at_once(prod: Prod) -> None:
    """A pooler is not a database still starting: waiting out --timeout cannot help."""
    started = time.monotonic()
    result = run_cli(PLAIN, "wait", "--url", prod.pooled("transaction"), "--timeout", "120")
    assert result.exit_code == 1 and "connection pooler" in result.stderr, result.output
    assert "not ready" not in result.stderr and time.monotonic() - started < 60


@pytest.mark.parametrize("listed", ["--targets-file", "DATABASE_URLS"])
def test_a_fleet_target_through_a_pool_is_told_where_to_fix_it(
    listed: str, prod: Prod, tmp_path: Path
) -> None:
    """The way out is where the URL came from: the targets file, or the list of direct
    URLs beside the application's (a single migration URL would make the run one database)."""
    name = PLAIN
    pooled = prod.pooled("transaction")
    if listed == "--targets-file":
        (tmp_path / "targets").write_text(f"{pooled}\n")
        args, env, says = ["--targets-file", str(tmp_path / "targets")], {}, "in the targets file"
    else:
        args, env = [], {f"{name.upper()}_DATABASE_URLS": pooled}
        says = f"set {migration_var(name)}S to the servers' own addresses"
    result = run_cli(name, "up", *args, env=env)
    assert result.exit_code == 1, result.output
    assert "connection pooler" in result.output and says in result.output, result.output
    assert f"set {migration_var(name)} " not in result.output
    assert history(prod.superuser) == []


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_runners_through_a_pool_refuse_and_leave_no_lock(mode: str, prod: Prod) -> None:
    name = PLAIN
    runs = [Spawned(migrate_cmd(name, "up", "--url", prod.pooled(mode))) for _ in range(4)]
    finished = [r.finish() for r in runs]
    assert [code for code, _, _ in finished] == [1] * 4, finished
    assert all("connection pooler" in err for _, _, err in finished)
    assert history(prod.superuser) == [] and advisory_locks(prod) == []


@pytest.mark.parametrize("mode", MODES)
def test_the_migration_url_wins_over_the_pooled_one(mode: str, prod: Prod) -> None:
    """Replicas started with the application's pooled URL and the direct migration URL:
    every version is applied once, and no advisory lock is left behind."""
    name = PLAIN
    env = {
        f"{name.upper()}_DATABASE_URL": prod.pooled(mode),
        migration_var(name): prod.direct(),
    }
    runs = [Spawned(migrate_cmd(name, "up"), env=env) for _ in range(4)]
    finished = [r.finish() for r in runs]
    assert [code for code, _, _ in finished] == [0] * 4, finished
    assert history(prod.superuser) == versions(name)
    assert advisory_locks(prod) == []


# --- standbys and several hosts ---------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_a_run_on_the_standby_says_so_and_changes_nothing(name: str, prod: Prod) -> None:
    standby = prod.topology.need("standby")
    on_standby = standby.url(OWNER, OWNER_PASSWORD, prod.name)
    from topology import wait_replayed

    assert prod.topology.primary is not None
    wait_replayed(prod.topology.primary, standby)
    for url in (on_standby, prod.two_hosts(), prod.two_hosts("query")):  # the first host
        result = run_cli(name, "up", "--url", url)
        assert result.exit_code == 1, result.output
        line = one_line(result.stderr)
        assert "is a standby" in line and "target_session_attrs=read-write" in line
        assert f"127.0.0.1:{standby.port}/{prod.name} is a standby" in line  # where it landed
    assert history(prod.superuser) == []


@pytest.mark.parametrize("form", ["authority", "query"])
@pytest.mark.parametrize("name", SERVICES)
def test_a_two_host_url_whose_first_host_is_the_standby(
    name: str, form: str, prod: Prod, tmp_path: Path
) -> None:
    """up, status, backup and restore land on the primary, whichever host comes first."""
    url = prod.two_hosts(form, target_session_attrs="read-write")
    env = {**peer_env(), "MIGRATE_BACKUP_DIR": str(tmp_path)}
    up = run_cli(name, "up", "--url", url, "--contract", env=env)
    assert up.exit_code == 0, up.output
    assert history(prod.superuser) == versions(name)
    status = run_cli(name, "status", "--url", url, "--json", env=env)
    assert (
        status.exit_code == 0
        and __import__("json").loads(status.stdout)["current"] == versions(name)[-1]
    )
    backup = run_cli(name, "backup", "--url", url, env=env)
    assert backup.exit_code == 0, backup.output
    dump = backup.stdout.strip()
    restore = run_cli(name, "restore", dump, "--url", url, env=env)
    assert restore.exit_code == 0, restore.output
    assert history(prod.superuser) == versions(name)


def test_the_plain_alembic_path_refuses_a_pool_too(prod: Prod) -> None:
    name = PLAIN
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "services" / name / "alembic.ini"),
         "-x", f"url={prod.pooled('transaction')}", "upgrade", "head"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")},
    )  # fmt: skip
    assert done.returncode != 0
    assert "connection pooler" in done.stderr and OWNER_PASSWORD not in done.stderr
    assert history(prod.superuser) == [] and advisory_locks(prod) == []


# --- privileges ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in SERVICES if ROLE_MAKERS[n]])
def test_a_step_that_creates_roles_needs_createrole_before_anything_changes(
    name: str, prod: Prod, lesser_owner: tuple[str, str, str]
) -> None:
    role, _, url = lesser_owner
    first = ROLE_MAKERS[name][0]
    query(prod.superuser, sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(role)))
    env = peer_env()
    refused = run_cli(name, "up", "--url", url, "--contract", env=env)
    assert refused.exit_code == 1, refused.output
    line = one_line(refused.stderr)
    assert f"ALTER ROLE {role} CREATEROLE" in line and says(line, f"version {first}")
    assert history(prod.superuser) == []
    below = run_cli(name, "up", "--url", url, "--contract", "--version", str(first - 1), env=env)
    assert below.exit_code == 0, below.output
    assert history(prod.superuser) == [v for v in versions(name) if v < first]


def test_login_needs_createrole(prod: Prod, lesser_owner: tuple[str, str, str]) -> None:
    name = next(n for n in SERVICES if ROLE_MAKERS[n])
    role, _, url = lesser_owner
    query(prod.superuser, sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(role)))
    up = run_cli(name, "up", "--url", url, "--contract", env=peer_env())
    assert up.exit_code == 0, up.output
    query(prod.superuser, sql.SQL("ALTER ROLE {} NOCREATEROLE").format(sql.Identifier(role)))
    result = run_cli(
        name, "login", f"clinic_{uuid.uuid4().hex[:6]}", "--login-password-env", "PW",
        "--url", url, env={"PW": "Login-pw-7"},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"ALTER ROLE {role} CREATEROLE" in one_line(result.stderr)
    assert "Login-pw-7" not in result.output


# --- backup under forced row-level security ----------------------------------------------


def _tenant_rows(prod: Prod, name: str) -> dict[str, int]:
    """Rows in each table with forced RLS, counted by the superuser (who bypasses it)."""
    tables = query(
        prod.superuser,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relforcerowsecurity",
    )
    return {t: query(prod.superuser, f"SELECT count(*) FROM {t}")[0][0] for (t,) in tables}


def _seed(prod: Prod, name: str) -> None:
    result = run_cli(name, "seed", "--url", prod.direct(), env=peer_env())
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", [n for n in SERVICES if ROLE_MAKERS[n]])
def test_backup_under_forced_rls_reads_every_row_or_names_the_grant(
    name: str, prod: Prod, tmp_path: Path
) -> None:
    env = peer_env()
    assert run_cli(name, "up", "--url", prod.direct(), "--contract", env=env).exit_code == 0
    _seed(prod, name)
    rows = _tenant_rows(prod, name)
    assert rows and all(rows.values()), rows  # forced RLS, and rows to hide
    # The owner's own policy (USING (true)) provably shows it every row: the dump reads
    # through it, and holds what the superuser counts.
    backup = run_cli(name, "backup", "--url", prod.direct(), "--to", str(tmp_path / "a"))
    assert backup.exit_code == 0, backup.output
    manifest = __import__("json").loads(Path(backup.stdout.strip() + ".json").read_text())
    assert {k: v for k, v in manifest["row_counts"].items() if k in rows} == rows
    # A policy that filters: the backup refuses before writing anything, naming the grant.
    table = next(iter(rows))
    policy = query(
        prod.superuser,
        "SELECT polname FROM pg_policy WHERE polrelid = %s::regclass"
        " AND pg_get_expr(polqual, polrelid) = 'true'",
        [table],
    )[0][0]
    query(prod.superuser, f"ALTER POLICY {policy} ON {table} USING (id % 2 = 0)")
    refused = run_cli(name, "backup", "--url", prod.direct(), "--to", str(tmp_path / "b"))
    assert refused.exit_code == 1
    line = one_line(refused.stderr)
    assert f"ALTER ROLE {OWNER} BYPASSRLS" in line and table in line
    assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []
    # Production's up takes that backup first: it refuses the same way, changing nothing.
    root = tmp_path / "copy"
    import shutil

    shutil.copytree(ROOT / "services", root / "services")
    added = add_step(root, name, "    pass")
    prod_env = {**env, "APP_ENV": "production", "MIGRATE_ROOT": str(root)}
    up = run_script(
        name, "up", "--url", prod.direct(), "--backup-to", str(tmp_path / "c"), env=prod_env
    )
    assert up.returncode == 1, up.stderr
    assert "BYPASSRLS" in one_line(up.stderr) and added not in history(prod.superuser)
    # With BYPASSRLS the role reads past every policy.
    query(prod.superuser, f"ALTER ROLE {OWNER} BYPASSRLS")
    try:
        granted = run_cli(name, "backup", "--url", prod.direct(), "--to", str(tmp_path / "d"))
        assert granted.exit_code == 0, granted.output
    finally:
        query(prod.superuser, f"ALTER ROLE {OWNER} NOBYPASSRLS")


# --- restore with other sessions ----------------------------------------------------------


def test_restore_sees_another_roles_session_and_ends_it_only_when_allowed(
    prod: Prod, lesser_owner: tuple[str, str, str], tmp_path: Path
) -> None:
    name = PLAIN
    role, _, url = lesser_owner
    query(prod.superuser, sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(role)))
    assert run_cli(name, "up", "--url", url, "--contract").exit_code == 0
    dump = run_cli(name, "backup", "--url", url, "--to", str(tmp_path)).stdout.strip()
    assert dump
    with app_session(prod.direct(APP, APP_PASSWORD), f"{name}@1") as app:
        blind = run_cli(name, "restore", dump, "--url", url)
        assert blind.exit_code == 1
        assert says(one_line(blind.stderr), f"GRANT pg_read_all_stats TO {role}")
        query(prod.superuser, sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(role)))
        seen = run_cli(name, "restore", dump, "--url", url)
        assert seen.exit_code == 1 and f"({name}@1)" in one_line(seen.stderr)
        forced = run_cli(name, "restore", dump, "--url", url, "--force")
        assert forced.exit_code == 1
        assert says(one_line(forced.stderr), f"GRANT pg_signal_backend TO {role}")
        query(prod.superuser, sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(role)))
        done = run_cli(name, "restore", dump, "--url", url, "--force")
        assert done.exit_code == 0, done.output
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")


@pytest.mark.parametrize("mode", MODES)
def test_restore_counts_the_clients_of_a_listed_pool(mode: str, prod: Prod, tmp_path: Path) -> None:
    name = PLAIN
    assert run_cli(name, "up", "--url", prod.direct(), "--contract").exit_code == 0
    dump = run_cli(name, "backup", "--url", prod.direct(), "--to", str(tmp_path)).stdout.strip()
    env = {"MIGRATE_POOLER_URLS": prod.console(mode)}
    with app_session(prod.pooled(mode, APP), f"{name}@1"):
        refused = run_cli(name, "restore", dump, "--url", prod.direct(), env=env)
        assert refused.exit_code == 1
        assert "via the pooler" in one_line(refused.stderr)


# --- credentials for the client tools -----------------------------------------------------


@pytest.fixture
def recorded_tools(tmp_path: Path, prod: Prod) -> tuple[Path, dict[str, str]]:
    """pg_dump, pg_restore and psql wrapped so that each command line is written down."""
    from alembic_common.safety import backup

    with psycopg.connect(prod.superuser) as conn:
        real = backup.choose(conn.info.server_version).folder  # the tools a backup picks
    wrappers, log = tmp_path / "bin", tmp_path / "argv.log"
    wrappers.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql"):
        script = wrappers / tool
        script.write_text(
            f'#!/bin/sh\nprintf "\\n@@ %s %s" "$0" "$*" >> {log}\nexec {real / tool} "$@"\n'
        )
        script.chmod(0o755)
    return log, {"PATH": f"{wrappers}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("source", ["url", "PGPASSWORD", "--password-file", "passfile"])
def test_every_password_source_reaches_every_client_tool(
    source: str, prod: Prod, tmp_path: Path, recorded_tools: tuple[Path, dict[str, str]]
) -> None:
    log, env = recorded_tools
    name = PLAIN
    bare = prod.direct(password=None, sslmode="disable")
    args: list[str] = ["--url", bare]
    if source == "url":
        args = ["--url", prod.direct(sslmode="disable")]
    elif source == "PGPASSWORD":
        env = {**env, "PGPASSWORD": OWNER_PASSWORD}
    elif source == "--password-file":
        secret = tmp_path / "secret"
        secret.write_text(OWNER_PASSWORD + "\n")
        args += ["--password-file", str(secret)]
    else:
        passfile = tmp_path / "pgpass"
        escaped = OWNER_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"127.0.0.1:*:*:{OWNER}:{escaped}\n")
        passfile.chmod(0o600)
        env = {**env, "PGPASSFILE": str(passfile)}
    first = versions(name)[0]
    assert run_script(name, "up", *args, "--version", str(first), env=env).returncode == 0
    rehearsed = run_script(name, "rehearse", *args, "--contract", env=env)
    assert rehearsed.returncode == 0, rehearsed.stderr
    assert run_script(name, "up", *args, "--contract", env=env).returncode == 0
    backup = run_script(name, "backup", *args, "--to", str(tmp_path / "dumps"), env=env)
    assert backup.returncode == 0, backup.stderr
    restore = run_script(name, "restore", backup.stdout.strip(), *args, env=env)
    assert restore.returncode == 0, restore.stderr
    assert history(prod.superuser) == versions(name)
    lines = [call for call in log.read_text().split("\n@@ ") if call.strip()]
    used = {Path(line.split()[0]).name for line in lines if "--version" not in line}
    assert used == {"pg_dump", "pg_restore", "psql"}, lines
    assert all("sslmode=disable" in ln for ln in lines if "--dbname" in ln), lines
    texts = (rehearsed.stdout, rehearsed.stderr, backup.stdout, backup.stderr, restore.stdout)
    for text in (log.read_text(), *texts, restore.stderr):
        assert OWNER_PASSWORD not in text and quote(OWNER_PASSWORD, safe="") not in text


def test_the_superuser_password_is_not_needed_anywhere(topology: Topology) -> None:
    """The private cluster checks passwords: a wrong one is refused (the tests above prove
    something only because of that)."""
    assert topology.primary is not None
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(topology.primary.url(password=SUPERUSER_PASSWORD + "x")).close()


def test_the_lock_key_is_the_servers_pid(prod: Prod) -> None:
    """The owner key the steps check is keyed by the server's own pid of the lock session."""
    with (
        psycopg.connect(prod.direct(), autocommit=True) as conn,
        locking.advisory_lock(conn, PLAIN) as pid,
    ):
        assert pid == conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]


# --- found by trying it the way production runs it ----------------------------------------


def test_a_name_pgbouncer_suffixes_still_announces_its_release() -> None:
    """PgBouncer's application_name_add_host appends ' - host:port' to every client's name."""
    from alembic_common.online.releases import announced

    assert announced("patient", "patient@3 - 10.0.0.7:51234") == 3
    assert announced("patient", "patient@3 - [::1]:5") == 3
    assert announced("patient", "patient@3x") is None
    assert announced("patient", "user@3 - 10.0.0.7:1") is None


@pytest.mark.parametrize("name", GATED)
def test_an_old_release_whose_name_carries_its_address_holds_the_contract(
    name: str, prod: Prod
) -> None:
    contract = contract_steps(name)[0]
    old = before(name, contract)[-1]
    with app_session(prod.direct(APP, APP_PASSWORD), f"{name}@{old} - 10.0.0.7:51234"):
        held = run_cli(name, "up", "--url", prod.direct(), "--version", str(contract))
    assert held.exit_code == 0, held.output
    assert history(prod.superuser) == before(name, contract)


@pytest.mark.parametrize("mode", MODES)
def test_peers_are_read_through_a_pool_or_on_the_standby(
    mode: str, prod: Prod, topology: Topology
) -> None:
    """requires is read only: the other services' databases may be named by their pooled
    URLs, or by a standby's; the service's own must be direct."""
    needy = next(
        (n for n in SERVICES if any(m.requires for m in services.get(n, ROOT).migrations)), None
    )
    if needy is None:
        pytest.skip("no service requires another")
    needed = sorted({o for m in services.get(needy, ROOT).migrations for o in m.requires})
    assert topology.primary is not None
    made = []
    try:
        env = {}
        for i, other in enumerate(needed):
            peer_db = f"{prod.name}_{other}"
            query(topology.primary.admin, f"CREATE DATABASE {peer_db} OWNER mt_owner")
            made.append(peer_db)
            direct = topology.primary.url(OWNER, OWNER_PASSWORD, peer_db)
            assert run_cli(other, "up", "--url", direct, "--contract").exit_code == 0
            if i % 2 == 0:
                env[f"{other.upper()}_DATABASE_URL"] = topology.need(mode).url(OWNER, peer_db)
            else:
                standby = topology.need("standby")
                from topology import wait_replayed

                wait_replayed(topology.primary, standby)
                env[f"{other.upper()}_DATABASE_URL"] = standby.url(OWNER, OWNER_PASSWORD, peer_db)
        result = run_cli(needy, "up", "--url", prod.direct(), "--contract", env=env)
        assert result.exit_code == 0, result.output
        assert history(prod.superuser) == versions(needy)
    finally:
        for peer_db in made:
            query(topology.primary.admin, f"DROP DATABASE IF EXISTS {peer_db} WITH (FORCE)")


@pytest.mark.parametrize("mode", MODES)
def test_the_migration_url_wins_over_the_pooled_list_of_databases(mode: str, prod: Prod) -> None:
    name = PLAIN
    pooled = {f"{name.upper()}_DATABASE_URLS": prod.pooled(mode)}
    single = run_cli(name, "up", env={**pooled, migration_var(name): prod.direct()})
    assert single.exit_code == 0, single.output
    assert history(prod.superuser) == versions(name)
    listed = run_cli(
        name, "status", "--json", env={**pooled, f"{migration_var(name)}S": prod.direct()}
    )
    assert listed.exit_code == 0, listed.output


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_attempt_leaves_its_name_on_no_pooled_connection(mode: str, prod: Prod) -> None:
    """The run names itself only once it knows it is no pooler's: a server connection the
    pool hands to the next client never wears 'migrate' (the gate leaves such sessions out)."""
    with app_session(prod.pooled(mode, APP), "patient@1") as app:
        refused = run_cli(PLAIN, "status", "--url", prod.pooled(mode))
        assert refused.exit_code == 1
        names = query(
            prod.superuser,
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()",
        )
        assert ("migrate",) not in names, names
        app.execute("SELECT 1")


@pytest.mark.parametrize("mode", MODES)
def test_restore_force_does_not_claim_to_end_a_pooled_client(
    mode: str, prod: Prod, tmp_path: Path
) -> None:
    name = PLAIN
    assert run_cli(name, "up", "--url", prod.direct(), "--contract").exit_code == 0
    dump = run_cli(name, "backup", "--url", prod.direct(), "--to", str(tmp_path)).stdout.strip()
    env = {"MIGRATE_POOLER_URLS": prod.console(mode)}
    # A client of the owner's own role: ending its server connection needs no grant.
    with app_session(prod.pooled(mode, OWNER), f"{name}@1"):
        forced = run_cli(name, "restore", dump, "--url", prod.direct(), "--force", env=env)
        assert forced.exit_code == 0, forced.output
        terminating = [ln for ln in forced.stderr.splitlines() if "terminating" in ln]
        assert all("via the pooler" not in ln for ln in terminating), forced.stderr
        assert "stay connected to their pooler" in forced.stderr


def test_a_missing_password_is_an_authentication_failure(prod: Prod) -> None:
    result = run_cli(PLAIN, "status", "--url", prod.direct(password=None))
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert "authentication failed" in line and "PGPASSWORD" in line and "unreachable" not in line


@pytest.mark.parametrize("name", GATED)
def test_one_console_listed_twice_counts_its_clients_once(name: str, prod: Prod) -> None:
    contract = contract_steps(name)[0]
    console = prod.console("transaction")
    env = {"MIGRATE_POOLER_URLS": f"{console},{console},"}  # a trailing comma, too
    assert (
        run_cli(name, "up", "--url", prod.direct(), "--version", str(contract - 1)).exit_code == 0
    )
    with app_session(prod.pooled("transaction", APP), f"{name}@{before(name, contract)[-1]}"):
        held = run_cli(name, "up", "--url", prod.direct(), "--version", str(contract), env=env)
    assert held.exit_code == 0, held.output
    assert "held back by 1 session(s)" in held.output


def test_restore_force_never_ends_a_superusers_session_unless_run_by_one(
    prod: Prod, tmp_path: Path
) -> None:
    """A superuser's session (a DBA's psql) can be ended only by a superuser: the owner's
    --force refuses before ending anything; the superuser's goes on."""
    name = PLAIN
    assert run_cli(name, "up", "--url", prod.direct(), "--contract").exit_code == 0
    dump = run_cli(name, "backup", "--url", prod.direct(), "--to", str(tmp_path)).stdout.strip()
    with (
        app_session(prod.direct(APP, APP_PASSWORD), f"{name}@1") as app,
        app_session(prod.superuser, "psql") as dba,
    ):
        refused = run_cli(name, "restore", dump, "--url", prod.direct(), "--force")
        assert refused.exit_code == 1
        line = one_line(refused.stderr)
        assert "superuser(s) postgres" in line and "nothing was restored" in line
        app.execute("SELECT 1")  # nobody was ended
        dba.execute("SELECT 1")
        done = run_cli(name, "restore", dump, "--url", prod.superuser, "--force")
        assert done.exit_code == 0, done.output
        for ended in (app, dba):
            with pytest.raises(psycopg.OperationalError):
                ended.execute("SELECT 1")


def test_the_documented_migrating_role_is_enough_for_every_command(
    topology: Topology, tmp_path: Path
) -> None:
    """The documentation's statements for a self-hosted server, run as written (names made
    unique), give a role that runs every command of the privileges table: up past a
    contract step an old release holds, backup under forced RLS, restore --force over
    another role's session, login, check and diff."""
    import re

    block = documentation().split("On a self-hosted server, as a superuser, once:", 1)[1]
    statements = re.search(r"```sql\n(.*?)```", block, re.DOTALL)
    assert statements is not None
    role, database = f"migrator_{uuid.uuid4().hex[:6]}", f"readme_{uuid.uuid4().hex[:6]}"
    password = "from-your-secret-store"
    sql_text = statements.group(1).replace("migrator", role).replace("patient_service_db", database)
    assert topology.primary is not None
    admin = topology.primary.admin
    for statement in [s for s in sql_text.split(";") if s.split("--")[0].strip()]:
        query(admin, statement)
    url = topology.primary.url(role, password, database)
    name = GATED[0] if GATED else PLAIN
    env = {**peer_env(), "MIGRATE_BACKUP_DIR": str(tmp_path)}
    try:
        contract = contract_steps(name)[0] if GATED else None
        if contract is not None:
            first = run_cli(name, "up", "--url", url, "--version", str(contract - 1), env=env)
            assert first.exit_code == 0, first.output
            with app_session(
                topology.primary.url(APP, APP_PASSWORD, database), f"{name}@{contract - 1}"
            ):
                held = run_cli(name, "up", "--url", url, "--version", str(contract), env=env)
                assert held.exit_code == 0 and "held back by 1 session(s)" in held.output
                # a rehearsal sees the same session and holds the same step, on its copy
                rehearsed = run_cli(name, "rehearse", "--url", url, "--json", env=env)
                assert rehearsed.exit_code == 0, rehearsed.output
                assert __import__("json").loads(rehearsed.stdout)["held"][0] == contract
        assert run_cli(name, "up", "--url", url, env=env).exit_code == 0
        assert history(topology.primary.url(database=database)) == versions(name)
        assert run_cli(name, "seed", "--url", url, env=env).exit_code == 0
        backup = run_cli(name, "backup", "--url", url, env=env)
        assert backup.exit_code == 0, backup.output
        with app_session(topology.primary.url(APP, APP_PASSWORD, database), "psql"):
            restored = run_cli(name, "restore", backup.stdout.strip(), "--url", url, "--force")
            assert restored.exit_code == 0, restored.output
        if ROLE_MAKERS[name]:
            login = run_cli(
                name, "login", f"clinic_{uuid.uuid4().hex[:6]}", "--login-password-env", "PW",
                "--url", url, env={"PW": "Clinic-pw-1"},
            )  # fmt: skip
            assert login.exit_code == 0, login.output
        for command in ("check", "diff"):
            result = run_cli(name, command, "--url", url, env=env)
            assert result.exit_code == 0, result.output
    finally:
        query(
            admin,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)),
        )
        query(admin, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_login_refuses_an_escalating_role_on_the_password_checking_cluster(prod: Prod) -> None:
    """On the private SCRAM cluster, as the migrating role: a candidate that inherits a
    predefined role through another role, and one that owns a database, are refused; a
    plain one becomes a login whose password works."""
    name = next(n for n in SERVICES if ROLE_MAKERS[n])
    assert run_cli(name, "up", "--url", prod.direct(), "--contract", env=peer_env()).exit_code == 0
    tag = uuid.uuid4().hex[:6]
    chained, owner, plain = f"chained_{tag}", f"owner_{tag}", f"plain_{tag}"
    admin = prod.superuser
    for statement in (
        f"CREATE ROLE {chained} LOGIN",
        f"CREATE ROLE mid_{tag} NOLOGIN",
        f"GRANT pg_read_all_data TO mid_{tag}",
        f"GRANT mid_{tag} TO {chained}",
        f"CREATE ROLE {owner} LOGIN",
    ):
        query(admin, statement)
    query(prod.topology.primary.admin, f"CREATE DATABASE db_{tag} OWNER {owner}")  # type: ignore[union-attr]
    try:
        for candidate, says in ((chained, "pg_read_all_data"), (owner, "owner of")):
            result = run_cli(
                name, "login", candidate, "--login-password-env", "PW", "--url", prod.direct(),
                env={"PW": "Login-pw-8"},
            )  # fmt: skip
            assert result.exit_code == 2, result.output
            assert says in one_line(result.stderr) and "Login-pw-8" not in result.output
        made = run_cli(
            name, "login", plain, "--login-password-env", "PW", "--url", prod.direct(),
            env={"PW": "Login-pw-8"},
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        assert query(prod.direct(plain, "Login-pw-8"), "SELECT current_user") == [(plain,)]
    finally:
        query(prod.topology.primary.admin, f"DROP DATABASE IF EXISTS db_{tag}")  # type: ignore[union-attr]
        for role in (chained, f"mid_{tag}", owner, plain):
            query(admin, f"DROP ROLE IF EXISTS {role}")
