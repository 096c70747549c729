"""A house that is easy to change: declarations read one way, one plan, checksums, and a
history that takes a new migration in every service without breaking anything."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    CONNECTION_VARS,
    ROOT,
    SERVICES,
    add_step,
    alembic_head,
    history,
    peer_env_for,
    query,
    run_cli,
    samples,
    tables,
    versions,
)

from alembic_common.authoring import checksums
from alembic_common.core import services

# --- declarations: read from the syntax tree, never from free text -------------------------


def test_a_docstring_that_mentions_phase_does_not_hold_the_step(
    project_copy: Path, db: str
) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    new = add_step(
        project_copy,
        "user",
        '    op.execute("CREATE TABLE harmless (id int)")',
        'Document the contract rule\n\nA contract step says so at the top level:\nphase = "contract"\nand this one is not.',
    )
    assert services.get("user", project_copy).contract_versions([new]) == []
    status = json.loads(run_cli("user", "status", "--json", "--url", db, env=env).stdout)
    assert status["held"] == [] and status["pending"] == [*versions("user"), new]
    up = run_cli("user", "up", "--url", db, env=env)
    assert up.exit_code == 0 and "held" not in up.stdout, up.output
    assert history(db) == [*versions("user"), new]


MALFORMED = {
    "unknown phase": ('phase = "contractt"', "phase must be one of"),
    "computed phase": ('phase = "contract".upper()', "phase must be a literal value"),
    "requires a string version": ('requires = {"patient": "1"}', "requires must map service names"),
    "requires a list": ('requires = ["patient"]', "requires must map service names"),
    "empty lint reason": ('lint_accepted = {"ban-drop-column": " "}', "lint_accepted must map"),
    "contract without its phase": (
        'contract = {"users": {"hide": ["email"]}}',
        'a contract declaration needs phase = "contract"',
    ),
    "contract of a string": (
        'phase = "contract"\ncontract = {"users": "email"}',
        "contract must map",
    ),
    "contract with an unknown key": (
        'phase = "contract"\ncontract = {"users": {"drop": ["email"]}}',
        "contract must map",
    ),
    "contract renaming two columns to one": (
        'phase = "contract"\ncontract = {"users": {"rename": {"a": "c", "b": "c"}}}',
        "renames two columns of users to one name",
    ),
    "wrong revision": (None, "revision must be"),
    "unknown parent": (None, "which no file has"),
    "syntax error": (None, "cannot be parsed"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_declaration_is_refused_naming_the_file(
    case: str, project_copy: Path, db: str
) -> None:
    header, message = MALFORMED[case]
    new = add_step(project_copy, "user", "    pass", "A malformed step", header=header or "")
    target = project_copy / "services/user/migrations/versions" / f"{new:04d}_extra_{new}.py"
    text = target.read_text()
    if case == "wrong revision":
        text = text.replace(f'revision = "{new:04d}"', 'revision = "0099"')
    elif case == "unknown parent":
        text = text.replace(f'down_revision = "{new - 1:04d}"', 'down_revision = "0042"')
    elif case == "syntax error":
        text += "\ndef broken(:\n"
    target.write_text(text)
    env = {"MIGRATE_ROOT": str(project_copy)}
    for command in (["up"], ["status"], ["plan"]):
        result = run_cli("user", *command, "--url", db, env=env)
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.strip().splitlines()
        assert target.name in line and message in line, line
    assert history(db) == []


@pytest.mark.parametrize("name", SERVICES)
def test_status_plan_and_up_read_the_same_plan(name: str, db: str) -> None:
    env = peer_env_for(name)
    status = json.loads(run_cli(name, "status", "--json", "--url", db, env=env).stdout)
    planned = json.loads(run_cli(name, "plan", "--json", "--url", db, env=env).stdout)
    result = run_cli(name, "up", "--json", "--url", db, env=env)
    assert result.exit_code == 0, result.output
    up = json.loads(result.stdout)
    assert [v["version"] for v in planned["versions"]] == up["steps"]
    assert status["held"] == up["held"]
    assert sorted(up["steps"] + up["held"]) == status["pending"]


# --- checksums -----------------------------------------------------------------------------


def _recorded(db: str) -> dict[int, str | None]:
    return dict(query(db, "SELECT version, checksum FROM public.schema_migrations"))


def test_up_records_the_checksum_of_what_each_step_ran(db: str) -> None:
    assert run_cli("patient", "up", "--contract", "--url", db).exit_code == 0
    expected = checksums.listed(services.get("patient", ROOT))
    assert _recorded(db) == expected and len(expected) == len(history(db))
    report = json.loads(run_cli("patient", "status", "--json", "--url", db).stdout)
    assert report["changed"] == [] and report["unverified"] == []


def _edit_sql(root: Path, version: int, old: str, new: str) -> None:
    path = next((root / "services/user/migrations/versions").glob(f"{version:04d}_*.py"))
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_changed_step_is_flagged_and_not_built_upon_unless_accepted(
    project_copy: Path, db: str
) -> None:
    env = {"MIGRATE_ROOT": str(project_copy)}
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    # Editing an applied migration: a comment does not count, a statement does.
    _edit_sql(project_copy, 1, "def upgrade() -> None:", "def upgrade() -> None:\n    # reviewed")
    assert (
        json.loads(run_cli("user", "status", "--json", "--url", db, env=env).stdout)["changed"]
        == []
    )
    _edit_sql(
        project_copy,
        1,
        '"idx_users_email", "users", ["email"]',
        '"idx_users_email", "users", ["email", "role"]',
    )
    status = run_cli("user", "status", "--json", "--url", db, env=env)
    assert status.exit_code == 0 and json.loads(status.stdout)["changed"] == [1]
    assert run_cli("user", "status", "--strict", "--url", db, env=env).exit_code == 1
    assert "CHANGED" in run_cli("user", "status", "--url", db, env=env).stdout
    new = add_step(project_copy, "user", '    op.execute("CREATE TABLE later (id int)")')
    refused = run_cli("user", "up", "--url", db, env=env)
    assert refused.exit_code == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "version(s) 1 changed since they were applied" in line and "--accept-changed" in line
    assert history(db) == versions("user") and "later" not in tables(db)
    accepted = run_cli("user", "up", "--accept-changed", "--json", "--url", db, env=env)
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.stdout)["accepted"] == [1]
    assert history(db) == [*versions("user"), new]
    after = json.loads(run_cli("user", "status", "--json", "--url", db, env=env).stdout)
    assert after["changed"] == [] and after["unverified"] == []


def test_rows_without_a_checksum_are_unverified_not_errors(project_copy: Path, db: str) -> None:
    # Plain alembic, for a step that checksums.txt does not list yet, records no checksum.
    env = {"MIGRATE_ROOT": str(project_copy)}
    new = add_step(project_copy, "user", '    op.execute("CREATE TABLE plain (id int)")')
    ini = project_copy / "services/user/alembic.ini"
    plain = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url={db}", "upgrade", "head"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert plain.returncode == 0, plain.stderr
    assert _recorded(db)[new] is None and _recorded(db)[1] is not None
    status = run_cli("user", "status", "--json", "--url", db, env=env)
    assert status.exit_code == 0
    report = json.loads(status.stdout)
    assert report["unverified"] == [new] and report["changed"] == []
    # A history written before checksums existed has no such column: all unverified.
    query(db, "ALTER TABLE public.schema_migrations DROP COLUMN checksum")
    report = json.loads(run_cli("user", "status", "--json", "--url", db, env=env).stdout)
    assert report["unverified"] == [*versions("user"), new]
    later = add_step(project_copy, "user", '    op.execute("CREATE TABLE later (id int)")')
    assert run_cli("user", "up", "--url", db, env=env).exit_code == 0
    assert _recorded(db)[later] is not None and _recorded(db)[1] is None


# --- the next migration, in every service ------------------------------------------------------


def _add_ordinary_migration(root: Path, name: str) -> tuple[int, str]:
    """A nullable column on the service's first table, in a migration and in the models."""
    service = services.get(name, root)
    table = next(iter(service.metadata().tables))
    new = add_step(
        root,
        name,
        f'    op.add_column("{table}", sa.Column("extra_notes", sa.Text()))',
        f"Add extra_notes to {table}",
        header="import sqlalchemy as sa",
    )
    path = root / "services" / name / "models.py"
    text = path.read_text()
    anchor = f'__tablename__ = "{table}"'
    assert anchor in text, f"{name}: models.py has no {anchor}"
    indent = re.search(rf"^( *){re.escape(anchor)}", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    path.write_text(
        text.replace(
            anchor, f"{anchor}\n{indent}extra_notes: Mapped[str | None] = mapped_column(Text)", 1
        )
    )
    downgrade = root / "services" / name / "migrations/versions" / f"{new:04d}_extra_{new}.py"
    downgrade.write_text(
        downgrade.read_text().replace(
            "def downgrade():\n    pass",
            f'def downgrade():\n    op.drop_column("{table}", "extra_notes")',
        )
    )
    return new, table


@pytest.mark.parametrize("name", SERVICES)
def test_a_new_ordinary_migration_after_todays_head_works_end_to_end(
    name: str, project_copy: Path, db: str
) -> None:
    env = {"MIGRATE_ROOT": str(project_copy), **(peer_env_for(name))}
    new, table = _add_ordinary_migration(project_copy, name)
    versions = [m.version for m in services.get(name, project_copy).migrations]
    assert versions[-1] == new
    up = run_cli(name, "up", "--contract", "--url", db, env=env)
    assert up.exit_code == 0, up.output
    assert history(db) == versions and alembic_head(db) == [f"{new:04d}"]
    status = json.loads(run_cli(name, "status", "--json", "--url", db, env=env).stdout)
    assert status["current"] == new and status["pending"] == [] and status["unverified"] == []
    checked = run_cli(name, "check", "--url", db, env=env)
    assert checked.exit_code == 0, checked.output
    # A round trip through the new step keeps the service's sample rows.
    for _, statement in samples(name, project_copy).round_trip:
        query(db, statement)
    before = query(db, f"SELECT * FROM {table} ORDER BY 1")
    assert run_cli(name, "down", "--version", str(new), "--url", db, env=env).exit_code == 0
    assert "extra_notes" not in {
        c
        for (c,) in query(
            db, "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table]
        )
    }
    assert run_cli(name, "up", "--contract", "--url", db, env=env).exit_code == 0
    assert query(db, f"SELECT * FROM {table} ORDER BY 1") == before


@pytest.mark.slow
def test_a_service_copied_under_a_new_name_passes_every_per_service_test(
    repository_copy: Path, tmp_path: Path, server: str
) -> None:
    """The way docs/authoring.md adds a service: copy a folder (the one whose history requires
    other services, when one does), record its checksums and pin its SQL. Then every test
    parametrised over the services runs on it, in the copy of the repository, unchanged."""
    needs = [n for n in SERVICES if any(m.requires for m in services.get(n, ROOT).migrations)]
    source, new = (needs or SERVICES)[-1], "ledger"
    assert new not in SERVICES
    shutil.copytree(
        repository_copy / "services" / source, repository_copy / "services" / new,
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in CONNECTION_VARS}
    env["TEST_DATABASE_URL"] = server  # the inner run uses this session's server
    script = [sys.executable, "scripts/migrate.py", new, "hash"]
    hashed = subprocess.run(script, cwd=repository_copy, env=env, capture_output=True, text=True)
    assert hashed.returncode == 0, hashed.stderr
    pytest_in_copy = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", new,
        f"--basetemp={tmp_path / 'inner'}",
    ]  # fmt: skip
    pinned = subprocess.run(
        [*pytest_in_copy, "tests/test_history_pinned.py"],
        cwd=repository_copy, env={**env, "UPDATE_SNAPSHOTS": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert pinned.returncode == 0, pinned.stdout[-3000:]
    done = subprocess.run(
        pytest_in_copy, cwd=repository_copy, env=env, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stdout[-5000:]
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 20, done.stdout[-500:]
