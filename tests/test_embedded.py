"""The embedded server itself: 'migrate embedded status' and 'migrate embedded stop'.

The embedded default keeps running after each command (README); these two show it and
stop it cleanly. Each test has its own data folder (MIGRATE_PGDATA), never the project's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import ROOT, run_script, versions

from alembic_common.core import embedded, services

pytestmark = pytest.mark.slow
SERVICE = sorted(services.discover(ROOT))[0]


@pytest.fixture
def pgdata(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "pgdata"
    yield folder
    embedded.stop(folder)


def _status(env: dict[str, str]) -> dict[str, object]:
    shown = run_script("embedded", "status", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    found: dict[str, object] = json.loads(shown.stdout)
    return found


def test_status_and_stop_of_the_embedded_server(pgdata: Path) -> None:
    env = {"MIGRATE_PGDATA": str(pgdata)}
    assert _status(env) == {
        "data_dir": str(pgdata), "initialised": False, "running": False, "major": None,
        "pid": None, "port": None, "socket_dir": None, "databases": [],
    }  # fmt: skip
    assert "no server yet" in run_script("embedded", "status", env=env).stdout

    up = run_script("all", "up", env=env, timeout=300)  # every service, peers first
    assert up.returncode == 0, up.stderr
    running = _status(env)
    assert running["running"] is True and running["initialised"] is True
    assert embedded.default_database(SERVICE) in running["databases"]  # type: ignore[operator]
    pid = running["pid"]
    assert isinstance(pid, int) and psutil.pid_exists(pid)
    assert (pgdata / "PG_VERSION").read_text().strip() == str(running["major"])

    url = embedded.server_url(pgdata, embedded.default_database(SERVICE))
    with psycopg.connect(url) as session:  # a session the stop must end
        stopped = run_script("embedded", "stop", "--json", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout) == {"data_dir": str(pgdata), "stopped": True}
        assert not (pgdata / "postmaster.pid").exists() and not psutil.pid_exists(pid)
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")

    after = _status(env)
    assert after["running"] is False and after["initialised"] is True
    assert "stopped (the next command" in run_script("embedded", "status", env=env).stdout
    again = run_script("embedded", "stop", env=env)
    assert again.returncode == 0 and "no server running" in again.stdout

    # The data stays: the next command starts the server again and finds the history.
    status = run_script(SERVICE, "status", "--json", env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["current"] == versions(SERVICE)[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embedded", "up"], "'embedded' works with 'status' and 'stop' only, not 'up'"),
        ([SERVICE, "stop"], "'stop' is for 'migrate embedded stop' only"),
        (["all", "stop"], "'all' works with 'up', 'status' and 'report' only, not 'stop'"),
        (
            ["embedded", "status", "--url", "postgresql://u@h/d"],
            "'embedded status' takes only --json",
        ),
    ],
)
def test_embedded_commands_are_refused_elsewhere(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = run_script(*args, env={"MIGRATE_PGDATA": str(tmp_path / "pgdata")})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"migrate: error: {message}"]
    assert not (tmp_path / "pgdata").exists()  # nothing started
