"""diff's repair SQL, run as printed with psql on drifted databases holding data.

Every class of drift a person can make by hand: a column's type, NOT NULL or default; an
extra column holding values; a constraint dropped or loosened; an index dropped or added;
a trigger dropped; a function rewritten; a sequence's increment; a policy, a grant and
row-level security. The printed script repairs what it can in one transaction and never
destroys a value: every row is the same before and after it, a type change that would
alter a value stops it whole, and what would destroy data is only listed, commented out.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import as_superuser, query, run_cli

from alembic_common.safety import backup

SERVICE = "patient"

# (drift class, the damage, whether the printed script repairs all of it)
DAMAGE = [
    # (phone_original: a column the version schema's views hide, so its type may change)
    ("column type", "ALTER TABLE patients ALTER COLUMN phone_original TYPE varchar(200)", True),
    ("not null", "ALTER TABLE patients ALTER COLUMN last_name DROP NOT NULL", True),
    ("default", "ALTER TABLE patients ALTER COLUMN created_at SET DEFAULT '2000-01-01'", True),
    ("no default", "ALTER TABLE patients ALTER COLUMN updated_at DROP DEFAULT", True),
    ("constraint dropped", "ALTER TABLE patients DROP CONSTRAINT patients_gender_check", True),
    (
        "constraint loosened",
        "ALTER TABLE patients DROP CONSTRAINT patients_gender_check;"
        " ALTER TABLE patients ADD CONSTRAINT patients_gender_check CHECK (gender IS NOT NULL"
        " OR gender IS NULL)",
        True,
    ),
    ("index dropped", "DROP INDEX idx_patients_entity_email", True),
    ("index added", "CREATE INDEX mt_extra ON patients (city)", True),
    ("trigger dropped", "DROP TRIGGER {trigger} ON patients", True),
    (
        "function rewritten",
        "CREATE OR REPLACE FUNCTION patient_country_canonical(country text) RETURNS text"
        " LANGUAGE sql IMMUTABLE AS 'SELECT NULL::text'",
        True,
    ),
    ("sequence", "ALTER SEQUENCE patients_id_seq INCREMENT BY 7", True),
    ("policy", "ALTER POLICY patients_tenant ON patients USING (false)", True),
    ("grant", "REVOKE SELECT ON patients FROM patient_app", True),
    ("grant added", "GRANT SELECT ON patients TO PUBLIC", True),
    ("row security", "ALTER TABLE patients NO FORCE ROW LEVEL SECURITY", True),
    (
        "extra column with values",
        "ALTER TABLE patients ADD COLUMN shoe_size int; UPDATE patients SET shoe_size = 42",
        False,
    ),
]


SUM = "SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {} x"


def _rows(url: str) -> dict[str, str]:
    """Every row of every table, as the superuser reads them (past row-level security)."""
    admin = as_superuser(url)
    tables = query(
        admin,
        "SELECT quote_ident(relname) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind = 'r' ORDER BY 1",
    )
    return {t: query(admin, SUM.format(t))[0][0] for (t,) in tables}


def _psql(url: str, script: Path) -> subprocess.CompletedProcess[str]:
    with psycopg.connect(url) as conn:
        psql = backup.choose(conn.info.server_version).path("psql")
    return subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(script)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def at_head(db: str) -> str:
    assert run_cli(SERVICE, "up", "--contract", "--url", db).exit_code == 0
    assert run_cli(SERVICE, "seed", "--url", db).exit_code == 0
    assert run_cli(SERVICE, "check", "--url", db).exit_code == 0
    return db


@pytest.mark.parametrize(("kind", "damage", "whole"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_the_printed_repair_keeps_every_row(
    kind: str, damage: str, whole: bool, at_head: str, tmp_path: Path
) -> None:
    db = at_head
    trigger = query(
        db,
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'patients'::regclass"
        " AND NOT tgisinternal ORDER BY tgname LIMIT 1",
    )[0][0]
    query(db, damage.format(trigger=trigger))
    before = _rows(db)
    assert any(before.values())
    diff = run_cli(SERVICE, "diff", "--url", db)
    assert diff.exit_code == 1, diff.output  # drift remains until it is mended
    script = tmp_path / "repair.sql"
    script.write_text(diff.stdout)
    ran = _psql(db, script)
    assert ran.returncode == 0, (ran.stderr, diff.stdout)
    assert _rows(db) == before, diff.stdout
    check = run_cli(SERVICE, "check", "--url", db)
    if whole:
        assert check.exit_code == 0, (check.output, diff.stdout)
        assert run_cli(SERVICE, "diff", "--url", db).exit_code == 0
    else:
        assert check.exit_code == 1
        commented = [ln for ln in diff.stdout.splitlines() if "DROP COLUMN shoe_size" in ln]
        assert commented and all(ln.startswith("-- ") for ln in commented), diff.stdout
        assert "destroys the" in commented[0] and "value(s) of patients.shoe_size" in commented[0]


def test_a_type_change_that_would_alter_a_value_stops_the_whole_repair(
    db: str, tmp_path: Path
) -> None:
    """users.is_active made text by hand, and a 'yes' written: back to boolean it would read
    'true'. The script stops before changing anything, naming how many, never which."""
    assert run_cli("user", "up", "--url", db).exit_code == 0
    assert run_cli("user", "seed", "--url", db).exit_code == 0
    query(db, "ALTER TABLE users ALTER COLUMN is_active DROP DEFAULT")
    query(db, "ALTER TABLE users ALTER COLUMN is_active TYPE text")
    query(db, "UPDATE users SET is_active = 'yes' WHERE id = (SELECT min(id) FROM users)")
    query(db, "DROP INDEX idx_users_entity_role")  # repairable on its own
    before = _rows(db)
    diff = run_cli("user", "diff", "--url", db)
    assert diff.exit_code == 1
    script = tmp_path / "repair.sql"
    script.write_text(diff.stdout)
    ran = _psql(db, script)
    assert ran.returncode != 0
    assert "would change 1 value(s); nothing was changed" in ran.stderr
    assert _rows(db) == before  # one transaction: the index was not made either
    assert query(db, "SELECT to_regclass('idx_users_entity_role')") == [(None,)]


def test_diff_json_lists_the_destructive_statements_apart(at_head: str) -> None:
    import json

    db = at_head
    query(db, "ALTER TABLE patients ADD COLUMN shoe_size int; UPDATE patients SET shoe_size = 42")
    report = json.loads(run_cli(SERVICE, "diff", "--url", db, "--json").stdout)
    assert all("DROP COLUMN" not in s for s in report["drift_sql"])
    (destructive,) = report["destructive"]
    rows = query(db, "SELECT count(*) FROM patients")[0][0]
    assert destructive == {
        "sql": "ALTER TABLE patients DROP COLUMN shoe_size;",
        "destroys": f"the {rows} value(s) of patients.shoe_size",
    }
