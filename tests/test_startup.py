"""The startup hook, waiting for a database that is still starting, and the no-op fast path."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, applied_by_default, history, peer_env, run_cli, versions
from relay import DelayedRelay
from typer.testing import CliRunner

from alembic_common import run_migrations
from alembic_common.cli import app as cli_app
from alembic_common.cli.frame import (
    ALL,
    ALL_ONLY,
    COMMANDS,
    EMBEDDED,
    EMBEDDED_ONLY,
    ORDER,
    command_name,
    named,
)
from alembic_common.core.settings import Settings
from alembic_common.errors import ConfigError, ConnectError


def via_relay(url: str, port: int) -> str:
    """The same database reached through the relay's TCP port."""
    conf = Settings("x", url, "test")
    return f"postgresql://{conf.user}@127.0.0.1:{port}/{conf.database}"


def test_run_migrations_brings_a_service_to_head_once(db: str) -> None:
    first = run_migrations("user", db)
    assert first.steps == versions("user") and history(db) == versions("user")
    second = run_migrations("user", db)
    assert second.noop and second.after == versions("user")[-1]


def test_the_hook_reads_app_env_as_up_does(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo is refused before anything connects; production takes its backup first."""
    monkeypatch.setenv("MIGRATE_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("APP_ENV", "prodd")
    with pytest.raises(ConfigError) as refused:
        run_migrations("user", db)
    assert refused.value.exit_code == 2 and "'prodd' is not a known environment" in str(
        refused.value
    )
    assert history(db) == []
    monkeypatch.setenv("APP_ENV", " Production ")
    result = run_migrations("user", db)
    assert result.backup is not None and Path(result.backup).parent == tmp_path / "backups"
    assert history(db) == versions("user")


def test_wait_rides_out_a_database_that_is_still_starting(db: str) -> None:
    with DelayedRelay(db, delay=1.5) as relay:
        started = time.monotonic()
        result = run_migrations("patient", via_relay(db, relay.port), wait=20)
        assert time.monotonic() - started >= 1.4
    expected = applied_by_default("patient")
    assert result.after == expected[-1] and history(db) == expected


def test_wait_is_bounded(db: str) -> None:
    with DelayedRelay(db, delay=30) as relay:
        started = time.monotonic()
        with pytest.raises(ConnectError) as failure:
            run_migrations("patient", via_relay(db, relay.port), wait=1.5)
        assert 1.4 <= time.monotonic() - started < 6
    assert f"127.0.0.1:{relay.port}" in str(failure.value)


def test_cli_up_wait(db: str) -> None:
    with DelayedRelay(db, delay=1.0) as relay:
        result = run_cli(
            "appointment", "up", "--wait", "15", "--url", via_relay(db, relay.port), env=peer_env()
        )
    assert result.exit_code == 0, result.output
    assert history(db) == versions("appointment")


def test_noop_up_imports_neither_alembic_nor_sqlalchemy(db: str) -> None:
    """Nor what only other paths need: the worker pools of fleets, the backup tools, the
    metrics file, the other commands' modules."""
    run_migrations("patient", db)
    unused = (
        "alembic",
        "sqlalchemy",
        "multiprocessing",
        "argparse",
        "alembic_common.safety.backup",
        "alembic_common.fleets.metrics",
        "alembic_common.fleets.platform",
        "alembic_common.cli.authoring",
        "alembic_common.cli.backup",
        "alembic_common.cli.ops",
    )
    probe = (
        "import sys\n"
        "from alembic_common.cli import main\n"
        f"sys.argv = ['migrate', 'patient', 'up', '--url', {db!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        f"heavy = sorted(m for m in {unused!r} if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().endswith("0 []"), out.stdout + out.stderr


def test_migrating_does_not_load_the_models(db: str) -> None:
    """Only autogenerate needs models.py (and the ORM); a real up skips both."""
    probe = (
        "import sys\n"
        "from alembic_common.cli import main\n"
        f"sys.argv = ['migrate', 'user', 'up', '--url', {db!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, 'alembic' in sys.modules, 'sqlalchemy.orm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().endswith("0 True False"), out.stdout + out.stderr
    assert history(db) == versions("user")


NAMES = sorted(command_name(c) for c in cli_app.registered_commands)


@pytest.mark.parametrize("command", NAMES)
def test_a_run_builds_only_its_own_command_and_says_the_same(command: str) -> None:
    """Typer converts every command's signature before parsing: a run builds only the
    one it names, and its help reads exactly as the whole app's does."""
    service = EMBEDDED if command in EMBEDDED_ONLY else ALL if command in ALL_ONLY else "patient"
    only = named([service, command, "--help"])
    assert only is not cli_app
    assert [c.callback.__name__ for c in only.registered_commands if c.callback] == [
        c.callback.__name__
        for c in cli_app.registered_commands
        if c.callback is not None and command_name(c) == command
    ]
    whole = CliRunner().invoke(cli_app, [service, command, "--help"], prog_name="migrate")
    alone = CliRunner().invoke(only, [service, command, "--help"], prog_name="migrate")
    assert whole.exit_code == alone.exit_code == 0
    assert alone.stdout == whole.stdout and f"migrate {{SERVICE}} {command}" in alone.stdout


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["patient"], ["patient", "--help"], ["patient", "upp"], ["up", "patient"]],
)
def test_anything_but_a_named_command_sees_every_command(argv: list[str]) -> None:
    assert named(argv) is cli_app


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_each_command_is_loaded_from_the_module_that_registers_it(module: str) -> None:
    """``named`` imports only the module the table names for a command: a command missing
    from the table, or listed under the wrong module, would not be found."""
    registered = [
        command_name(c)
        for c in cli_app.registered_commands
        if c.callback is not None and c.callback.__module__ == f"alembic_common.cli.{module}"
    ]
    assert sorted(registered) == sorted(COMMANDS[module])


def test_every_registered_command_is_in_the_table() -> None:
    assert sorted(command_name(c) for c in cli_app.registered_commands) == sorted(ORDER)


@pytest.mark.parametrize("first", ["up", "revision", "seed"])
def test_help_lists_the_commands_in_one_order_whatever_ran_first(first: str) -> None:
    """A process that loaded one command's module first still shows the whole list in the
    table's order: the heart of it (up, down, status) first."""
    probe = (
        "import sys\n"
        "from alembic_common.cli.frame import named\n"
        f"named(['patient', {first!r}])\n"
        "sys.argv = ['migrate', '--help']\n"
        "from alembic_common.cli import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    section = out.stdout.split("Commands:")[-1].splitlines()
    listed = [line.split()[0] for line in section if line.startswith("  ") and line[2] != " "]
    assert out.returncode == 0, out.stderr
    assert listed == ORDER


def test_the_package_app_is_the_whole_app_in_a_fresh_process() -> None:
    """``from alembic_common.cli import app`` (typer's docs, a wrapper script) sees every
    command, though a run loads only its own."""
    probe = (
        "from alembic_common.cli import app\n"
        "from alembic_common.cli.frame import command_name\n"
        "print(' '.join(command_name(c) for c in app.registered_commands))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ORDER, out.stderr
