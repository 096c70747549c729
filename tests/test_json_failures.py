"""Every command given --json prints exactly one JSON object on stdout, however it ends.

Each command that takes --json is run into each kind of failure it can meet: bad usage,
an unreachable server and, for 'up', a step that fails after others were applied and a
database ahead of the code. stdout is parsed every time: one object, saying the command
failed, with an ``error`` (exit code, kind, the message stderr shows, service, version)
beside what was done before the failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import add_step, history, query, run_cli, versions

from alembic_common.cli import app

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nowhere"
# What a command needs before its options, so that it gets as far as its failure.
ARGUMENTS = {"login": ["somebody"], "restore": ["missing.dump"], "down": ["--version", "1"]}


def json_commands() -> list[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return sorted(
        name
        for name, command in group.commands.items()
        if any("--json" in getattr(p, "opts", []) for p in command.params)
    )


JSON_COMMANDS = json_commands()


def one_object(stdout: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout
    found = json.loads(lines[0])
    assert isinstance(found, dict)
    return found


def failed(result: Any, code: int) -> dict[str, Any]:
    assert result.exit_code == code, result.output
    found = one_object(result.stdout)
    assert found["ok"] is False and found["error"]["exit_code"] == code, found
    assert result.stderr.strip().splitlines()[-1] == f"migrate: error: {found['error']['message']}"
    return found


def test_the_commands_with_json_are_found() -> None:
    assert {"up", "down", "status", "backup", "restore"} <= set(JSON_COMMANDS)


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_bad_usage_prints_one_json_object(command: str) -> None:
    result = run_cli("patient", command, *ARGUMENTS.get(command, []), "--port", "0", "--json")
    found = failed(result, 2)
    assert found["error"]["kind"] == "usage" and found["action"] == command


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_an_unreachable_server_prints_one_json_object(command: str, tmp_path: Path) -> None:
    args = [*ARGUMENTS.get(command, []), "--url", UNREACHABLE, "--json"]
    if command in ("backup", "backups", "restore"):
        args += [
            "--to" if command != "restore" else "--jobs",
            str(tmp_path) if command != "restore" else "1",
        ]
    result = run_cli("patient", command, *args)
    if result.exit_code == 0:  # a command that needs no server: its usual object
        one_object(result.stdout)
        return
    found = failed(result, result.exit_code)
    assert found["service"] == "patient" and found["error"]["kind"], found


def test_a_failing_step_says_what_was_applied_before_it(project_copy: Path, db: str) -> None:
    head = versions("user")[-1]
    failing = add_step(project_copy, "user", "    op.execute('SELECT 1/0')", "Fails")
    result = run_cli("user", "up", "--url", db, "--json", env={"MIGRATE_ROOT": str(project_copy)})
    found = failed(result, 1)
    assert found["steps"] == versions("user") == history(db)
    assert found["error"]["kind"] == "step" and found["error"]["version"] == failing
    assert found["steps"][-1] == head


def test_a_database_ahead_of_the_code_prints_one_json_object(db: str) -> None:
    assert run_cli("user", "up", "--url", db).exit_code == 0
    query(db, "INSERT INTO schema_migrations (version, description) VALUES (9999, 'later')")
    query(db, "UPDATE alembic_version SET version_num = '9999'")
    found = failed(run_cli("user", "up", "--url", db, "--json"), 1)
    assert "9999" in found["error"]["message"]


def test_a_signal_mid_step_prints_one_json_object(project_copy: Path, db: str) -> None:
    """SIGTERM during a step of a single run: exit 143, and the object says what stayed."""
    import os
    import signal

    from conftest import Spawned, migrate_cmd, wait_until

    assert run_cli("user", "up", "--url", db, "--version", str(versions("user")[0])).exit_code == 0
    slow = add_step(project_copy, "user", "    op.execute('SELECT pg_sleep(60)')", "Sleeps")
    run = Spawned(
        migrate_cmd("user", "up", "--url", db, "--json"), env={"MIGRATE_ROOT": str(project_copy)}
    )
    wait_until(
        lambda: query(
            db,
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
            ["%pg_sleep(60)%"],
        ),
        "the sleeping step",
    )
    os.kill(run.proc.pid, signal.SIGTERM)
    code, stdout, stderr = run.finish(timeout=60)
    assert code == 143, stderr
    found = one_object(stdout)
    assert found["ok"] is False and found["error"]["kind"] == "interrupted"
    assert found["error"]["version"] == slow and found["error"]["exit_code"] == 143
    assert found["steps"] == [v for v in versions("user") if v > versions("user")[0]]
    assert found["steps"] == history(db)[1:]
