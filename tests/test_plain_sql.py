"""Plain-SQL steps (core/sqlsteps.py) run without Alembic and leave what Alembic leaves.

Every migration of every service, and of a generated service with the awkward cases
(``%``, ``:`` and dollar quotes in SQL, quotes in a description, data rows, an empty
downgrade, a step that needs Python between plain ones), is run up and then down one
step at a time on two databases: one as a run does it (plain-SQL steps on the lock's
session), one with every step through Alembic. After each step pg_dump's schema and rows,
the privileges, ``alembic_version`` and ``schema_migrations`` (all but its timings) must
be identical, or both runs must refuse with the same message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import (
    ROOT,
    SERVICES,
    as_superuser,
    migrate_cmd,
    peers,
    query,
    run_cli,
)

from alembic_common.core import runner, services, sqlsteps
from alembic_common.core.executor import Executor
from alembic_common.core.settings import Settings
from alembic_common.errors import MigrationError
from alembic_common.safety import backup

PLAIN = "plainsvc"
# The generated service's steps: (module header, upgrade body, downgrade body, plain?).
STEPS: list[tuple[str, str, str, bool]] = [
    (
        "import sqlalchemy as sa\n",
        "    op.create_table('visits', sa.Column('id', sa.BigInteger, sa.Identity(), "
        "primary_key=True), sa.Column('note', sa.Text, nullable=False, server_default=''), "
        "sa.Column('at', sa.DateTime(timezone=True)))",
        "    op.drop_table('visits')",
        True,
    ),
    (
        "",
        '    op.execute("CREATE FUNCTION pct(x numeric) RETURNS text LANGUAGE sql AS '
        "$fn$ SELECT to_char(x, '990.0') || '%' $fn$\")\n"
        "    op.execute(\"COMMENT ON TABLE visits IS 'ratio: 5%s; time 10:30'\")",
        "    op.execute('DROP FUNCTION pct(numeric)')\n"
        '    op.execute("COMMENT ON TABLE visits IS NULL")',
        True,
    ),
    (
        "from alembic import context\n",
        "    if not context.is_offline_mode():\n"
        "        op.get_bind().exec_driver_sql('SELECT 1')\n"
        "    op.execute('CREATE TABLE needs_python (id int)')",
        "    op.execute('DROP TABLE needs_python')",
        False,
    ),
    (
        "import sqlalchemy as sa\n",
        "    op.add_column('visits', sa.Column('room', sa.Text))\n"
        "    op.create_index('ix_visits_room', 'visits', ['room'])\n"
        "    op.create_check_constraint('room_short', 'visits', 'length(room) < 20')",
        "    op.drop_constraint('room_short', 'visits')\n"
        "    op.drop_index('ix_visits_room', 'visits')\n"
        "    op.drop_column('visits', 'room')",
        True,
    ),
    (
        "",
        "    op.execute(\"INSERT INTO visits (note, room) VALUES ('first', 'A1'), ('it''s', NULL)\")",
        "    op.execute(\"DELETE FROM visits WHERE note IN ('first', 'it''s')\")",
        True,
    ),
    ("", "    op.execute('CREATE TABLE kept (id int)')", "    pass", True),
]
DESCRIPTION = {
    5: 'Patient\'s "visits" and 100% of their notes: seeded',
    6: "Kept: $step$ and $$ quote the bookkeeping's own DO block",
}


def write_service(root: Path) -> services.Service:
    """The generated service under ``root``/services, hashed as every service is."""
    folder = root / "services" / PLAIN
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    user = ROOT / "services" / "user"
    (folder / "alembic.ini").write_text((user / "alembic.ini").read_text())
    (folder / "migrations" / "env.py").write_text((user / "migrations" / "env.py").read_text())
    for v, (header, body, down, _) in enumerate(STEPS, 1):
        below = repr(f"{v - 1:04d}") if v > 1 else "None"
        described = DESCRIPTION.get(v, f"Step {v}")
        (versions / f"{v:04d}_step_{v}.py").write_text(
            f'"""{described}"""\n\nfrom alembic import op\n{header}\nrevision = "{v:04d}"\n'
            f"down_revision = {below}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{body}\n\n\ndef downgrade():\n{down}\n"
        )
    done = run_cli(PLAIN, "hash", env={"MIGRATE_ROOT": str(root)})
    assert done.exit_code == 0, done.output
    return services.get(PLAIN, root)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> services.Service:
    return write_service(tmp_path_factory.mktemp("plain"))


def snapshot(url: str) -> str:
    """Schema, privileges and rows as pg_dump prints them (the superuser's view: forced
    row-level security hides rows from the owner), and both version tables."""
    url = as_superuser(url)
    with psycopg.connect(url) as conn:
        tools = backup.choose(conn.info.server_version)
    done = subprocess.run(
        [tools.path("pg_dump"), "--exclude-table-data=*.schema_migrations", "--dbname", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    dumped = [
        line
        for line in done.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped"))
    ]
    history = query(
        url,
        "SELECT version, description, checksum, applied_by FROM public.schema_migrations"
        " ORDER BY version",
    )
    heads = query(url, "SELECT version_num FROM public.alembic_version")
    return "\n".join([*dumped, f"history: {history!r}", f"alembic_version: {heads!r}"])


class Paths:
    """Which versions each path ran in runs that may use plain SQL, watching the executor."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.plain: list[int] = []
        self.alembic: list[int] = []
        for name, seen in (("_sql_steps", self.plain), ("_alembic", self.alembic)):
            monkeypatch.setattr(Executor, name, self._watch(getattr(Executor, name), seen))

    @staticmethod
    def _watch(method: Callable[..., None], seen: list[int]) -> Callable[..., None]:
        def watched(self: Executor, versions: list[int], *args: Any, **kwargs: Any) -> None:
            if self.options.plain_sql:
                seen.extend(versions)
            method(self, versions, *args, **kwargs)

        return watched


def outcome(service: services.Service, url: str, up: bool, version: int, plain: bool) -> str | None:
    """Run up to ``version`` (or down from it); None when it succeeded, else its error."""
    settings = Settings(service.name, url, "--url")
    options = runner.RunOptions(contract=True, plain_sql=plain)
    try:
        if up:
            runner.up(service, settings, version, options, peers=peers)
        else:
            runner.down(service, settings, version, options)
    except MigrationError as exc:
        return str(exc)
    return None


def same_both_ways(
    service: services.Service, urls: tuple[str, str], paths: Paths, *, up: bool, version: int
) -> None:
    """Move both databases to ``version`` (up) or below it (down), plain-SQL steps each way."""
    results = [
        outcome(service, url, up, version, plain)
        for url, plain in zip(urls, (True, False), strict=True)
    ]
    way = "up to" if up else "down from"
    assert results[0] == results[1], f"{service.name} {way} {version}: the paths disagree"
    mine, theirs = snapshot(urls[0]), snapshot(urls[1])
    assert mine == theirs, f"{service.name} {way} {version}: the databases differ"


def check_every_step(
    service: services.Service, urls: tuple[str, str], paths: Paths
) -> tuple[set[int], set[int]]:
    disk = service.disk_versions()
    for version in disk:
        same_both_ways(service, urls, paths, up=True, version=version)
    going_up = len(paths.plain)
    for version in reversed(disk):
        same_both_ways(service, urls, paths, up=False, version=version)
    return set(paths.plain[:going_up]), set(paths.plain[going_up:])


@pytest.mark.parametrize("name", SERVICES)
def test_every_migration_of_every_service_leaves_the_same_database_both_ways(
    name: str, two: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = services.get(name, ROOT)
    paths = Paths(monkeypatch)
    up_plain, _ = check_every_step(service, two, paths)
    compiled = {v for v in service.disk_versions() if sqlsteps.statements(service, v, False)}
    assert up_plain == compiled, "every compiled step ran as plain SQL, the rest did not"


def test_a_generated_history_of_awkward_steps_leaves_the_same_database_both_ways(
    generated: services.Service, two: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = Paths(monkeypatch)
    up_plain, down_plain = check_every_step(generated, two, paths)
    expected = {v for v, step in enumerate(STEPS, 1) if step[3]}
    assert up_plain == expected and down_plain == expected
    assert not set(paths.alembic) & expected, "a plain step went through Alembic"
    rows = query(as_superuser(two[0]), "SELECT count(*) FROM public.schema_migrations")
    assert rows == [(0,)]


def test_a_run_of_plain_steps_imports_neither_alembic_nor_sqlalchemy(
    generated: services.Service, db: str
) -> None:
    plain_only = max(v for v, step in enumerate(STEPS, 1) if not step[3]) - 1
    env = {**os.environ, "MIGRATE_ROOT": str(generated.root)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *migrate_cmd(PLAIN, "up", "--version",
         str(plain_only), "--url", db)[1:]],
        capture_output=True, text=True, env=env, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert imported, "no import was reported"
    assert not {m.split(".")[0] for m in imported} & {"alembic", "sqlalchemy"}
    assert query(db, "SELECT version FROM public.schema_migrations ORDER BY 1") == [
        (v,) for v in range(1, plain_only + 1)
    ]


def test_a_step_edited_since_hash_goes_through_alembic(
    tmp_path: Path, two: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = write_service(tmp_path)
    first = service.migrations[0].path
    first.write_text(first.read_text().replace("server_default=''", "server_default='-'"))
    service = services.get(PLAIN, tmp_path)
    assert sqlsteps.statements(service, 1, False) is None
    paths = Paths(monkeypatch)
    runner.up(service, Settings(PLAIN, two[0], "--url"), 1)
    assert paths.alembic == [1] and not paths.plain
    default = query(
        as_superuser(two[0]),
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a"
        " ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
        " WHERE d.adrelid = 'public.visits'::regclass AND a.attname = 'note'",
    )
    assert default == [("'-'::text",)], "the edited file ran, not the stale SQL"


def test_hash_check_names_a_stale_plain_sql_file(tmp_path: Path) -> None:
    service = write_service(tmp_path)
    env = {"MIGRATE_ROOT": str(tmp_path)}
    assert run_cli(PLAIN, "hash", "--check", env=env).exit_code == 0
    stored = sqlsteps.path(service)
    stored.write_text(stored.read_text().replace("CREATE TABLE kept", "CREATE TABLE kept2"))
    done = run_cli(PLAIN, "hash", "--check", env=env)
    assert done.exit_code == 1
    assert "plain.json is not current" in done.output
    assert "kept2" in stored.read_text(), "--check writes nothing"


def test_a_failing_plain_step_is_rolled_back_and_reported_as_alembic_reports_it(
    tmp_path: Path, two: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = write_service(tmp_path)
    broken = service.migrations[-1].path
    broken.write_text(broken.read_text().replace("CREATE TABLE kept", "CREATE TABLE visits"))
    assert run_cli(PLAIN, "hash", env={"MIGRATE_ROOT": str(tmp_path)}).exit_code == 0
    service = services.get(PLAIN, tmp_path)
    head = service.disk_versions()[-1]
    paths = Paths(monkeypatch)
    messages = []
    for url, plain in zip(two, (True, False), strict=True):
        options = runner.RunOptions(plain_sql=plain)
        with pytest.raises(MigrationError) as failed:
            runner.up(service, Settings(PLAIN, url, "--url"), None, options)
        messages.append(str(failed.value))
        assert failed.value.done.get("steps") == service.disk_versions()[:-1]
        assert query(url, "SELECT max(version) FROM public.schema_migrations") == [(head - 1,)]
    assert head in paths.plain and head not in paths.alembic
    assert messages[0] == messages[1]
    assert f"version {head} failed and was rolled back" in messages[0]
    assert snapshot(two[0]) == snapshot(two[1])


HEADER = '"""A step"""\nfrom alembic import op\n'


@pytest.mark.parametrize(
    ("source", "plain"),
    [
        ("def upgrade():\n    op.execute('CREATE TABLE a (id int)')\n", True),
        ("import sqlalchemy as sa\ndef upgrade():\n    op.add_column('a', sa.Column('b', sa.Text))\n", True),
        ("from alembic_common.migration import isolate, service_of\n"
         "def upgrade():\n    isolate('a', service_of(__file__))\n", True),
        ("def upgrade():\n    op.get_bind().execute('SELECT 1')\n", False),
        ("def upgrade():\n    getattr(op, 'get_bind')().execute('SELECT 1')\n", False),
        ("from alembic import context\ndef upgrade():\n    op.execute('SELECT 1')\n", False),
        ("import os\ndef upgrade():\n    op.execute(os.environ['SQL'])\n", False),
        ("def upgrade():\n    op.bulk_insert(None, [])\n", False),
        ("from alembic_common.migration import backfill\ndef upgrade():\n    backfill()\n", False),
        ("from alembic_common import migration\ndef upgrade():\n    migration.refuse_if()\n", False),
        ("def upgrade():\n    op.execute(open('x.sql').read())\n", False),
        ("def upgrade():\n    with op.get_context().autocommit_block():\n        pass\n", False),
        ("def upgrade():\n    op.execute('SELECT 1')\n    eval('1')\n", False),
    ],
)  # fmt: skip
def test_a_step_is_plain_sql_only_when_its_file_only_sends_statements(
    tmp_path: Path, source: str, plain: bool
) -> None:
    from alembic_common.authoring import compile

    path = tmp_path / "0001_a.py"
    path.write_text(HEADER + source)
    assert compile.plain_source(path) is plain


def test_a_plain_step_waiting_on_a_lock_retries_and_fails_as_alembic_does(
    generated: services.Service, two: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step that alters ``visits`` meets a session holding it: each path retries after
    its lock timeout, then gives up with the same message, and the step is not applied."""
    altering = next(v for v, step in enumerate(STEPS, 1) if "add_column" in step[1])
    paths = Paths(monkeypatch)
    messages = []
    for url, plain in zip(two, (True, False), strict=True):
        settings = Settings(PLAIN, url, "--url")
        runner.up(generated, settings, altering - 1)
        with psycopg.connect(as_superuser(url)) as holder:
            holder.execute("LOCK TABLE public.visits IN ACCESS SHARE MODE")
            options = runner.RunOptions(lock_timeout=0.2, retries=1, plain_sql=plain)
            with pytest.raises(MigrationError) as failed:
                runner.up(generated, settings, altering, options)
            holder_pid = holder.info.backend_pid
        messages.append(str(failed.value).replace(str(holder_pid), "PID"))
        assert query(url, "SELECT max(version) FROM public.schema_migrations") == [(altering - 1,)]
    assert altering in paths.plain
    assert messages[0] == messages[1]
    assert f"version {altering} could not take a lock within 0.2s after 2 attempts" in messages[0]


def test_bookkeeping_that_does_not_move_one_row_each_keeps_nothing_of_the_step(
    generated: services.Service, db: str
) -> None:
    """A trigger on schema_migrations (not this toolkit's) swallows the history row of a
    plain step: the server's check stops the step's text before its COMMIT, so neither
    the step's table nor either version table moves, and the run says so."""
    first = generated.disk_versions()[0]
    assert sqlsteps.statements(generated, first, False) is not None
    env = {"MIGRATE_ROOT": str(generated.root)}
    assert run_cli(PLAIN, "up", "--version", str(first), "--url", db, env=env).exit_code == 0
    second = next(v for v in generated.disk_versions() if v > first)
    assert sqlsteps.statements(generated, second, False) is not None
    with psycopg.connect(as_superuser(db), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION public.swallow() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN RETURN NULL; END$$;"
            " CREATE TRIGGER swallow BEFORE INSERT ON public.schema_migrations"
            " FOR EACH ROW EXECUTE FUNCTION public.swallow()"
        )
    before = snapshot(db)
    done = run_cli(PLAIN, "up", "--url", db, env=env)
    assert done.exit_code == 1, done.output
    assert (
        f"alembic_version and schema_migrations did not move together at version {second} "
        "(changed 1 and 0 rows, expected 1 each); nothing of it was kept"
    ) in done.output
    assert "Traceback" not in done.output
    assert snapshot(db) == before
    assert query(db, "SELECT version_num FROM public.alembic_version") == [(f"{first:04d}",)]
