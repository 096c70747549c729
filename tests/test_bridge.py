"""The schema_migrations bridge: rows written and removed in the same transaction as each step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import (
    CONTRACT,
    PATIENT_HEAD,
    ROOT,
    SERVICES,
    Spawned,
    add_step,
    alembic_head,
    copied_service,
    history,
    migrate_cmd,
    peers,
    query,
    run_cli,
    says,
    settings,
    tables,
    up,
    versions,
    wait_until,
)

from alembic_common.core import locking, runner, services, sqlsteps
from alembic_common.errors import StepError


def test_every_folder_with_an_alembic_ini_is_a_service() -> None:
    folders = sorted(p.parent.name for p in (ROOT / "services").glob("*/alembic.ini"))
    assert folders == SERVICES and len(SERVICES) >= 1


@pytest.mark.parametrize("name", SERVICES)
def test_up_records_one_row_per_version_with_its_docstring(name: str, db: str) -> None:
    service = services.get(name, ROOT)
    result = runner.up(service, settings(name, db), options=CONTRACT, peers=peers)
    versions = [m.version for m in service.migrations]
    assert result.steps == versions
    assert history(db) == versions
    assert alembic_head(db) == [service.migrations[-1].revision]
    rows = dict(query(db, "SELECT version, description FROM schema_migrations"))
    assert rows == {m.version: m.description for m in service.migrations}
    assert set(service.metadata().tables) <= tables(db)  # every table its models declare


@pytest.mark.parametrize("name", SERVICES)
def test_stairway_up_down_up_through_every_version(name: str, db: str) -> None:
    service = services.get(name, ROOT)
    conf = settings(name, db)
    versions = [m.version for m in service.migrations]
    for version in versions:
        runner.up(service, conf, target=version, options=CONTRACT, peers=peers)
        assert history(db) == versions[: versions.index(version) + 1]
        runner.down(service, conf, version)
        assert history(db) == versions[: versions.index(version)], f"after down {version}"
        runner.up(service, conf, target=version, options=CONTRACT, peers=peers)
        assert alembic_head(db) == [f"{version:04d}"]
    runner.down(service, conf, versions[0])
    assert history(db) == []
    assert alembic_head(db) == []
    assert tables(db) == {"schema_migrations", "alembic_version"}


def test_down_in_the_middle_rolls_back_that_version_and_later(db: str) -> None:
    service = services.get("patient", ROOT)
    conf = settings("patient", db)
    runner.up(service, conf, options=CONTRACT)
    result = runner.down(service, conf, 2)
    assert result.steps == sorted((v for v in versions("patient") if v >= 2), reverse=True)
    assert history(db) == [1]
    assert alembic_head(db) == ["0001"]
    columns = {
        r[0]
        for r in query(
            db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'patients'"
        )
    }
    assert "emergency_contact_address" not in columns
    assert "phone_original" not in columns


def test_up_to_a_version_stops_there(db: str) -> None:
    service = services.get("patient", ROOT)
    runner.up(service, settings("patient", db), target=2)
    assert history(db) == [1, 2]
    assert runner.status(service, settings("patient", db)).pending == versions("patient")[2:]


def _add_failing_migration(root: Path) -> None:
    versions = root / "services" / "patient" / "migrations" / "versions"
    new, old = PATIENT_HEAD + 1, PATIENT_HEAD
    (versions / f"{new:04d}_broken_step.py").write_text(
        '"""A step that fails halfway"""\n'
        "from alembic import op\n"
        f'revision = "{new:04d}"\ndown_revision = "{old:04d}"\nbranch_labels = None\ndepends_on = None\n\n'
        "def upgrade():\n"
        '    op.execute("CREATE TABLE half_done (id int)")\n'
        '    op.execute("SELECT 1 / 0")\n\n'
        "def downgrade():\n"
        '    op.execute("DROP TABLE half_done")\n'
    )


def test_failing_step_rolls_back_with_its_row_and_keeps_earlier_steps(
    project_copy: Path, db: str
) -> None:
    _add_failing_migration(project_copy)
    service = copied_service(project_copy, "patient")
    with pytest.raises(StepError) as failure:
        runner.up(service, settings("patient", db), options=CONTRACT)
    broken = PATIENT_HEAD + 1
    assert says(str(failure.value), f"version {broken}") and "division by zero" in str(
        failure.value
    )
    assert failure.value.version == broken
    assert history(db) == list(range(1, broken))
    assert alembic_head(db) == [f"{broken - 1:04d}"]
    assert "half_done" not in tables(db)
    report = runner.status(service, settings("patient", db))
    assert report.ok and report.current == broken - 1 and report.pending == [broken]


def test_plain_alembic_keeps_the_history_too(db: str) -> None:
    ini = str(ROOT / "services" / "patient" / "alembic.ini")
    env = {"PATIENT_DATABASE_URL": db, "PATH": "/usr/bin:/bin"}
    alembic = [sys.executable, "-m", "alembic", "-c", ini]
    up = subprocess.run([*alembic, "upgrade", "head"], env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    assert history(db) == versions("patient")  # plain Alembic does not hold contract steps back
    assert "Running upgrade  -> 0001" in up.stderr and " object at 0x" not in up.stderr
    down = subprocess.run(
        [*alembic, "-x", f"url={db}", "downgrade", "-1"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert down.returncode == 0, down.stderr
    assert history(db) == versions("patient")[:-1]
    assert alembic_head(db) == [f"{versions('patient')[-2]:04d}"]


def _plain_alembic(service: str, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    ini = str(ROOT / "services" / service / "alembic.ini")
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", ini, "-x", f"url={db}", *args],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def test_plain_alembic_stamp_keeps_both_tables_in_step(db: str) -> None:
    """`alembic stamp` marks versions applied, or no longer applied, without running
    them: each gets its row (no duration, no checksum: nothing ran) or loses it, so the
    two tables still agree and migrate carries on; with --purge too."""
    line = versions("patient")
    described = services.get("patient", ROOT).descriptions
    columns = "SELECT version, description, duration_ms, checksum FROM schema_migrations"
    for target, expected in (("head", line), (f"{line[2]:04d}", line[:3]), ("base", [])):
        done = _plain_alembic("patient", db, "stamp", target)
        assert done.returncode == 0, done.stderr
        assert history(db) == expected
        assert alembic_head(db) == ([f"{expected[-1]:04d}"] if expected else [])
        assert query(db, columns + " ORDER BY version") == [
            (v, described[v], None, None) for v in expected
        ]
        status = run_cli("patient", "status", "--url", db)
        assert status.exit_code == 0, status.output
        if expected:
            assert f"version(s) {expected[0]}-{expected[-1]} were applied without a checksum" in (
                status.stdout
            )
    # --purge empties alembic_version behind the bridge's back; the history follows it,
    # keeping the rows (and checksums) of the versions that really ran.
    up("patient", db)
    ran = query(db, columns + " ORDER BY version")
    for target, expected in ((f"{line[4]:04d}", line[:5]), ("base", [])):
        done = _plain_alembic("patient", db, "stamp", target, "--purge")
        assert done.returncode == 0, done.stderr
        assert history(db) == expected
        assert alembic_head(db) == ([f"{expected[-1]:04d}"] if expected else [])
        assert query(db, columns + " ORDER BY version") == ran[: len(expected)]
        assert run_cli("patient", "status", "--url", db).exit_code == 0
    # Offline, the plan shows the rows a stamp writes.
    plan = _plain_alembic("patient", db, "stamp", f"{line[1]:04d}:{line[3]:04d}", "--sql")
    assert plan.returncode == 0, plan.stderr
    for version in line[2:4]:
        assert f"VALUES ({version}, " in plan.stdout


def test_plain_alembic_reports_a_refusal_in_one_line(db: str) -> None:
    """Under plain alembic a refusal is Alembic's own `FAILED: ...` line, no traceback."""
    up("patient", db)
    refused = _plain_alembic("user", db, "upgrade", "head")
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "FAILED: user: the database is at version" in output and "Traceback" not in output
    assert history(db) == versions("patient")


def test_a_fourth_service_is_just_a_folder(project_copy: Path, db: str) -> None:
    (project_copy / "services" / "user").rename(project_copy / "services" / "billing")
    assert sorted(services.discover(project_copy)) == ["appointment", "billing", "patient"]
    billing = copied_service(project_copy, "billing")
    runner.up(billing, settings("billing", db))
    assert history(db) == versions("user")
    assert {"healthcare_entities", "users"} <= tables(db)


@pytest.mark.parametrize("case", ["first up", "up", "down", "down to none"])
def test_the_history_write_travels_with_alembics_version_write(case: str, db: str) -> None:
    """One round trip per step for both tables, whichever statement Alembic's version
    table needs (its first row, a change, its last row gone): while the history table is
    locked, the server shows the step's waiting query, and it holds the version-table
    write and the schema_migrations write together (guarded by the run lock)."""
    line = versions("user")
    first, before, last = line[0], line[-2], line[-1]
    table = '"public"."alembic_version"'
    if case == "first up":  # both tables exist, empty
        up("user", db, target=first)
        runner.down(services.get("user", ROOT), settings("user", db), first)
        args, after = ["user", "up", "--version", str(first)], [first]
        version_write = f"INSERT INTO {table} (version_num) VALUES ('{first:04d}')"
    elif case == "up":
        up("user", db, target=before)
        args, after = ["user", "up"], line
        version_write = (
            f"UPDATE {table} SET version_num = '{last:04d}' WHERE version_num = '{before:04d}'"
        )
    elif case == "down":
        up("user", db)
        args, after = ["user", "down", "--version", str(last)], line[:-1]
        version_write = (
            f"UPDATE {table} SET version_num = '{before:04d}' WHERE version_num = '{last:04d}'"
        )
    else:
        up("user", db, target=first)
        args, after = ["user", "down", "--version", str(first)], []
        version_write = f"DELETE FROM {table} WHERE version_num = '{first:04d}'"
    (changed,) = set(after) ^ set(history(db))  # the one version the step adds or removes
    write = (
        'INSERT INTO "public"."schema_migrations" (version, description, duration_ms, checksum)'
        f" SELECT {changed}, "
        if changed in after
        else f'DELETE FROM "public"."schema_migrations" WHERE version = {changed} AND '
    )
    with psycopg.connect(db) as blocker:
        blocker.execute("LOCK TABLE public.schema_migrations IN EXCLUSIVE MODE")
        run = Spawned(migrate_cmd(*args, "--url", db))
        waiting = wait_until(
            lambda: query(
                db,
                "SELECT query, pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
                " AND (query LIKE '%alembic_version%' OR query LIKE 'BEGIN%')",
            ),
            "the step's version write, waiting on the history table",
        )
        pid = locking.lock_holder(blocker, "user")  # the run's lock session
        seen = history(db)  # what others see while the write waits
        blocker.rollback()
    code, _, err = run.finish()
    assert code == 0, err
    statements = [s.strip() for s in waiting[0][0].split(";\n")]
    if sqlsteps.statements(services.get("user", ROOT), changed, changed not in after):
        # A plain-SQL step is one query on the lock's own session (it cannot outlive the
        # lock): its statements, then both writes, which wait together, nothing of it seen.
        assert waiting[0][1] == pid
        assert statements[0] == "BEGIN"
        assert "advisory" not in waiting[0][0]
        assert seen == sorted(set(after) ^ {changed})
    else:
        assert statements[0] == version_write
        assert waiting[0][1] != pid
        assert statements[1].startswith("SELECT pg_catalog.pg_advisory_xact_lock(")
        # ... and the write happens only while the lock session still holds its owner key.
        owner = "NOT pg_catalog.pg_try_advisory_xact_lock({}, {})".format(*locking.owner_key(pid))
        assert statements[2].startswith(write) and statements[2].endswith(owner)
    assert history(db) == after
    assert alembic_head(db) == ([f"{after[-1]:04d}"] if after else [])


def test_a_description_full_of_sql_syntax_is_recorded_exactly(project_copy: Path, db: str) -> None:
    """The history write travels as literal SQL: quotes, percent signs, backslashes,
    semicolons and comment markers in a docstring are data, recorded as written."""
    description = (
        "Raise fees 100% for O'Brien's clinic; back\\slash -- not a comment /* nor */ é 診"
    )
    new = add_step(project_copy, "user", "    pass", description=description.replace("\\", "\\\\"))
    result = run_cli("user", "up", "--url", db, env={"MIGRATE_ROOT": str(project_copy)})
    assert result.exit_code == 0, result.output
    assert query(db, "SELECT description FROM schema_migrations WHERE version = %s", [new]) == [
        (description,)
    ]
    assert history(db) == [*versions("user"), new]
