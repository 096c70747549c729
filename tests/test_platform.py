"""The whole platform: all up/status, cross-service requires, seeds, compose, many targets, events."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import phonenumbers
import psycopg
import pytest
import yaml
from conftest import (
    ROOT,
    Spawned,
    alembic_head,
    applied_by_default,
    before_first_contract,
    create_database,
    drop_database,
    fleet_targets,
    history,
    prometheus,
    query,
    release,
    run_cli,
    versions,
    wait_until,
)

from alembic_common.core.settings import Settings

SERVICES = ("user", "patient", "appointment")


@pytest.fixture
def platform(server: str) -> dict[str, str]:
    """A fresh database per service, named by <SERVICE>_DATABASE_URL."""
    urls = {name: create_database(server) for name in SERVICES}
    yield {f"{name.upper()}_DATABASE_URL": url for name, url in urls.items()}
    for url in urls.values():
        drop_database(server, url)


def _url(env: dict[str, str], name: str) -> str:
    return env[f"{name.upper()}_DATABASE_URL"]


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _metrics(path: Path) -> dict[tuple[str, str, str], float]:
    """(metric, service, target) -> value."""
    found = {}
    for (name, labels), value in prometheus(path).items():
        shown = dict(labels)
        if shown.keys() == {"service", "target"}:
            found[name, shown["service"], shown["target"]] = value
    return found


def test_all_up_reaches_head_in_dependency_order(platform: dict[str, str], tmp_path: Path) -> None:
    events_file, metrics_file = tmp_path / "events.jsonl", tmp_path / "migrate.prom"
    status = run_cli("all", "status", "--json", env=platform)
    assert status.exit_code == 1  # everything is behind
    waiting = {s["service"]: s["unmet"] for s in json.loads(status.stdout)["services"]}
    assert any("appointment 1 requires patient 1" in u for u in waiting["appointment"])

    result = run_cli(
        "all",
        "up",
        "--jobs",
        "2",
        "--events",
        str(events_file),
        "--metrics-file",
        str(metrics_file),
        env=platform,
    )
    assert result.exit_code == 0, result.output
    assert history(_url(platform, "user")) == versions("user")
    for name in SERVICES:  # no release is connected: contract steps run too
        assert history(_url(platform, name)) == applied_by_default(name)

    events = _events(events_file)
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "run_finished"
    assert events[-1]["ok"] is True
    applied = [(e["service"], e["version"]) for e in events if e["event"] == "applied"]
    assert sorted(applied) == sorted((n, v) for n in SERVICES for v in applied_by_default(n))
    order = {pair: i for i, pair in enumerate(applied)}
    assert order[("appointment", 1)] > order[("patient", 1)]
    assert order[("appointment", 1)] > order[("user", 1)]
    assert all(isinstance(e["duration_ms"], int) for e in events if e["event"] == "applied")
    text = events_file.read_text()
    assert "password" not in text.lower()

    figures = _metrics(metrics_file)
    for name in SERVICES:
        label = Settings(name, _url(platform, name), "t").label
        head = versions(name)[-1]
        current = applied_by_default(name)[-1]
        assert figures["migrate_current_version", name, label] == current
        assert figures["migrate_head_version", name, label] == head
        assert figures["migrate_pending_migrations", name, label] == head - current
        assert figures["migrate_last_run_success", name, label] == 1
    assert "# TYPE migrate_current_version gauge" in metrics_file.read_text()

    # Back before patient's first contract step, with an old release connected: the contract
    # step waits for it and is not "behind"; later work behind it makes 'all up' fail.
    patient = _url(platform, "patient")
    contract = versions("patient")[len(before_first_contract("patient"))]
    assert run_cli("patient", "down", "--version", str(contract), "--url", patient).exit_code == 0
    with release(patient, f"patient@{before_first_contract('patient')[-1]}"):
        again = run_cli("all", "status", "--json", env=platform)
        assert again.exit_code == 0, again.output
        held = {s["service"]: s["held"] for s in json.loads(again.stdout)["services"]}
        expected = {n: versions(n)[len(before_first_contract(n)) :] for n in SERVICES}
        assert held == expected and held["patient"]
        words = run_cli("all", "status", env=platform).stdout
        assert f"contract step {held['patient'][0]} held back by 1 session(s)" in words
        stranded = run_cli("all", "up", env=platform)
        assert (stranded.exit_code == 1) is (len(held["patient"]) > 1), stranded.output
    contracted = run_cli("all", "up", "--contract", env=platform)
    assert contracted.exit_code == 0, contracted.output
    assert history(_url(platform, "patient")) == versions("patient")


def test_appointment_refuses_while_patient_is_behind(platform: dict[str, str]) -> None:
    assert run_cli("user", "up", env=platform).exit_code == 0
    refused = run_cli("appointment", "up", env=platform)
    assert refused.exit_code == 1
    assert "appointment 1 requires patient 1 (patient is at no version in " in refused.stderr
    assert "user" not in refused.stderr.split("requires patient")[1]  # user is satisfied
    assert history(_url(platform, "appointment")) == []
    assert run_cli("patient", "up", "--version", "1", env=platform).exit_code == 0
    result = run_cli("appointment", "up", env=platform)
    assert result.exit_code == 0, result.output
    assert alembic_head(_url(platform, "appointment")) == [f"{versions('appointment')[-1]:04d}"]


def test_a_declared_cycle_is_rejected_and_named(
    project_copy: Path, platform: dict[str, str]
) -> None:
    first = project_copy / "services/patient/migrations/versions/0001_create_patients.py"
    first.write_text(
        first.read_text().replace(
            "depends_on: str | Sequence[str] | None = None\n",
            'depends_on: str | Sequence[str] | None = None\nrequires = {"appointment": 1}\n',
            1,
        )
    )
    env = {**platform, "MIGRATE_ROOT": str(project_copy)}
    for args in (["all", "status"], ["all", "up"], ["patient", "up"]):
        result = run_cli(*args, env=env)
        assert result.exit_code == 1, result.output
        assert (
            "dependency cycle between services: appointment 1 -> patient 1 -> appointment 1"
            in result.stderr
        )
    assert history(_url(platform, "patient")) == []


def test_all_up_stops_scheduling_after_a_failure(platform: dict[str, str]) -> None:
    query(_url(platform, "patient"), "CREATE TABLE patients (id int)")  # v1 will collide with it
    result = run_cli("all", "up", "--jobs", "1", "--json", env=platform)
    assert result.exit_code == 1
    report = {t["service"]: t for t in json.loads(result.stdout)["targets"]}
    assert report["patient"]["state"] == "failed" and "already exists" in report["patient"]["error"]
    assert report["appointment"]["state"] in ("skipped", "not run")
    assert report["appointment"]["exit_code"] is None
    assert history(_url(platform, "appointment")) == []


def test_seeding_is_idempotent_and_fits_each_country(platform: dict[str, str]) -> None:
    assert run_cli("all", "up", env=platform).exit_code == 0
    first = {name: run_cli(name, "seed", "--json", env=platform) for name in SERVICES}
    assert all(r.exit_code == 0 for r in first.values()), {k: r.output for k, r in first.items()}
    assert {k: json.loads(r.stdout)["inserted"] for k, r in first.items()} == {
        "user": 12,
        "patient": 8,
        "appointment": 6,
    }
    patients = _url(platform, "patient")
    snapshot = {
        name: query(
            _url(platform, name),
            "SELECT * FROM "
            + {"user": "users", "patient": "patients", "appointment": "appointments"}[name]
            + " ORDER BY id",
        )
        for name in SERVICES
    }
    second = {name: run_cli(name, "seed", "--json", env=platform) for name in SERVICES}
    assert {k: json.loads(r.stdout)["inserted"] for k, r in second.items()} == dict.fromkeys(
        SERVICES, 0
    )
    assert snapshot["patient"] == query(patients, "SELECT * FROM patients ORDER BY id")
    assert snapshot["user"] == query(_url(platform, "user"), "SELECT * FROM users ORDER BY id")

    entities = dict(query(_url(platform, "user"), "SELECT id, country FROM healthcare_entities"))
    assert sorted(entities.values()) == ["Canada", "France", "Morocco", "USA"]
    prefixes = {"Canada": "+1", "USA": "+1", "Morocco": "+212", "France": "+33"}
    postal = {
        "Canada": r"^[A-Z]\d[A-Z] \d[A-Z]\d$",
        "USA": r"^\d{5}$",
        "Morocco": r"^\d{5}$",
        "France": r"^\d{5}$",
    }
    languages = {
        "Canada": {"fr", "en"},
        "USA": {"en", "es"},
        "Morocco": {"ar", "fr"},
        "France": {"fr"},
    }
    rows = query(
        patients,
        "SELECT healthcare_entity_id, country, phone, postal_code, preferred_language FROM patients",
    )
    assert len(rows) == 8
    for entity, country, phone, code, language in rows:
        assert entities[entity] == country
        assert phone.startswith(prefixes[country]) and phone[1:].isdigit(), phone
        assert re.match(postal[country], code), (country, code)
        assert language in languages[country]
    # The patient seed needs schema version 4, and says so on an older database.
    older = run_cli("patient", "down", "--version", "4", env=platform)
    assert older.exit_code == 0
    refused = run_cli("patient", "seed", env=platform)
    assert refused.exit_code == 1 and "needs schema version 4" in refused.stderr


def test_seed_refuses_production_unless_allowed(platform: dict[str, str]) -> None:
    run_cli("user", "up", env=platform)
    refused = run_cli("user", "seed", env={**platform, "APP_ENV": "production"})
    assert refused.exit_code == 2 and "production" in refused.stderr
    assert query(_url(platform, "user"), "SELECT count(*) FROM users") == [(0,)]
    allowed = run_cli(
        "user", "seed", "--allow-production", env={**platform, "APP_ENV": "production"}
    )
    assert allowed.exit_code == 0


def test_twenty_tenant_databases_with_one_broken(server: str, tmp_path: Path) -> None:
    urls = [create_database(server) for _ in range(20)]
    try:
        broken = urls[7]
        query(broken, "CREATE TABLE patients (id int)")
        events_file, metrics_file = tmp_path / "events.jsonl", tmp_path / "metrics.prom"
        env = {"PATIENT_DATABASE_URLS": ",".join(urls)}
        result = run_cli(
            "patient",
            "up",
            "--jobs",
            "4",
            "--json",
            "--events",
            str(events_file),
            "--metrics-file",
            str(metrics_file),
            "--metrics-per-target",
            env=env,
        )
        assert result.exit_code == 1
        report = json.loads(result.stdout)
        assert report["summary"]["migrated"] == 19 and report["summary"]["failed"] == 1
        assert fleet_targets(metrics_file)["migrated"] == 19
        assert fleet_targets(metrics_file)["failed"] == 1
        states = [t["state"] for t in report["targets"]]
        assert states.count("ok") == 19 and states[7] == "failed"
        for url in urls:
            assert history(url) == ([] if url == broken else applied_by_default("patient"))
        events = _events(events_file)
        failures = [e for e in events if e["event"] == "failed"]
        assert len(failures) == 1 and failures[0]["target"] == Settings("p", broken, "t").label
        assert "version 1" in failures[0]["cause"]
        applied = [e for e in events if e["event"] == "applied"]
        assert len(applied) == 19 * len(applied_by_default("patient"))
        assert events[-1]["event"] == "run_finished" and events[-1]["failed"] == 1
        figures = _metrics(metrics_file)
        label = Settings("p", broken, "t").label
        assert figures["migrate_last_run_success", "patient", label] == 0
        assert figures["migrate_pending_migrations", "patient", label] == len(versions("patient"))
        good = Settings("p", urls[0], "t").label
        assert (
            figures["migrate_current_version", "patient", good] == applied_by_default("patient")[-1]
        )
        status = run_cli(
            "patient", "status", "--json", *[arg for u in urls[:3] for arg in ("--url", u)]
        )
        assert status.exit_code == 0 and len(json.loads(status.stdout)["targets"]) == 3
    finally:
        for url in urls:
            drop_database(server, url)


# docker-compose: no engine here, so check the file and run each job's command for real.

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _interpolate(value: str) -> str:
    value = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: os.environ.get(m.group(1), ""), value)
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), value)


def test_compose_wires_databases_jobs_and_apps() -> None:
    for name in SERVICES:
        db, job, app = COMPOSE[f"{name}-db"], COMPOSE[f"{name}-migrate"], COMPOSE[f"{name}-service"]
        assert db["container_name"] == f"healthcare-{name}-db"
        database = f"{name}_service_db"
        assert db["environment"]["POSTGRES_DB"] == database
        assert "pg_isready" in " ".join(db["healthcheck"]["test"]) and database in " ".join(
            db["healthcheck"]["test"]
        )
        volume = db["volumes"][0].split(":")[0]
        assert volume in yaml.safe_load((ROOT / "docker-compose.yml").read_text())["volumes"]
        assert job["build"] == "."
        assert job["command"] == ["python", "scripts/migrate.py", name, "up", "--wait", "60"]
        assert f"@{name}-db:5432/{database}" in job["environment"][f"{name.upper()}_DATABASE_URL"]
        assert job["depends_on"][f"{name}-db"] == {"condition": "service_healthy"}
        # The application connects as its login role (never the owner), made by a job after
        # the migration; the password comes from the environment, never from the file.
        login = COMPOSE[f"{name}-login"]
        assert app["depends_on"] == {
            f"{name}-login": {"condition": "service_completed_successfully"}
        }
        assert login["depends_on"][f"{name}-migrate"] == {
            "condition": "service_completed_successfully"
        }
        variable = f"{name.upper()}_APP_PASSWORD"
        assert login["command"] == [
            "python",
            "scripts/migrate.py",
            name,
            "login",
            f"{name}_login",
            "--login-password-env",
            variable,
        ]
        assert login["environment"][variable].startswith(f"${{{variable}:?")
        assert app["environment"]["DATABASE_URL"].startswith(f"postgresql://{name}_login@")
        assert app["environment"]["PGPASSWORD"].startswith(f"${{{variable}:?")
    appointment = COMPOSE["appointment-migrate"]["depends_on"]
    for needed in ("patient", "user"):
        assert appointment[f"{needed}-migrate"] == {"condition": "service_completed_successfully"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M), "the image must not run as root"
    install = re.search(r"^RUN pip install (.+)$", dockerfile, re.M)
    assert install and install.group(1).strip() == ".", "runtime dependencies only (no extras)"


def test_the_image_starts_without_compiling_its_own_code(tmp_path: Path, db: str) -> None:
    """The image copies the sources and runs as a user who cannot write them, with
    PYTHONDONTWRITEBYTECODE: unless its build made the bytecode and each history's cache of
    declarations, every container start (the startup hook) makes them again. The
    Dockerfile's COPY lines and the RUN lines after them are run here on a copy laid out as
    the image is, then a start is made there: it writes nothing."""
    import importlib.util
    import shutil

    from alembic_common.core import services

    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", "")
    app = tmp_path / "app"
    copied = list(re.finditer(r"^COPY (\S+) \./(\S*)$", dockerfile, re.M))
    for found in copied:
        origin, made = ROOT / found.group(1), app / found.group(2)
        if origin.is_dir():
            shutil.copytree(origin, made, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            made.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, made)
    python = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    image = {**os.environ, **python, "PYTHONDONTWRITEBYTECODE": "1", "MIGRATE_ROOT": str(app)}
    builds = re.findall(r"^RUN (.+)$", dockerfile[copied[-1].end() :], re.M)
    assert builds, "nothing is built after the sources are copied"
    for command in builds:
        subprocess.run(["sh", "-c", command], cwd=app, env=image, check=True, capture_output=True)
    sources = [p for p in app.rglob("*.py") if "__pycache__" not in p.parts]
    assert sources and all(Path(importlib.util.cache_from_source(str(p))).exists() for p in sources)
    for name, service in services.discover(app).items():
        assert (service.versions_dir / services.CACHE).exists(), name
    before = {p: p.stat().st_mtime_ns for p in app.rglob("*")}
    started = subprocess.run(
        [sys.executable, "scripts/migrate.py", "patient", "up", "--url", db],
        cwd=app,
        env=image,
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr
    assert {p: p.stat().st_mtime_ns for p in app.rglob("*")} == before


def _job_order() -> list[str]:
    jobs = [n for n in COMPOSE if n.endswith(("-migrate", "-login"))]
    order: list[str] = []
    while len(order) < len(jobs):
        for job in jobs:
            needs = [d for d in COMPOSE[job].get("depends_on", {}) if d in jobs]
            if job not in order and all(n in order for n in needs):
                order.append(job)
    return order


def test_compose_migration_jobs_run_against_local_postgres(platform: dict[str, str]) -> None:
    hosts = {f"{name}-db": _url(platform, name) for name in SERVICES}
    passwords = {f"{n.upper()}_APP_PASSWORD": f"pw-{uuid.uuid4().hex}" for n in SERVICES}
    try:
        _run_compose_jobs(hosts, passwords)
        for name in SERVICES:  # each login job made its application's login role
            login = re.match(
                r"postgresql://(\w+)@", COMPOSE[f"{name}-service"]["environment"]["DATABASE_URL"]
            ).group(1)
            member = query(
                _url(platform, name),
                "SELECT r.rolcanlogin, r.rolsuper, pg_has_role(r.oid, %s, 'USAGE')"
                " FROM pg_roles r WHERE r.rolname = %s",
                [f"{name}_app", login],
            )
            assert member == [(True, False, True)], name
    finally:
        for name in SERVICES:
            query(_url(platform, name), f"DROP ROLE IF EXISTS {name}_login")
    assert history(_url(platform, "appointment")) == versions("appointment")
    assert history(_url(platform, "patient")) == applied_by_default("patient")


def _run_compose_jobs(hosts: dict[str, str], passwords: dict[str, str]) -> None:
    """Run every migrate and login job's command, in dependency order, against local
    PostgreSQL; the only change is each compose hostname -> a local database."""
    for job in _job_order():
        spec = COMPOSE[job]
        env = {"PATH": os.environ["PATH"]}
        for key, value in spec["environment"].items():
            if key in passwords:
                env[key] = passwords[key]
                continue
            url = _interpolate(value)
            host = re.match(r"postgresql://[^@]*@([\w-]+):5432/", url).group(1)
            env[key] = hosts[host]
        command = [
            sys.executable if spec["command"][0] == "python" else spec["command"][0],
            *spec["command"][1:],
        ]
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{job}: {done.stderr}"
        for secret in passwords.values():
            assert secret not in done.stdout + done.stderr, job


def _local(compose_url: str, hosts: dict[str, str]) -> str:
    """A compose DATABASE_URL pointed at the local database for its host, query kept."""
    url = _interpolate(compose_url)
    found = re.match(r"postgresql://[^@]*@([\w-]+):5432/\w+(\?.*)?$", url)
    assert found, url
    local = hosts[found.group(1)]
    return local + (("&" if "?" in local else "?") + found.group(2)[1:] if found.group(2) else "")


def test_compose_rolling_deploy_of_two_patient_releases(platform: dict[str, str]) -> None:
    """The compose file's two patient releases, side by side through the phone change."""
    hosts = {f"{name}-db": _url(platform, name) for name in SERVICES}
    previous = COMPOSE["patient-service-previous"]["environment"]["DATABASE_URL"]
    current = COMPOSE["patient-service"]["environment"]["DATABASE_URL"]
    old_version = int(re.search(r"application_name=patient%40(\d+)", previous).group(1))
    new_version = int(re.search(r"application_name=patient%40(\d+)", current).group(1))
    assert new_version in versions("patient") and new_version > old_version
    patient = _url(platform, "patient")
    assert run_cli("patient", "up", "--version", str(old_version), "--url", patient).exit_code == 0
    job = COMPOSE["patient-migrate"]
    env = {"PATH": os.environ["PATH"], "PATIENT_DATABASE_URL": patient}
    command = [sys.executable, *job["command"][1:]]
    old = psycopg.connect(_local(previous, hosts), autocommit=True)
    assert old.execute("SHOW application_name").fetchone() == (f"patient@{old_version}",)
    # The job applies the expand step, then (--wait) waits for the old release to go.
    waiting = Spawned(command, env=env)
    waiting.wait_for(f"contract step {new_version} held back by 1 session(s)")
    wait_until(lambda: history(patient)[-1] == new_version - 1, "the expand step")
    with psycopg.connect(_local(current, hosts), autocommit=True) as new:
        new.execute(
            "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
            " date_of_birth, country, phone) VALUES (1, 'N', 'A', 'B', '1990-01-01',"
            " 'Canada', '+15145550199')"
        )
    (national,) = old.execute("SELECT phone FROM patients").fetchone()
    number = phonenumbers.parse(national, "CA")
    assert not national.startswith("+")
    assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == (
        "+15145550199"
    )
    old.close()  # the old release stops: the job goes on, through the contract to the head
    code, _out, err = waiting.finish()
    assert code == 0, err
    assert history(patient) == versions("patient")
    with psycopg.connect(_local(current, hosts), autocommit=True) as new:
        assert new.execute("SELECT phone FROM patients").fetchone() == ("+15145550199",)
