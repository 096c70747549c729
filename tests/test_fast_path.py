"""The fast path (cli/fast.py) says exactly what the whole CLI says, imports only what it uses,
and hands every other run to the whole CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import (
    ROOT,
    SERVICES,
    applied_by_default,
    history,
    migrate_cmd,
    peer_env_for,
    run_cli,
    run_script,
    up,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from alembic_common.cli import fast, render


def imported(*args: str, env: dict[str, str] | None = None) -> tuple[set[str], str, int]:
    """The modules a ``migrate`` process imports, its stdout and exit code."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *migrate_cmd(*args)[1:]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )
    names = {
        line.split("|")[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return names, done.stdout, done.returncode


@pytest.mark.parametrize("name", SERVICES)
def test_up_at_head_and_status_say_what_the_whole_cli_says(name: str, db: str) -> None:
    up(name, db, contract=True)
    env = peer_env_for(name)
    for args in (["up"], ["up", "--json"], ["status"], ["status", "--json"]):
        whole = run_cli(name, *args, "--url", db, env=env)
        quick = run_script(name, *args, "--url", db, env=env)
        assert (quick.returncode, quick.stdout) == (whole.exit_code, whole.stdout), args
        assert quick.stderr == whole.stderr, args


def test_a_no_op_start_imports_neither_typer_nor_sqlalchemy_nor_alembic(db: str) -> None:
    up("patient", db, contract=True)
    for args in (["up"], ["status"], ["up", f"--url={db}", "--json"]):
        given = [] if any(a.startswith("--url") for a in args) else ["--url", db]
        names, out, code = imported("patient", *args, *given)
        assert code == 0, out
        assert "psycopg" in names, "the import report was read"
        heavy = {"typer", "click", "sqlalchemy", "alembic", "rich.console", "rich.table"}
        assert not {n for n in names if n in heavy or n.split(".")[0] in heavy}, args


def test_work_to_do_goes_to_the_whole_cli(db: str) -> None:
    done = run_script("patient", "up", "--url", db)
    assert done.returncode == 0, done.stderr
    assert history(db) == applied_by_default("patient")
    assert "applied version" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["patient", "up", "--url", "postgresql://nobody@127.0.0.1:1/none"],
        ["patient", "status", "--url", "postgresql://nobody@127.0.0.1:1/none", "--json"],
        ["nosuch", "up"],
        ["patient", "up", "--url", "a", "--url", "b"],
        ["patient", "up", "--bogus"],
    ],
)
def test_what_the_fast_path_cannot_answer_fails_as_the_whole_cli_fails(args: list[str]) -> None:
    quick = run_script(*args)
    whole = run_cli(*args)
    assert (quick.returncode, quick.stdout) == (whole.exit_code, whole.stdout)
    assert quick.stderr.strip() == whole.stderr.strip()
    assert quick.returncode in (1, 2) and "Traceback" not in quick.stderr


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["patient"],
        ["--json", "up"],
        ["patient", "down"],
        ["patient", "up", "--version", "3"],
        ["patient", "up", "--url"],
        ["patient", "up", "--url", "--json"],
        ["patient", "up", "--json", "--json"],
        ["patient", "up", "--url=", "x"],
        ["patient", "status", "--url", "x", "--url", "y"],
    ],
)
def test_only_the_runs_it_knows_take_the_fast_path(argv: list[str]) -> None:
    assert fast.parse(argv) is None


def test_a_fleet_or_the_pooler_gate_in_the_environment_takes_the_whole_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fast.parse(["patient", "up"]) is not None
    monkeypatch.setenv("PATIENT_DATABASE_URLS", "postgresql://x/a postgresql://x/b")
    assert fast.parse(["patient", "up"]) is None
    monkeypatch.delenv("PATIENT_DATABASE_URLS")
    monkeypatch.setenv("MIGRATE_POOLER_URLS", "postgresql://x:6432/pgbouncer")
    assert fast.parse(["patient", "status"]) is None


ascii_cell = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_a_piped_table_is_what_rich_prints(data: st.DataObject) -> None:
    """Piped, ``table`` skips loading rich's tables: its text is rich's, cell for cell."""
    columns = data.draw(st.integers(1, 5))
    header = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
    cells = [
        data.draw(st.lists(header, min_size=columns, max_size=columns)),
        *data.draw(st.lists(st.lists(ascii_cell, min_size=columns, max_size=columns), max_size=6)),
    ]
    right = data.draw(st.sets(st.integers(0, columns - 1)))
    natural = [max(len(row[i]) for row in cells) for i in range(columns)]
    assert render._plain_table(cells, sorted(right)) == render._rich_table(
        cells, sorted(right), natural
    )
