"""Fleets of tenant databases: targets from a file or a registry, per-server caps, canary,
failure budget, shards, reruns after a kill. Real databases on the test server throughout;
expectations come from the migration history, never from today's head."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import (
    OWNER,
    OWNER_PASSWORD,
    Spawned,
    as_owner,
    create_database,
    drop_database,
    fleet_targets,
    history,
    migrate_cmd,
    query,
    run_cli,
    versions,
    wait_until,
)
from relay import DelayedRelay

from alembic_common.core.locking import lock_key
from alembic_common.core.settings import Settings

# Two early versions keep a fleet cheap; derived from the history, not hard-coded.
FIRST = versions("patient")[0]
SECOND = versions("patient")[1]
UP_TO_SECOND = [v for v in versions("patient") if v <= SECOND]


@pytest.fixture
def make(server: str) -> Iterator[Any]:
    """Make N fresh databases; every one is dropped at the end."""
    made: list[str] = []

    def make_n(count: int) -> list[str]:
        urls = [create_database(server) for _ in range(count)]
        made.extend(urls)
        return urls

    yield make_n
    for url in made:
        drop_database(server, url)


def name_of(url: str) -> str:
    return Settings("t", url, "t").database


def write_targets(path: Path, urls: list[str], named: bool = True) -> Path:
    lines = ["# the clinics of this test", ""]
    lines += [f"clinic-{i}={u}" if named else u for i, u in enumerate(urls)]
    path.write_text("\n".join(lines) + "\n")
    return path


def report(result: Any) -> dict[str, Any]:
    return json.loads(result.stdout)


def break_first_step(url: str) -> None:
    """Version 1 creates patients: a table already there makes it fail (and roll back)."""
    query(url, "CREATE TABLE patients (id int)")


# --- sources ---------------------------------------------------------------------------------


def test_a_registry_of_100_databases(server: str, make: Any) -> None:
    urls = make(100)
    registry = create_database(server)
    try:
        query(
            registry,
            "CREATE TABLE tenants (name text, url text, host text, port int, dbname text,"
            " active bool)",
        )
        with psycopg.connect(registry, autocommit=True) as conn:
            for i, url in enumerate(urls):
                s = Settings("t", url, "t")
                if i % 2:  # half by URL, half by host, port and database
                    conn.execute(
                        "INSERT INTO tenants (name, url, active) VALUES (%s, %s, true)",
                        (f"clinic-{i}", as_owner(url, password=None)),
                    )
                else:
                    conn.execute(
                        "INSERT INTO tenants (name, host, port, dbname, active)"
                        " VALUES (%s, %s, %s, %s, true)",
                        (f"clinic-{i}", s.host, s.port, s.database),
                    )
            conn.execute("INSERT INTO tenants (name, url, active) VALUES ('gone', 'x', false)")
        sql = (
            "SELECT name, url, host, port, dbname AS database FROM tenants WHERE active"
            " ORDER BY name"
        )
        env = {"PGUSER": OWNER, "PGPASSWORD": OWNER_PASSWORD}
        args = ["patient", "up", "--registry-url", registry, "--registry-query", sql]
        first = run_cli(*args, "--version", str(SECOND), "--jobs", "2", "--json", env=env)
        assert first.exit_code == 0, first.output
        found = report(first)
        # every way a run can end, each counted (an up never finds a target "behind")
        assert found["summary"] == {
            "at head": 0,
            "migrated": 100,
            "held": 0,
            "failed": 0,
            "skipped": 0,
        }
        assert {t["target"] for t in found["targets"]} == {f"clinic-{i}" for i in range(100)}
        assert all(history(u) == UP_TO_SECOND for u in urls)

        # The recheck of a fleet at its target: no Alembic imported, nothing forked.
        again = run_cli(
            *args, "--version", str(SECOND), env={**env, "PYTHONPROFILEIMPORTTIME": "1"}
        )
        assert again.exit_code == 0, again.output
        assert "100 database(s): 100 at head" in again.stdout
        imported = {line.rsplit("|", 1)[-1].strip() for line in again.stderr.splitlines()}
        assert "alembic" not in imported and "sqlalchemy" not in imported

        status = run_cli(
            "patient",
            "status",
            "--registry-url",
            registry,
            "--registry-query",
            sql,
            "--json",
            env=env,
        )
        assert status.exit_code == 0, status.output
        assert report(status)["summary"] == {"behind": 100}
    finally:
        drop_database(server, registry)


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ("SELECT 'a' AS name, %(url)s AS url", "holds a password in clear"),
        ("SELECT 'a' AS name, 'h' AS host", "must return 'url', or 'host' and 'database'"),
        ("SELECT NULL AS name, %(plain)s AS url", "no name"),
        ("SELECT 'a' AS name, %(plain)s AS url UNION ALL SELECT 'a', %(other)s", "used twice"),
        ("SELECT 'a' AS name, 'h' AS host, 99999 AS port, 'd' AS database", "not a TCP port"),
        ("DELETE FROM tenants RETURNING name, url", "read-only"),
        ("SELEC 1", "syntax error"),
    ],
)
def test_a_bad_registry_is_a_usage_error_and_changes_nothing(
    server: str, make: Any, rows: str, needle: str
) -> None:
    (target, other) = make(2)
    registry = create_database(server)
    try:
        query(registry, "CREATE TABLE tenants (name text, url text)")
        query(registry, "INSERT INTO tenants VALUES ('kept', %s)", [target])
        secret = "S3cret-registry-pw"
        sql = rows % {
            "url": f"'{as_owner(target, password=secret)}'",
            "plain": f"'{as_owner(target, password=None)}'",
            "other": f"'{as_owner(other, password=None)}'",
        }
        result = run_cli("patient", "up", "--registry-url", registry, "--registry-query", sql)
        assert result.exit_code == 2, result.output
        (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert needle in line and secret not in result.output
        assert history(target) == [] and history(other) == []
        assert query(registry, "SELECT count(*) FROM tenants") == [(1,)]
    finally:
        drop_database(server, registry)


def test_an_unreachable_registry_is_an_operational_error(tmp_path: Path) -> None:
    result = run_cli(
        "patient",
        "up",
        "--registry-url",
        "postgresql://u:hunter2pw@127.0.0.1:1/registry",
        "--registry-query",
        "SELECT 1",
        "--connect-timeout",
        "1",
    )
    assert result.exit_code == 1 and "tenant registry" in result.stderr
    assert "hunter2pw" not in result.output


def test_bad_or_duplicate_lines_name_the_line_and_nothing_runs(tmp_path: Path, make: Any) -> None:
    a, b = make(2)
    same_a = a.replace("127.0.0.1", "127.0.0.1").replace("postgres@", "someone@")
    cases = [
        (f"one={a}\ntwo={b}\nthree={same_a}\n", "line 3", "listed twice (also targets.txt line 1)"),
        (f"one={a}\none={b}\n", "line 2", "the name one is used twice"),
        (f"{a}\n\n# fine\nnot a url\n", "line 4", "expected a postgresql:// URL"),
        (f"{a}\nx=postgresql://h:notaport/db\n", "line 2", "targets.txt line 2"),
        ("# nothing but comments\n", "no targets", "lists no database"),
    ]
    for text, where, needle in cases:
        path = tmp_path / "targets.txt"
        path.write_text(text)
        result = run_cli("patient", "up", "--targets-file", str(path))
        assert result.exit_code == 2, (text, result.output)
        (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert where in line and needle in line, line
        assert history(a) == [] and history(b) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--shard", "3/3"], "index must be 0..N-1"),
        (["--shard", "1-of-3"], "is not I/N"),
        (["--shard", "auto"], "JOB_COMPLETION_INDEX and JOB_COMPLETIONS"),
        (["--canary", "ten"], "not a count or a percentage"),
        (["--max-failures", "150%"], "not a count or a percentage"),
        (["--per-host", "0"], "must be at least 1"),
        (["--url", "postgresql://h/db"], "give one source of targets"),
        (["--registry-query", "SELECT 1"], "go together"),
        (["--only", "/no/such/report.json"], "cannot read --only"),
    ],
)
def test_fleet_usage_errors(tmp_path: Path, make: Any, args: list[str], needle: str) -> None:
    (url,) = make(1)
    targets = write_targets(tmp_path / "targets.txt", [url])
    result = run_cli("patient", "up", "--targets-file", str(targets), *args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.output
    assert history(url) == []


# --- caps, canary, failure budget ---------------------------------------------------------


def test_one_server_never_runs_more_than_per_host_migrations(
    server: str, make: Any, tmp_path: Path
) -> None:
    """Two "servers" (two relays to the test server), six databases each, listed
    interleaved. Every database's migration lock is held by the test, so each migration the
    runner starts waits in plain sight in pg_stat_activity."""
    urls = make(12)
    key = lock_key("patient")
    with DelayedRelay(server, 0) as one, DelayedRelay(server, 0) as two:
        port = {u: (one.port if i % 2 == 0 else two.port) for i, u in enumerate(urls)}
        listed = [
            Settings("t", u, "t").parts._replace(hosts=(("127.0.0.1", port[u]),)).url()
            for u in urls
        ]
        wait_until(lambda: _connects(listed), "both relays to listen")
        holders = [psycopg.connect(u, autocommit=True) for u in urls]
        try:
            for conn in holders:
                conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
            held = {c.info.backend_pid for c in holders}
            group = {name_of(u): port[u] for u in urls}
            peak: Counter[int] = Counter()
            stop = threading.Event()

            def running() -> Counter[int]:
                rows = query(
                    server,
                    "SELECT datname, pid FROM pg_stat_activity WHERE datname = ANY(%s)"
                    # A run that let its lock go is over: its backend may still be on its
                    # way out when the next run on that server connects.
                    " AND NOT (state = 'idle' AND query LIKE 'SELECT pg_catalog.pg_advisory_unlock(%%')",
                    [list(group)],
                )
                # A migration may use more than one session: count databases, not sessions.
                return Counter(group[d] for d in {d for d, pid in rows if pid not in held})

            def sample() -> None:
                while not stop.is_set():
                    for host, n in running().items():
                        peak[host] = max(peak[host], n)
                    time.sleep(0.005)

            targets = write_targets(tmp_path / "targets.txt", listed)
            runner = Spawned(
                migrate_cmd(
                    "patient",
                    "up",
                    "--targets-file",
                    str(targets),
                    "--version",
                    str(FIRST),
                    "--jobs",
                    "6",
                    "--per-host",
                    "2",
                    "--lock-wait",
                    "120",
                )
            )
            # The quick look at every target (short reads, many at once) is over once a
            # migration waits for its lock; from then on every session here is a migration.
            runner.wait_for("for the migration lock held by pid")
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            # Six workers, but only two may be at each server: four wait on the locks.
            wait_until(
                lambda: running() == Counter({one.port: 2, two.port: 2}),
                "two migrations waiting at each server",
            )
            for conn in holders:  # let them through one database at a time
                conn.execute("SELECT pg_advisory_unlock_all()")
            code, out, err = runner.finish(timeout=120)
            stop.set()
            sampler.join()
        finally:
            for conn in holders:
                conn.close()
    assert code == 0, err
    assert out.splitlines()[0] == "up: 12 database(s): 12 migrated"
    assert peak == Counter({one.port: 2, two.port: 2}), peak
    assert all(history(u) == [FIRST] for u in urls)


def _connects(urls: list[str]) -> bool:
    try:
        for url in (urls[0], urls[1]):
            psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def test_a_failing_canary_stops_everything_else(make: Any, tmp_path: Path) -> None:
    urls = make(6)
    break_first_step(urls[1])
    targets = write_targets(tmp_path / "targets.txt", urls)
    result = run_cli(
        "patient",
        "up",
        "--targets-file",
        str(targets),
        "--version",
        str(FIRST),
        "--canary",
        "2",
        "--jobs",
        "2",
        "--json",
    )
    assert result.exit_code == 1
    found = report(result)
    outcome = {t["target"]: t["outcome"] for t in found["targets"]}
    assert outcome["clinic-1"] == "failed"
    assert [outcome[f"clinic-{i}"] for i in range(2, 6)] == ["skipped"] * 4
    assert found["summary"]["skipped"] == 4 and found["summary"]["failed"] == 1
    codes = {t["target"]: t["exit_code"] for t in found["targets"]}
    assert [codes[f"clinic-{i}"] for i in range(2, 6)] == [None] * 4  # never ran: no exit code
    assert codes["clinic-1"] == 1 and codes["clinic-0"] == 0
    assert all(history(u) == [] for u in urls[1:])
    # The canary that worked stays migrated (it is not rolled back).
    assert history(urls[0]) == [FIRST] and outcome["clinic-0"] == "migrated"


def test_max_failures_stops_new_work_and_only_reruns_the_rest(make: Any, tmp_path: Path) -> None:
    urls = make(8)
    for url in urls[:3]:
        break_first_step(url)
    targets = write_targets(tmp_path / "targets.txt", urls)
    run = ["patient", "up", "--targets-file", str(targets), "--version", str(FIRST)]
    result = run_cli(*run, "--jobs", "1", "--max-failures", "10%", "--json")  # 10% of 8: 1
    assert result.exit_code == 1
    found = report(result)
    outcome = [t["outcome"] for t in found["targets"]]
    assert outcome == ["failed", "failed"] + ["skipped"] * 6, outcome
    assert all(history(u) == [] for u in urls)

    text = run_cli(*run, "--jobs", "1", "--max-failures", "1")
    assert text.exit_code == 1
    lines = text.stdout.splitlines()
    assert lines[0] == "up: 8 database(s): 2 failed, 6 skipped"
    assert [ln.split(":")[1].strip() for ln in lines if ln.startswith("failed:")] == [
        "clinic-0",
        "clinic-1",
    ]
    assert sum(ln.startswith("skipped:") for ln in lines) == 1  # counted, not listed one by one

    saved = tmp_path / "report.json"
    saved.write_text(result.stdout)
    for url in urls[:3]:  # fix the broken ones
        query(url, "DROP TABLE patients")
    history_before = {u: history(u) for u in urls}
    query(urls[7], "CREATE TABLE patients (id int)")  # listed as skipped: it is rerun
    fixed = run_cli(*run, "--only", str(saved), "--json")
    assert fixed.exit_code == 1
    rerun = report(fixed)
    assert len(rerun["targets"]) == 8  # every failed and skipped target of the report
    assert [t["outcome"] for t in rerun["targets"]][:7] == ["migrated"] * 7
    assert history_before == {u: [] for u in urls}
    query(urls[7], "DROP TABLE patients")
    done = run_cli(*run, "--only", str(saved))
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == "up: 8 database(s): 7 at head, 1 migrated"
    assert all(history(u) == [FIRST] for u in urls)


# --- shards ------------------------------------------------------------------------------------


def test_shards_over_processes_cover_every_target_exactly_once(make: Any, tmp_path: Path) -> None:
    urls = make(30)
    targets = write_targets(tmp_path / "targets.txt", urls)
    count = 3
    spawned = [
        Spawned(
            migrate_cmd(
                "patient",
                "up",
                "--targets-file",
                str(targets),
                "--version",
                str(FIRST),
                "--shard",
                "auto",
                "--jobs",
                "2",
                "--json",
            ),
            env={"JOB_COMPLETION_INDEX": str(i), "JOB_COMPLETIONS": str(count)},
        )
        for i in range(count)
    ]
    taken: list[list[str]] = []
    for proc in spawned:
        code, out, err = proc.finish(timeout=120)
        assert code == 0, err
        taken.append([t["target"] for t in json.loads(out)["targets"]])
    every = [name for shard in taken for name in shard]
    assert sorted(every) == sorted(f"clinic-{i}" for i in range(30))  # each exactly once
    assert all(shard for shard in taken)  # none empty for 30 targets over 3 shards
    assert all(history(u) == [FIRST] for u in urls)
    # The partition is stable: the same shard takes the same targets again.
    again = run_cli("patient", "status", "--targets-file", str(targets), "--shard", "1/3", "--json")
    assert sorted(t["target"] for t in report(again)["targets"]) == sorted(taken[1])


def test_overlapping_shards_are_harmless(make: Any, tmp_path: Path) -> None:
    urls = make(10)
    targets = write_targets(tmp_path / "targets.txt", urls)
    both = [
        Spawned(
            migrate_cmd(
                "patient",
                "up",
                "--targets-file",
                str(targets),
                "--version",
                str(SECOND),
                "--shard",
                "0/1",
                "--jobs",
                "2",
                "--json",
            )
        )
        for _ in range(2)
    ]
    for proc in both:
        code, _, err = proc.finish(timeout=120)
        assert code == 0, err
    for url in urls:
        rows = query(url, "SELECT version, count(*) FROM schema_migrations GROUP BY 1 ORDER BY 1")
        assert rows == [(v, 1) for v in UP_TO_SECOND]


# --- a killed runner -------------------------------------------------------------------------


def test_a_rerun_after_sigkill_finishes_the_rest(server: str, make: Any, tmp_path: Path) -> None:
    urls = make(12)
    targets = write_targets(tmp_path / "targets.txt", urls)
    run = ["patient", "up", "--targets-file", str(targets), "--version", str(SECOND)]
    runner = Spawned(migrate_cmd(*run, "--jobs", "2"))
    # Kill it once one database has committed both versions (a state in the database, not
    # a line on stderr: a step is reported before its transaction commits).
    wait_until(lambda: any(history(u) == UP_TO_SECOND for u in urls), "a finished target", 60)
    os.kill(runner.proc.pid, signal.SIGKILL)
    runner.proc.wait(timeout=30)
    names = [name_of(u) for u in urls]
    # Its workers die with it: no session of the fleet is left on any database.
    wait_until(
        lambda: (
            not query(server, "SELECT 1 FROM pg_stat_activity WHERE datname = ANY(%s)", [names])
        ),
        "the killed runner's sessions to go",
    )
    states = [history(u) for u in urls]
    assert any(s == UP_TO_SECOND for s in states)
    assert not all(s == UP_TO_SECOND for s in states)  # killed part-way
    rerun = run_cli(*run, "--jobs", "2", "--json")
    assert rerun.exit_code == 0, rerun.output
    kinds = Counter(t["outcome"] for t in report(rerun)["targets"])
    assert kinds["migrated"] >= 1 and kinds["failed"] == 0
    for url in urls:
        rows = query(url, "SELECT version, count(*) FROM schema_migrations GROUP BY 1 ORDER BY 1")
        assert rows == [(v, 1) for v in UP_TO_SECOND]
        assert query(url, "SELECT version_num FROM alembic_version") == [(f"{SECOND:04d}",)]


# --- reporting ---------------------------------------------------------------------------------


def test_fleet_status_metrics_count_the_targets_behind(make: Any, tmp_path: Path) -> None:
    """A status over a fleet writes how many targets are behind, and 0 once none is: a
    count it left out would keep the last status's figure in the merged file."""
    urls = make(3)
    targets = write_targets(tmp_path / "targets.txt", urls)
    metrics = tmp_path / "m.prom"
    up = run_cli("patient", "up", "--url", urls[0])
    assert up.exit_code == 0, up.output
    look = ["patient", "status", "--targets-file", str(targets), "--metrics-file", str(metrics)]
    shown = run_cli(*look)
    assert shown.exit_code == 0
    assert "at at" not in shown.stdout and "behind: 2 empty" in shown.stdout, shown.stdout
    for name in ("clinic-1", "clinic-2"):  # each target that needs a look, by name
        assert f"behind: {name}: empty, pending" in shown.stdout, shown.stdout
    assert all(len(line) <= 80 for line in shown.stdout.splitlines()), shown.stdout
    assert fleet_targets(metrics)["behind"] == 2
    assert fleet_targets(metrics)["at_head"] == 1
    for url in urls[1:]:
        assert run_cli("patient", "up", "--url", url).exit_code == 0
    assert run_cli(*look).exit_code == 0
    assert fleet_targets(metrics)["behind"] == 0
    assert fleet_targets(metrics)["at_head"] == 3


def test_fleet_metrics_are_aggregates_unless_asked(make: Any, tmp_path: Path) -> None:
    urls = make(3)
    break_first_step(urls[2])
    targets = write_targets(tmp_path / "targets.txt", urls)
    metrics = tmp_path / "m.prom"
    result = run_cli(
        "patient",
        "up",
        "--targets-file",
        str(targets),
        "--version",
        str(FIRST),
        "--metrics-file",
        str(metrics),
    )
    assert result.exit_code == 1
    text = metrics.read_text()
    assert fleet_targets(metrics)["migrated"] == 2
    assert fleet_targets(metrics)["failed"] == 1
    assert fleet_targets(metrics)["at_head"] == 0
    assert "migrate_fleet_slowest_seconds{" in text and 'target="clinic-' in text
    assert "migrate_current_version" not in text  # no per-target series by default
    again = run_cli(
        "patient",
        "up",
        "--targets-file",
        str(targets),
        "--version",
        str(FIRST),
        "--metrics-file",
        str(metrics),
        "--metrics-per-target",
    )
    assert again.exit_code == 1
    text = metrics.read_text()
    assert fleet_targets(metrics)["at_head"] == 2
    assert fleet_targets(metrics)["migrated"] == 0
    assert text.count("migrate_current_version{") == 3
    assert text.count("migrate_fleet_slowest_seconds{") == 1  # replaced, not added


def test_an_empty_shard_is_fine(make: Any, tmp_path: Path) -> None:
    (url,) = make(1)
    targets = write_targets(tmp_path / "targets.txt", [url])
    results = [
        run_cli("patient", "up", "--targets-file", str(targets), "--shard", f"{i}/2")
        for i in range(2)
    ]
    assert [r.exit_code for r in results] == [0, 0]
    assert sorted(r.stdout.splitlines()[0] for r in results) == [
        "up: 0 database(s): no targets",
        "up: 1 database(s): 1 migrated",
    ]


# --- signals and dead workers ----------------------------------------------------------------


def slow_fleet(make: Any, tmp_path: Path, count: int, seconds: float) -> tuple[Path, list[str]]:
    """``count`` user databases at head, and a project whose next step sleeps ``seconds``
    on the server (a step a signal meets mid-statement)."""
    import shutil

    from conftest import ROOT, add_step

    root = tmp_path / "project"
    shutil.copytree(
        ROOT / "services", root / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    urls = make(count)
    for url in urls:
        assert run_cli("user", "up", "--url", url).exit_code == 0
    add_step(root, "user", f"    op.execute('SELECT pg_sleep({seconds})')", "Sleeps")
    return root, urls


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(p) for p in found]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_fleet_rolls_back_what_runs_and_reports_everything(
    make: Any, tmp_path: Path, signum: int
) -> None:
    root, urls = slow_fleet(make, tmp_path, 5, 60)
    head = versions("user")[-1]
    targets = write_targets(tmp_path / "targets.txt", urls)
    events, report_file = tmp_path / "events.jsonl", tmp_path / "report.json"
    run = ["user", "up", "--targets-file", str(targets), "--jobs", "2", "--per-host", "2"]
    fleet = Spawned(
        migrate_cmd(*run, "--json", "--events", str(events)), env={"MIGRATE_ROOT": str(root)}
    )
    names = [name_of(u) for u in urls]
    sleeping = wait_until(
        lambda: (
            len(rows := query(urls[0], "SELECT datname FROM pg_stat_activity WHERE datname = ANY(%s)"
                              " AND query LIKE %s", [names, "%pg_sleep%"])) == 2 and rows
        ),
        "two targets in the sleeping step",
    )  # fmt: skip
    os.kill(fleet.proc.pid, signum)
    code, stdout, _ = fleet.finish(timeout=120)
    assert code == 128 + signum
    found = json.loads(stdout)
    report_file.write_text(stdout)
    by_name = {name_of(u): t for u, t in zip(urls, found["targets"], strict=True)}
    interrupted = {n for n, t in by_name.items() if t["outcome"] == "failed"}
    assert interrupted == {r[0] for r in sleeping}
    for name in interrupted:
        assert f"interrupted ({signal.Signals(signum).name})" in by_name[name]["error"]
    untouched = set(names) - interrupted
    assert {by_name[n]["outcome"] for n in untouched} == {"skipped"}
    assert {by_name[n]["exit_code"] for n in untouched} == {None}
    for url in urls:  # the sleeping step was rolled back everywhere; nothing else ran
        assert history(url) == [v for v in versions("user") if v <= head]
    wait_until(
        lambda: (
            not query(
                urls[0],
                "SELECT 1 FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
                [names],
            )
        ),
        "the stopped run's sessions to go",
    )
    written = [json.loads(line) for line in events.read_text().splitlines()]
    assert written[-1]["event"] == "run_finished" and written[-1]["ok"] is False
    # --only reruns what did not finish (here: with the step made quick)
    step = next((root / "services" / "user" / "migrations" / "versions").glob("*_extra_*.py"))
    step.write_text(step.read_text().replace("pg_sleep(60)", "pg_sleep(0)"))
    rerun = run_cli(*run, "--only", str(report_file), "--json", env={"MIGRATE_ROOT": str(root)})
    assert rerun.exit_code == 0, rerun.output
    for url in urls:
        assert history(url)[-1] == head + 1


@pytest.mark.slow
def test_a_worker_killed_by_sigkill_fails_only_its_target(make: Any, tmp_path: Path) -> None:
    root, urls = slow_fleet(make, tmp_path, 4, 3)
    head = versions("user")[-1]
    targets = write_targets(tmp_path / "targets.txt", urls)
    run = ["user", "up", "--targets-file", str(targets), "--jobs", "2", "--per-host", "2", "--json"]
    fleet = Spawned(migrate_cmd(*run), env={"MIGRATE_ROOT": str(root)})
    names = [name_of(u) for u in urls]
    wait_until(
        lambda: query(urls[0], "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)"
                      " AND query LIKE %s", [names, "%pg_sleep%"])[0][0] == 2,
        "two targets in the sleeping step",
    )  # fmt: skip
    victim = children(fleet.proc.pid)[0]  # the OOM killer's choice
    os.kill(victim, signal.SIGKILL)
    code, stdout, _ = fleet.finish(timeout=120)
    assert code == 1
    found = json.loads(stdout)
    outcomes = Counter(t["outcome"] for t in found["targets"])
    assert outcomes == Counter({"migrated": 3, "failed": 1}), found
    (dead,) = [t for t in found["targets"] if t["outcome"] == "failed"]
    assert "worker died (signal 9)" in dead["error"]
    done = [history(u)[-1] for u in urls]
    assert sorted(done) == [head] + [head + 1] * 3


def test_workers_are_kept_for_the_next_target(make: Any, tmp_path: Path) -> None:
    """A fleet forks at most --jobs workers, each taking target after target (its imports
    and history read once), not one process per target."""
    import shutil

    from conftest import ROOT, add_step

    root = tmp_path / "project"
    shutil.copytree(
        ROOT / "services", root / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    add_step(
        root,
        "user",
        "    import os\n\n    op.execute(f'CREATE TABLE worker_pid AS SELECT {os.getpid()} AS pid')",
    )
    urls = make(6)
    targets = write_targets(tmp_path / "targets.txt", urls)
    run = ["user", "up", "--targets-file", str(targets), "--jobs", "2", "--per-host", "2", "--json"]
    done = subprocess.run(
        migrate_cmd(*run),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MIGRATE_ROOT": str(root)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Counter(t["outcome"] for t in report(done)["targets"]) == Counter({"migrated": 6})
    pids = {query(u, "SELECT pid FROM worker_pid")[0][0] for u in urls}
    assert 1 <= len(pids) <= 2, pids
