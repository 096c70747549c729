"""Output a person reads: plain text when piped, whole hints on an 80-column terminal,
a quiet end when the reader goes away, and a server that is still starting."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shlex
import struct
import subprocess
import termios
import time

from conftest import (
    ROOT,
    applied_by_default,
    contract_steps,
    create_database,
    drop_database,
    history,
    migrate_cmd,
    query,
    release,
    run_cli,
    run_script,
    versions,
)
from relay import DelayedRelay

from alembic_common.authoring.offline import Statement
from alembic_common.cli.authoring import SHOWN
from alembic_common.core.settings import Settings

BOX = set("─│┃━┏┓┗┛┡┩╇┳┻╋┣┫┠┨┯┷┼")


def _on_terminal(args: list[str], columns: int = 80) -> str:
    """Run migrate with its stdout and stderr on a pseudo-terminal of ``columns`` columns."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(migrate_cmd(*args), stdout=slave, stderr=slave, cwd=ROOT, env=env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_piped_status_is_plain_text(db: str) -> None:
    run_cli("patient", "up", "--url", db)
    done = run_script("patient", "status", "--url", db)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert not BOX & set(done.stdout), "no box drawing when piped"
    assert all(line == line.rstrip() for line in lines), "no padding"
    assert lines[0] == f"database: {Settings('p', db, 't').display}"
    assert lines[2].split() == ["version", "state", "applied", "at", "description"]
    assert any(line.endswith("Allow the Rh-null blood type") for line in lines)
    assert max(len(line) for line in lines) > 80, "piped rows are not cut to a width"


def test_hints_never_break_inside_an_option_on_80_columns(db: str) -> None:
    contract = str(contract_steps("patient")[0])
    with release(db, "patient@1"):  # an old release holds the contract step back
        run_cli("patient", "up", "--version", contract, "--url", db)
        text = _on_terminal(["patient", "up", "--version", contract, "--url", db])
    assert "held back by 1 session(s) announcing an older version" in " ".join(text.split())
    assert any("'up --contract'" in line for line in text.splitlines()), text
    assert all(len(line) <= 80 for line in text.splitlines()), text


def test_status_rows_fit_an_80_column_terminal(db: str) -> None:
    run_cli("patient", "up", "--url", db)
    text = _on_terminal(["patient", "status", "--url", db])
    assert not BOX & set(text)
    rows = [line for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == len(versions("patient")), text
    assert all(len(line) <= 80 for line in rows), text


def _plan_rows(text: str) -> list[tuple[str, str]]:
    """The rows of plan's tables as (lock, statement): a row whose lock wraps goes on over
    lines that hold nothing past the lock column."""
    rows: list[tuple[str, str]] = []
    split = None
    for line in text.splitlines():
        if line.startswith("lock ") and "rows (est.)" in line:
            split = line.index("rows (est.)")
        elif not line.strip():
            split = None
        elif split is not None:
            lock, rest = line[:split].strip(), line[split:].split()
            if rest:
                rows.append((lock, line[split:].strip()))
            else:
                rows[-1] = (f"{rows[-1][0]} {lock}", rows[-1][1])
    return rows


def test_plan_piped_is_readable_and_keeps_bookkeeping_for_verbose(db: str) -> None:
    planned = run_cli("patient", "plan", "--url", db, "--json")
    statements = [s for v in json.loads(planned.stdout)["versions"] for s in v["statements"]]
    own = [s for s in statements if Statement(s["sql"]).bookkeeping]
    assert own and len(own) < len(statements)
    for verbose in ([], ["--verbose"]):
        done = run_script("patient", "plan", "--url", db, *verbose)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert not BOX & set(done.stdout) and all(line == line.rstrip() for line in lines)
        rows = _plan_rows(done.stdout)
        assert len(rows) == len(statements) - (0 if verbose else len(own))
        lock = max(len(f"{s['lock']} on {s['table']}: {s['effect']}") for s in statements)
        widest = max(len(line) for line in lines if not line.startswith("patient "))
        assert widest <= lock + len("  rows (est.)  ") + SHOWN  # no padding
        if not verbose:
            assert f"({len(own)} statements of the run's own bookkeeping not shown" in done.stdout
            assert not any("schema_migrations" in statement for _, statement in rows)


def test_plan_keeps_the_lock_column_whole_on_80_columns(db: str) -> None:
    planned = run_cli("patient", "plan", "--url", db, "--json")
    locks = {
        f"{s['lock']} on {s['table']}: {s['effect']}"
        for v in json.loads(planned.stdout)["versions"]
        for s in v["statements"]
        if s["lock"] != "-" and not Statement(s["sql"]).bookkeeping
    }
    text = _on_terminal(["patient", "plan", "--url", db])
    assert all(len(line) <= 80 for line in text.splitlines()), text
    rows = _plan_rows(text)
    assert {lock for lock, _ in rows if lock != "-"} == locks
    assert all(statement for _, statement in rows)  # each row shows its statement's start


def test_a_multi_target_error_stays_on_one_line(server: str, db: str) -> None:
    broken = create_database(server)
    try:
        query(broken, "CREATE TABLE patients (id int)")
        text = _on_terminal(["patient", "up", "--url", db, "--url", broken])
        label = Settings("p", broken, "t").label
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"failed: {label}")]
        assert "version 1 failed and was rolled back" in line and "already exists" in line
        assert history(db) == applied_by_default("patient")
    finally:
        drop_database(server, broken)


def test_a_closed_stdout_ends_quietly_with_exit_0(db: str) -> None:
    run_cli("patient", "up", "--url", db)
    proc = subprocess.Popen(
        migrate_cmd("patient", "status", "--url", db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head -0`: the reader is gone before anything is written
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == "", err
    shell = subprocess.run(
        f"{shlex.join(migrate_cmd('patient', 'status', '--url', db))} | head -1; "
        "echo exit=${PIPESTATUS[0]}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert shell.stdout.splitlines()[-1] == "exit=0" and shell.stderr == "", shell


def test_wait_says_once_that_it_waits_and_for_how_long(db: str) -> None:
    conf = Settings("x", db, "t")
    with DelayedRelay(db, delay=1.5) as relay:
        via = f"postgresql://{conf.user}@127.0.0.1:{relay.port}/{conf.database}"
        result = run_cli("user", "up", "--wait", "15", "--url", via)
    assert result.exit_code == 0, result.output
    said = [ln for ln in result.stderr.splitlines() if "waiting up to 15s for the database" in ln]
    assert said == [
        f"user: waiting up to 15s for the database at 127.0.0.1:{relay.port}/{conf.database} "
        "to accept connections"
    ]


def test_a_failure_after_waiting_says_it_waited(db: str) -> None:
    conf = Settings("x", db, "t")
    with DelayedRelay(db, delay=30) as relay:
        via = f"postgresql://{conf.user}@127.0.0.1:{relay.port}/{conf.database}"
        result = run_cli("user", "up", "--wait", "1.5", "--url", via)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "is unreachable after waiting 1.5s" in last, last
