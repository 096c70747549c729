"""Steps that commit in parts, stopped at every commit boundary, tell the truth and recover.

The steps are found in the history (every step whose code calls a helper that commits on
its own), and their boundaries by running them: a run is stopped at boundary 1, 2, ...
until one gets through. At each, stopped by a failure there, by pg_terminate_backend of
the migration's server process, by SIGTERM or by SIGKILL, the test checks what a user sees: the
message, 'status' (text, --json, --strict), the history, that the release before the step
still reads and writes every column it knows, and that rerunning 'up' and, on a copy,
'down' end in exactly the state of a clean run (pg_dump of schema and data compared).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import (
    OWNER,
    ROOT,
    CliResult,
    create_database,
    drop_database,
    history,
    peer_env,
    query,
    run_cli,
    samples,
    with_database,
)
from psycopg import sql
from stopping import install

from alembic_common.core import services
from alembic_common.safety import backup

# The helpers that commit what a step did so far (safe.py, backfill.py).
COMMITTING = {
    "backfill",
    "validate_constraint",
    "add_check_constraint",
    "create_index_concurrently",
    "drop_index_concurrently",
    "set_not_null",
    "own_transaction",
    "outside_transaction",
    "committed_so_far",
    "unique_by_identity",  # identity.py: indexes built and dropped concurrently
    "unique_by_lower",
}


def _calls(function: ast.FunctionDef) -> set[str]:
    names = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.id if isinstance(f, ast.Name) else getattr(f, "attr", ""))
    return names


def multi_part_steps() -> list[tuple[str, int, str]]:
    """(service, version, direction) of every step of the history that commits in parts."""
    found = []
    for service in services.discover(ROOT).values():
        for migration in service.migrations:
            tree = ast.parse(migration.path.read_text())
            for function in tree.body:
                if (
                    isinstance(function, ast.FunctionDef)
                    and function.name
                    in (
                        "upgrade",
                        "downgrade",
                    )
                    and _calls(function) & COMMITTING
                ):
                    direction = "up" if function.name == "upgrade" else "down"
                    found.append((service.name, migration.version, direction))
    return found


STEPS = multi_part_steps()


# --- databases at a version, with each version's sample rows --------------------------------


class Ladder:
    """Template databases at each version of a service, holding the sample rows of every
    version up to it; fresh copies of them are cheap (CREATE DATABASE ... TEMPLATE)."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.made: dict[tuple[str, int], str] = {}

    def _name(self, url: str) -> str:
        return psycopg.conninfo.conninfo_to_dict(url)["dbname"]  # type: ignore[return-value]

    def template(self, service: str, version: int) -> str:
        key = (service, version)
        if key in self.made:
            return self.made[key]
        below = [v for v in services.get(service, ROOT).disk_versions() if v < version]
        url = self.copy(self.template(service, below[-1])) if below else self._empty()
        result = run_cli(service, "up", "--version", str(version), "--url", url, env=peer_env())
        assert result.exit_code == 0, result.output
        for since, statement in samples(service).round_trip:
            if since == version:
                query(url, statement)
        self.made[key] = url
        return url

    def _empty(self) -> str:
        return create_database(self.server)

    def copy(self, url: str) -> str:
        name = f"mt_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self._name(url)), sql.Identifier(OWNER)
                )
            )
        return with_database(url, name)  # a socket URL's host holds slashes too

    def fresh(self, service: str, version: int) -> str:
        return self.copy(self.template(service, version))

    def drop_all(self) -> None:
        for url in self.made.values():
            drop_database(self.server, url)


@pytest.fixture(scope="module")
def ladder(server: str, migrating_role: str, peer_databases: None) -> Iterator[Ladder]:
    made = Ladder(server)
    yield made
    made.drop_all()


# --- what a user sees -----------------------------------------------------------------------


def dump(url: str) -> str:
    """Schema and data as pg_dump prints them, without the history's run-specific rows (read
    by the superuser: forced row-level security hides rows from the owner)."""
    from conftest import as_superuser

    url = as_superuser(url)
    with psycopg.connect(url) as conn:
        tools = backup.choose(conn.info.server_version)
    done = subprocess.run(
        [
            tools.path("pg_dump"),
            "--no-owner",
            "--exclude-table-data=*.schema_migrations",
            "--dbname",
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    keep: list[str] = []
    rows: list[str] | None = None  # the rows of a COPY block, in no particular order
    for line in done.stdout.splitlines():
        if rows is not None:
            if line == "\\.":
                keep += sorted(rows)
                rows = None
            else:
                rows.append(line)
                continue
        if line and not line.startswith(("--", "\\restrict", "\\unrestrict")):
            keep.append(line)
            if line.startswith("COPY "):
                rows = []
    return "\n".join(keep)


def status_json(url: str, service: str) -> dict[str, Any]:
    result = run_cli(service, "status", "--json", "--url", url)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def columns(url: str) -> dict[str, list[str]]:
    """The application's tables in public, and their columns."""
    rows = query(
        url,
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        " AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"
        " AND c.relname NOT IN ('schema_migrations', 'alembic_version')"
        " AND c.relname NOT LIKE '\\_migrate\\_%' ORDER BY c.relname, a.attnum",
    )
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(table, []).append(column)
    return found


def release_reads_and_writes(url: str, known: dict[str, list[str]]) -> None:
    """The release built for the version before the stop reads every column it knows, and
    writes each back (its triggers and constraints run), in a transaction rolled back."""
    with psycopg.connect(url) as conn:
        for table, names in known.items():
            cols = sql.SQL(", ").join(map(sql.Identifier, names))
            conn.execute(sql.SQL("SELECT {} FROM {} LIMIT 5").format(cols, sql.Identifier(table)))
            conn.execute(
                sql.SQL("UPDATE {} SET {} WHERE ctid IN (SELECT ctid FROM {} LIMIT 5)").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(
                        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier(c))
                        for c in names
                    ),
                    sql.Identifier(table),
                )
            )
        conn.rollback()


def run_stopped(service: str, action: list[str], at: int, mode: str) -> tuple[CliResult, int]:
    """The migrate CLI, stopped at boundary ``at``; how many boundaries it passed."""
    if mode in ("kill", "sigterm"):
        done = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parent / "stopping.py"),
                str(at),
                mode,
                service,
                *action,
            ],
            capture_output=True,
            text=True,
            env={**_clean_env(), **peer_env()},
            cwd=ROOT,
            timeout=120,
        )
        passed = len(re.findall(r"^boundary \d+$", done.stderr, re.M))
        return CliResult(done.returncode, done.stdout, done.stderr), passed
    from alembic_common.online import safe

    real = safe.committed_so_far
    seen = install(at, mode)
    try:
        result = run_cli(service, *action, env=peer_env())
    finally:
        safe.committed_so_far = real  # type: ignore[assignment]
    return result, len(seen)


def _clean_env() -> dict[str, str]:
    import os

    from conftest import CONNECTION_VARS

    return {k: v for k, v in os.environ.items() if k not in CONNECTION_VARS}


# --- the tests ------------------------------------------------------------------------------


def test_the_history_has_steps_that_commit_in_parts() -> None:
    """The mechanism below is exercised: today's history has such steps in both directions."""
    assert {d for _, _, d in STEPS} == {"up", "down"}, STEPS


def x_args(service: str, version: int) -> list[str]:
    """The -x arguments a downgrade declares, with the first value it accepts (patient 3:
    '-x rh_null=NULL'), so a down over data it would refuse goes through."""
    found = next(m for m in services.get(service, ROOT).migrations if m.version == version)
    return [f"-x{key}={values[0]}" for key, values in sorted(found.x_arguments.items())]


class References:
    """The dump a clean run of some commands leaves, from a fresh copy of a start state."""

    def __init__(self, ladder: Ladder, service: str, start: int) -> None:
        self.ladder, self.service, self.start = ladder, service, start
        self.seen: dict[tuple[tuple[str, ...], ...], str] = {}

    def after(self, *commands: list[str]) -> str:
        key = tuple(tuple(c) for c in commands)
        if key not in self.seen:
            url = self.ladder.fresh(self.service, self.start)
            try:
                for command in commands:
                    done = run_cli(self.service, *command, "--url", url, env=peer_env())
                    assert done.exit_code == 0, (command, done.output)
                self.seen[key] = dump(url)
            finally:
                drop_database(self.ladder.server, url)
        return self.seen[key]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fail", "terminate", "kill", "sigterm"])
@pytest.mark.parametrize(("service", "version", "direction"), STEPS, ids=lambda x: str(x))
def test_a_step_stopped_at_every_commit_boundary_tells_the_truth_and_recovers(
    ladder: Ladder, service: str, version: int, direction: str, mode: str
) -> None:
    below = max((v for v in services.get(service, ROOT).disk_versions() if v < version), default=0)
    start = below if direction == "up" else version
    if start == 0:
        pytest.skip("the first version has nothing below it to start from")
    forward = ["up", "--version", str(version)]
    back = ["down", "--version", str(version), *x_args(service, version)]
    action = forward if direction == "up" else back
    references = References(ladder, service, start)
    known = columns(ladder.template(service, start))
    at = 0
    while True:
        at += 1
        if mode in ("kill", "sigterm") and at > 2:
            break  # a signal stops where a failure does: the first two boundaries show it
        url = ladder.fresh(service, start)
        try:
            result, passed = run_stopped(service, [*action, "--url", url], at, mode)
            if passed < at:  # it got through: every boundary of the step has been tried
                assert result.exit_code == 0, result.output
                assert at > 1, f"version {version} committed no part on its own ({direction})"
                assert dump(url) == references.after(action)
                break
            check_stopped(url, service, version, direction, mode, result, known)
            # Any stop leaves what a failure there leaves: both ways out are tried after a
            # failure; after the others, rerunning the same way is.
            for finish in (forward, back) if mode == "fail" else (action,):
                copy = ladder.copy(url)
                try:
                    done = run_cli(service, *finish, "--url", copy, env=peer_env())
                    assert done.exit_code == 0, (at, mode, finish, done.output)
                    assert "part-way" not in run_cli(service, "status", "--url", copy).stdout
                    expected = references.after(
                        *([action, finish] if finish != action else [action])
                    )
                    assert dump(copy) == expected, (at, mode, finish)
                finally:
                    drop_database(ladder.server, copy)
        finally:
            drop_database(ladder.server, url)


def check_stopped(
    url: str,
    service: str,
    version: int,
    direction: str,
    mode: str,
    result: CliResult,
    known: dict[str, list[str]],
) -> None:
    if mode == "kill":
        assert result.exit_code == -9, result.output
    elif mode == "sigterm":
        assert result.exit_code == 143, result.output
        assert (
            f"interrupted (SIGTERM) during version {version}; version {version} stopped part-way"
            in (result.stderr)
        ), result.stderr
    else:
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        message = result.stderr
        assert f"version {version} stopped part-way" in message, message
        assert f"version {version} was rolled back" not in message, message
        assert "failed and was rolled back" not in message, message
    report = status_json(url, service)
    step = report["in_progress"]
    assert step is not None and step["version"] == version, report
    assert step["direction"] == direction and step["parts"] >= 1, step
    assert (version in history(url)) == (direction == "down")
    rows = {m["version"]: m for m in report["migrations"]}
    assert rows[version]["part_way"] is True
    text = run_cli(service, "status", "--url", url)
    assert text.exit_code == 0, text.output
    assert "PART-WAY" in text.stdout and "part-way" in text.stdout, text.stdout
    assert run_cli(service, "status", "--strict", "--url", url).exit_code == 1
    release_reads_and_writes(url, known)


def test_no_other_step_runs_while_one_is_part_way_not_even_through_plain_alembic(
    ladder: Ladder,
) -> None:
    """A step stopped part-way blocks every other step: plain Alembic's downgrade of the step
    below it (what lost data before) refuses, changing nothing; migrate's down undoes it."""
    service, version, _ = max((s for s in STEPS if s[2] == "up"), key=lambda s: s[1])
    below = max(v for v in services.get(service, ROOT).disk_versions() if v < version)
    url = ladder.fresh(service, below)
    try:
        result, passed = run_stopped(
            service, ["up", "--version", str(version), "--url", url], 1, "fail"
        )
        assert passed == 1 and result.exit_code == 1, result.output
        before = dump(url)
        ini = str(ROOT / "services" / service / "alembic.ini")
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", ini, "-x", f"url={url}", "downgrade", "-1"],
            capture_output=True,
            text=True,
            env={**_clean_env(), **peer_env()},
            cwd=ROOT,
            timeout=120,
        )
        assert done.returncode != 0
        assert f"version {version} stopped part-way" in done.stderr, done.stderr
        assert "no other step may run" in done.stderr and "Traceback" not in done.stderr
        assert dump(url) == before and history(url)[-1] == below
        # migrate's down reaches below the part-way step: it undoes that step first.
        undone = run_cli(service, "down", "--version", str(below), "--url", url, env=peer_env())
        assert undone.exit_code == 0, undone.output
        assert status_json(url, service)["in_progress"] is None
        assert (
            history(url)[-1:]
            == [v for v in services.get(service, ROOT).disk_versions() if v < below][-1:]
        )
    finally:
        drop_database(ladder.server, url)


@pytest.mark.parametrize(
    ("direction", "says"),
    [
        ("up", "while applying it: 2 of its parts had committed and stay; 'up' finishes it"),
        ("down", "while undoing it: 2 of its parts had committed and stay; 'down' finishes undoing it, 'up' applies it again"),
    ],
)  # fmt: skip
def test_the_way_out_follows_the_direction_it_stopped_in(direction: str, says: str) -> None:
    """Stopped while being undone, it is the other way round (docs/reference.md)."""
    from datetime import UTC, datetime

    from alembic_common.online.partial import InProgress

    now = datetime.now(UTC)
    assert says in InProgress(6, direction, 2, now, now).describe()
