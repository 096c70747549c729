"""The fast path (cli/fast.py) says exactly what the whole CLI says, imports only what it uses,
and hands every other run to the whole CLI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import (
    ROOT,
    SERVICES,
    Spawned,
    add_step,
    applied_by_default,
    as_superuser,
    history,
    migrate_cmd,
    peer_env_for,
    query,
    run_cli,
    run_script,
    up,
    versions,
    wait_until,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql
from relay import SilentServer

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


def timeless(text: str) -> str:
    """Output without what differs between two runs of the same work on two databases:
    durations, seconds, the databases' names (create_database's)."""
    text = re.sub(r"\(\d+ ms\)", "(N ms)", re.sub(r"\bmt_[0-9a-f]{12}\b", "DB", text))
    return re.sub(r'"(duration_ms|seconds)": [0-9.]+', r'"\1": N', text)


@pytest.mark.parametrize("name", SERVICES)
@pytest.mark.parametrize("as_json", [False, True])
def test_work_to_do_runs_here_and_says_what_the_whole_cli_says(
    name: str, as_json: bool, two: tuple[str, str]
) -> None:
    env = peer_env_for(name)
    args = ["up", *(["--json"] if as_json else [])]
    whole = run_cli(name, *args, "--url", two[0], env=env)
    quick = run_script(name, *args, "--url", two[1], env=env)
    assert (quick.returncode, timeless(quick.stdout)) == (whole.exit_code, timeless(whole.stdout))
    assert timeless(quick.stderr) == timeless(whole.stderr)
    assert history(two[1]) == history(two[0]) == applied_by_default(name)
    if not as_json:
        assert "applied version" in quick.stderr


def test_work_to_do_imports_no_typer(db: str) -> None:
    names, out, code = imported("patient", "up", "--url", db)
    assert code == 0, out
    assert history(db) == applied_by_default("patient")
    assert "psycopg" in names, "the import report was read"
    assert not {n for n in names if n.split(".")[0] in ("typer", "click")}


@pytest.mark.parametrize("as_json", [False, True])
def test_work_that_fails_fails_as_the_whole_cli_fails(as_json: bool, two: tuple[str, str]) -> None:
    """The database refuses every write (read-only by default): the run that found work
    fails the same way on either path, with the same line, exit code and JSON."""
    for url in two:
        with psycopg.connect(as_superuser(url), autocommit=True) as conn:
            name = conn.info.dbname
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                    sql.Identifier(name)
                )
            )
    args = ["up", *(["--json"] if as_json else [])]
    whole = run_cli("patient", *args, "--url", two[0])
    quick = run_script("patient", *args, "--url", two[1])
    assert whole.exit_code == 1, whole.stderr
    assert (quick.returncode, timeless(quick.stdout)) == (whole.exit_code, timeless(whole.stdout))
    assert timeless(quick.stderr) == timeless(whole.stderr)
    assert "read-only transaction" in quick.stderr and "Traceback" not in quick.stderr
    assert history(two[1]) == []


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
        ["patient", "status", "--targets-file", "t"],
        ["patient", "up", "--jobs", "0"],
        ["patient", "up", "--jobs", "x"],
        ["patient", "up", "--jobs", "\u0664"],
        ["patient", "up", "--per-host", "1", "--per-host", "2"],
        ["patient", "up", "--per-host=-1"],
        ["patient", "up", "--targets-file"],
        ["patient", "up", "--canary", "1", "--targets-file", "t"],
    ],
)
def test_only_the_runs_it_knows_take_the_fast_path(argv: list[str]) -> None:
    assert fast.parse(argv) is None


def test_a_fleets_status_or_the_pooler_gate_in_the_environment_takes_the_whole_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fast.parse(["patient", "up"]) is not None
    monkeypatch.setenv("PATIENT_DATABASE_URLS", "postgresql://x/a postgresql://x/b")
    assert fast.parse(["patient", "up"]) is not None, "a fleet's up is this path's"
    assert fast.parse(["patient", "status"]) is None
    monkeypatch.delenv("PATIENT_DATABASE_URLS")
    monkeypatch.setenv("MIGRATE_POOLER_URLS", "postgresql://x:6432/pgbouncer")
    assert fast.parse(["patient", "status"]) is None
    assert fast.parse(["patient", "up", "--targets-file", "t"]) is None


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


@pytest.mark.parametrize("as_json", [False, True])
def test_a_step_failing_after_others_ran_is_reported_once_as_the_whole_cli_does(
    as_json: bool, two: tuple[str, str], project_copy: Path
) -> None:
    """The history's last step fails after every other was applied: the fast path says
    what the whole CLI says (each applied step, then the failure, once), and leaves the same
    history; it does not hand a run that changed the database to the whole CLI again."""
    failing = add_step(project_copy, "user", "    op.execute('SELECT 1/0')")
    env = {"MIGRATE_ROOT": str(project_copy)}
    args = ["up", *(["--json"] if as_json else [])]
    whole = run_cli("user", *args, "--url", two[0], env=env)
    quick = run_script("user", *args, "--url", two[1], env=env)
    assert whole.exit_code == 1, whole.stderr
    assert (quick.returncode, timeless(quick.stdout)) == (whole.exit_code, timeless(whole.stdout))
    assert timeless(quick.stderr) == timeless(whole.stderr)
    assert f"version {failing} failed and was rolled back" in quick.stderr
    assert history(two[1]) == history(two[0]) == versions("user", project_copy)[:-1]
    if not as_json:
        assert quick.stderr.count("applied version") == len(versions("user", project_copy)) - 1


@pytest.fixture
def fleets(server: str, migrating_role: str, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two targets files of two fresh databases each (as ``db`` makes them), the second
    database of each already another service's: fleets compared side by side."""
    from conftest import create_database, drop_database

    made: list[str] = []
    files = []
    for side in ("whole", "quick"):
        urls = [create_database(server, owner=migrating_role) for _ in range(2)]
        made += urls
        up("user", urls[1])
        listed = tmp_path / f"{side}.txt"
        listed.write_text("".join(f"{u}\n" for u in urls))
        listed.chmod(0o600)
        files.append(listed)
    yield files[0], files[1]
    for url in made:
        drop_database(server, url)


@pytest.mark.parametrize("as_json", [False, True])
def test_a_fleet_runs_here_and_says_what_the_whole_cli_says(
    as_json: bool, fleets: tuple[Path, Path]
) -> None:
    """``up`` over a fleet on either path: the same report, exit code and histories, with
    work (one target migrated, one refused: another service's), then again (the recheck)."""
    env = peer_env_for("patient")
    args = ["up", *(["--json"] if as_json else []), "--jobs", "2", "--per-host", "2"]
    for _ in ("with work", "the recheck"):
        whole = run_cli("patient", *args, "--targets-file", str(fleets[0]), env=env)
        quick = run_script("patient", *args, "--targets-file", str(fleets[1]), env=env)
        assert whole.exit_code == 1, whole.output
        same = (quick.returncode, timeless(quick.stdout), timeless(quick.stderr))
        assert same == (whole.exit_code, timeless(whole.stdout), timeless(whole.stderr))
        assert "belongs to the user service" in (quick.stdout + quick.stderr)
        assert "Traceback" not in quick.stderr
        for listed in fleets:
            migrated, foreign = listed.read_text().split()
            assert history(migrated) == applied_by_default("patient")
            assert history(foreign) == applied_by_default("user")


def test_a_fleets_recheck_imports_neither_typer_nor_sqlalchemy_nor_alembic(
    fleets: tuple[Path, Path], tmp_path: Path
) -> None:
    migrated, foreign = fleets[1].read_text().split()
    up("patient", migrated, contract=True)
    alone = tmp_path / "alone.txt"
    alone.write_text(f"{migrated}\n")
    alone.chmod(0o600)
    heavy = {"typer", "click", "sqlalchemy", "alembic"}
    runs = [
        (["--targets-file", str(alone)], {}, 0),
        (["--json"], {"PATIENT_DATABASE_URLS": f"{migrated},{foreign}"}, 1),
    ]
    for args, env, expected in runs:
        names, out, code = imported("patient", "up", *args, env=env)
        assert code == expected, out
        assert "psycopg" in names, "the import report was read"
        assert not {n for n in names if n.split(".")[0] in heavy}, args
    assert '"at head": 1' in out and '"failed": 1' in out, out


# --- what a user notices when things go wrong: once, and saying what it interrupted ----------


@pytest.mark.slow
def test_a_failure_is_tried_once(db: str) -> None:
    """A server that never answers is given one connection attempt, not one by this path
    and another by the whole CLI (a refused password would be sent twice)."""
    with SilentServer() as silent:
        url = f"postgresql://nobody@127.0.0.1:{silent.port}/none"
        done = run_script("patient", "up", "--url", url, timeout=60)
        assert done.returncode == 1 and "is unreachable" in done.stderr, done.stderr
        silent._sock.setblocking(False)
        attempts = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                silent._sock.accept()[0].close()
                attempts += 1
    assert attempts == 1


def test_a_piped_targets_file_is_read_once(db: str) -> None:
    """A pipe is read once: its problem is the one the user is told."""
    done = subprocess.run(
        migrate_cmd("patient", "up", "--targets-file", "/dev/stdin"),
        input=f"{db}\n{db}\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2 and "is listed twice" in done.stderr, done.stderr
    assert history(db) == []


def test_a_closed_stdout_is_no_error(db: str) -> None:
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *migrate_cmd("patient", "up", "--url", db)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr and "Traceback" not in done.stderr  # progress lines only
    assert history(db) == applied_by_default("patient")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["up"], "patient: interrupted (SIGTERM) before any step ran; nothing was changed"),
        (["status"], "interrupted (SIGTERM)"),
        (["status", "--connect-timeout", "10"], "interrupted (SIGTERM)"),  # the whole CLI's
    ],
    ids=["up", "status", "the whole CLI's status"],
)
def test_a_signal_while_reading_says_so_in_one_line(args: list[str], says: str, db: str) -> None:
    """Blocked reading the history (another session holds it), each path stops on SIGTERM
    with exit 143, one line and the --json failure object, as during a step."""
    up("patient", db, versions("patient")[0])
    before = history(db)
    with psycopg.connect(db) as holder:
        holder.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        run = Spawned(migrate_cmd("patient", *args, "--url", db, "--json"))
        wait_until(
            lambda: query(
                db,
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> %s",
                [holder.info.backend_pid],
            ),
            "the run blocked on the history",
        )
        run.proc.send_signal(signal.SIGTERM)
        code, out, err = run.finish()
    assert code == 143, err
    (line,) = err.strip().splitlines()
    assert line == f"migrate: error: {says}"
    assert json.loads(out)["error"]["exit_code"] == 143
    assert history(db) == before


@pytest.mark.parametrize("whole", [False, True], ids=["fast path", "whole CLI"])
@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_status_says_its_verdict_when_the_reader_is_gone(
    whole: bool, as_json: bool, db: str
) -> None:
    """The reader of stdout went away before a word was read: the exit code still says
    whether the database needs a look (0 at head, 1 ahead), every time."""
    up("patient", db, contract=True)
    extra = [*(["--connect-timeout", "10"] if whole else []), *(["--json"] if as_json else [])]

    def code() -> int:
        read, write = os.pipe()
        os.close(read)  # gone before the run starts: every write fails
        try:
            return subprocess.run(
                migrate_cmd("patient", "status", "--url", db, *extra),
                stdout=write, stderr=subprocess.PIPE, cwd=ROOT, check=False,
            ).returncode  # fmt: skip
        finally:
            os.close(write)

    assert code() == 0
    future = versions("patient")[-1] + 1
    query(db, "INSERT INTO schema_migrations (version, description) VALUES (%s, 'later')", [future])
    query(db, "UPDATE alembic_version SET version_num = %s", [f"{future:04d}"])
    assert [code() for _ in range(3)] == [1, 1, 1]


def test_an_unknown_service_is_named_before_any_setting() -> None:
    """As the whole CLI does: the service first, then APP_ENV."""
    quick = run_script(
        "nosuch", "up", "--url", "postgresql://u@127.0.0.1:1/x", env={"APP_ENV": "prodd"}
    )
    whole = run_cli(
        "nosuch", "up", "--url", "postgresql://u@127.0.0.1:1/x", env={"APP_ENV": "prodd"}
    )
    assert quick.returncode == whole.exit_code == 2
    assert quick.stderr.strip() == whole.stderr.strip() and "nosuch" in quick.stderr
