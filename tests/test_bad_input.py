"""Bad input, on every command: exit 2, one line, no traceback, and the database unchanged.

The cases are a table: each command with each bad value of each option it takes. They
run against one real database at version 2, checked to be exactly as it was after each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import create_database, drop_database, history, query, run_cli

from alembic_common.authoring import schema
from alembic_common.cli.frame import ALL, ALL_ONLY, EMBEDDED, EMBEDDED_ONLY
from alembic_common.core import db as dbmod
from alembic_common.core.settings import Settings

# Commands with the arguments they need to get as far as option checking.
COMMANDS = {
    "up": ["up"],
    "down": ["down", "--version", "2"],
    "status": ["status"],
    "seed": ["seed"],
    "plan": ["plan"],
    "lint": ["lint"],
    "check": ["check"],
    "diff": ["diff"],
    "revision": ["revision", "-m", "nothing", "--autogenerate"],
    "all up": ["up"],
    "all status": ["status"],
    "all report": ["report", "--out", "report.html"],
}
# (option, value, what the one line must say): options every command takes.
CONNECTION = [
    ("--port", "0", "--port"),
    ("--port", "70000", "--port"),
    ("--port", "-5", "--port"),
    ("--port", "x", "--port"),
    ("--connect-timeout", "0", "--connect-timeout"),
    ("--connect-timeout", "-1", "--connect-timeout"),
    ("--connect-timeout", "nan", "--connect-timeout"),
    ("--connect-timeout", "1.5", "--connect-timeout"),
]
TIMEOUTS = {
    "--lock-timeout": ("up", "down"),
    "--statement-timeout": ("up", "down"),
    "--lock-wait": ("up", "down"),
    "--wait": ("up",),
}
BAD_SECONDS = ["-1", "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "soon"]
URLS = [
    ("postgresql://postgres@127.0.0.1/db?bogus=1", "unknown query parameter 'bogus'"),
    ("postgresql://postgres@127.0.0.1/db?sslmode=require&colour=red", "unknown query parameter"),
    ("postgresql://postgres@127.0.0.1/d%zzb", "broken percent escape"),
    ("postgresql://postgres@127.0.0.1/db?application_name=%E0%A4", "percent escape"),
    ("postgresql://postgres@127.0.0.1:0/db", "port outside 1-65535"),
    ("postgresql://postgres@127.0.0.1:65536/db", "port outside 1-65535"),
    ("mysql://root@127.0.0.1/db", "unsupported scheme 'mysql'"),
    ("127.0.0.1:5432/db", "is not a URL"),
    ("", "is empty"),
    ("postgresql://u:pw-9x@/db?host=h1,h2&port=1,2,3", "2 host(s) but 3 ports"),
    ("postgresql://u:pw-9x@h1,h2/db?hostaddr=10.0.0.1", "2 host(s) but 1 host addresses"),
    ("postgresql://u:pw-9x@/db?host=h1&port=5432,5433", "1 host(s) but 2 ports"),
    ("postgresql://u@127.0.0.1/db?sslmode=s3cretmode", "a sslmode that libpq does not take"),
    ("postgresql://u@127.0.0.1/db?sslmode=", "a sslmode that libpq does not take"),
    ("postgresql://u@127.0.0.1/db?target_session_attrs=readwrite", "target_session_attrs"),
    ("postgresql://u@127.0.0.1/db?channel_binding=must", "channel_binding"),
    ("postgresql://u@127.0.0.1/db?keepalives=s3cret", "a keepalives that is not a whole number"),
    ("postgresql://u@127.0.0.1/db?connect_timeout=%D9%A5", "connect_timeout"),
]
ENVIRONMENTS = ["prdo", "Prodution", "live", "productio n", "PROD!"]
# A switch that is neither plainly on nor off (=false must never turn data display on).
SWITCHES = [("MIGRATE_SHOW_DATA", "ture"), ("MIGRATE_SHOW_DATA", "2"), ("MIGRATE_DEBUG", "maybe")]


def _cases() -> Iterator[tuple[str, list[str], dict[str, str], str]]:
    for name, args in COMMANDS.items():
        service = "all" if name.startswith("all") else "patient"
        for option, value, says in CONNECTION:
            yield name, [service, *args, option, value], {}, says
        for option, commands in TIMEOUTS.items():
            if name in commands or (name == "all up" and "up" in commands):
                for value in BAD_SECONDS:
                    yield name, [service, *args, option, value], {}, option
        for value in ENVIRONMENTS:
            yield name, [service, *args], {"APP_ENV": value}, "is not a known environment"
        for switch, value in SWITCHES:
            yield (
                name,
                [service, *args],
                {switch: value},
                f"{switch} {value!r} is neither on nor off",
            )
        if not name.startswith("all"):
            for url, says in URLS:
                yield name, [service, *args, "--url", url], {}, says
    for service, args in (("patient", ["up"]), ("all", ["up"])):
        yield "up", [service, *args, "--retries", "-1"], {}, "--retries"
        yield "up", [service, *args, "--jobs", "0"], {}, "--jobs"
    yield "status", ["patient", "status", "--jobs", "0"], {}, "--jobs"
    yield "down", ["patient", "down", "--version", "2", "--env", "prdo"], {}, "--env 'prdo'"
    yield "seed", ["patient", "seed", "--env", "staging?"], {}, "--env"
    for command in (["up"], ["down", "--version", "2"]):
        for option in ("--metrics-file", "--events"):
            yield (
                command[0],
                ["patient", *command, option, "/no/such/folder/f"],
                {},
                "does not exist",
            )
    yield (
        "status",
        ["patient", "status", "--metrics-file", "/no/such/folder/f"],
        {},
        "does not exist",
    )
    yield "up", ["patient", "up", "--events", "."], {}, "is a folder"
    yield "up", ["patient", "up", "--url", "postgresql://u@h/a", "--url", ""], {}, "is empty"


CASES = list(_cases())


@pytest.fixture(scope="module")
def at_two(server: str) -> Iterator[str]:
    url = create_database(server)
    assert run_cli("patient", "up", "--version", "2", "--url", url).exit_code == 0
    yield url
    drop_database(server, url)


def _snapshot(url: str) -> object:
    with dbmod.connect(Settings("patient", url, "t")) as conn:
        return schema.snapshot(conn), history(url)


@pytest.mark.parametrize(
    ("name", "args", "env", "says"),
    CASES,
    ids=[f"{c[0]}:{' '.join(c[1][2:])}:{c[2]}" for c in CASES],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    name: str, args: list[str], env: dict[str, str], says: str, at_two: str
) -> None:
    before = _snapshot(at_two)
    platform = {f"{s.upper()}_DATABASE_URL": at_two for s in ("patient",)}
    result = run_cli(*args, env={**platform, **env})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("migrate: error: ") and says in lines[0], lines[0]
    assert "s3cret" not in result.output  # a value typed is never quoted back
    assert "Traceback" not in result.output and "error: unexpected" not in result.output
    assert _snapshot(at_two) == before


def test_the_cases_cover_every_option_the_issue_names() -> None:
    named = " ".join(" ".join(args) for _, args, _, _ in CASES)
    for option in (
        "--lock-timeout",
        "--statement-timeout",
        "--wait",
        "--lock-wait",
        "--connect-timeout",
        "--port",
        "--retries",
        "--jobs",
        "--url",
        "--metrics-file",
        "--events",
        "--env",
    ):
        assert option in named, option
    assert any(env.get("APP_ENV") for _, _, env, _ in CASES)
    assert {c[0] for c in CASES} == set(COMMANDS)


@pytest.mark.parametrize("value", ["prod", "Production", " PRODUCTION ", "PROD"])
def test_every_spelling_of_production_is_guarded(value: str, at_two: str) -> None:
    result = run_cli("patient", "down", "--version", "2", "--url", at_two, env={"APP_ENV": value})
    assert result.exit_code == 2 and "refusing 'down' in production" in result.stderr
    assert history(at_two) == [1, 2]


@pytest.mark.parametrize("value", ["dev", "Development", "local", "test", "ci", "staging", ""])
def test_known_environments_are_accepted(value: str, at_two: str) -> None:
    assert run_cli("patient", "status", "--url", at_two, env={"APP_ENV": value}).exit_code == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["patient", "stauts"], "did you mean 'status'"),
        (["patient", "dwon"], "did you mean 'down'"),
        (["all", "stat"], "did you mean 'status'"),
        (["patinet", "up"], "did you mean 'patient'"),
        (["up", "patient"], "the service comes first, as in 'migrate patient up'"),
    ],
)
def test_unknown_words_suggest_the_nearest_real_one(args: list[str], says: str) -> None:
    result = run_cli(*args)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert says in line, line


def test_no_suggestion_that_would_fail_the_same_way() -> None:
    # 'all' takes up, status and report only: 'dwn' must not suggest 'down'.
    result = run_cli("all", "dwn")
    assert result.exit_code == 2 and "down" not in result.stderr.split("(commands:")[0]
    assert "(commands: up, status, report)" in result.stderr


def test_metrics_and_events_need_a_writable_folder_before_anything_runs(
    at_two: str, tmp_path: Path
) -> None:
    missing = tmp_path / "gone" / "m.prom"
    result = run_cli("patient", "up", "--url", at_two, "--metrics-file", str(missing))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert history(at_two) == [1, 2]  # 'up' would have applied 3 and 4
    assert query(at_two, "SELECT count(*) FROM pg_tables WHERE tablename = 'patients'") == [(1,)]
    assert not missing.parent.exists()


# --- echoes and digits -----------------------------------------------------------------------


def numeric_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every command that takes a number."""
    import typer
    from typer._click import types  # typer's own copy of click

    from alembic_common.cli import app

    found = []
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    for name, command in sorted(group.commands.items()):
        for param in command.params:
            kind = param.type
            numeric = isinstance(kind, types.IntParamType | types.FloatParamType) or (
                getattr(kind, "name", "") in ("integer", "seconds")
            )
            if isinstance(param, typer.core.TyperOption) and numeric:
                found.append((name, max(param.opts, key=len)))
    return found


NUMERIC = numeric_options()


def test_the_numeric_options_are_found() -> None:
    assert ("down", "--version") in NUMERIC and ("up", "--retries") in NUMERIC
    assert ("up", "--port") in NUMERIC and ("up", "--lock-timeout") in NUMERIC


@pytest.mark.parametrize(("command", "option"), NUMERIC)
# Arabic-Indic, full-width, Devanagari digits, and two Arabic-Indic ones
@pytest.mark.parametrize("digits", ["\u0665", "\uff15", "\u096b", "\u0663\u0660"])
def test_numbers_are_ascii_digits_only(at_two: str, command: str, option: str, digits: str) -> None:
    args = {"login": ["somebody"], "restore": ["backup.dump"]}.get(command, [])
    if command in EMBEDDED_ONLY:  # the embedded server's own commands take no URL
        result = run_cli(EMBEDDED, command, option, digits)
    elif command in ALL_ONLY:  # the platform's own: each service uses its own settings
        result = run_cli(ALL, command, "--out", "report.html", option, digits)
    else:
        result = run_cli("patient", command, *args, option, digits, "--url", at_two)
    assert result.exit_code == 2, result.output
    assert "ASCII digits" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert digits not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--url", "postgresql://u:first-half", "second-half-of-pw@127.0.0.1/x"],
        ["up", "--url", "postgresql://u:first", "pass phrase@127.0.0.1/x"],
        ["down", "--version", "3", "x9-secret-extra"],
        ["status", "--port", "543two-secret"],
    ],
)
def test_no_usage_error_echoes_what_was_typed(args: list[str]) -> None:
    result = run_cli("patient", *args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    for typed in args[2:]:
        for fragment in {typed, *typed.replace("@", " ").replace(":", " ").split()}:
            if len(fragment) >= 4 and not fragment.startswith(("-", "postgresql")):
                assert fragment not in result.output, (fragment, result.output)


def test_an_empty_variable_naming_a_peer_is_a_usage_error(server: str) -> None:
    """A service whose first step requires another's reads that one's variable: set but
    empty (an unset shell variable), it is bad usage, as for the service's own."""
    from conftest import SERVICES, services

    needing = {
        name: sorted(m.requires)
        for name in SERVICES
        for m in services.get(name).migrations[:1]
        if m.requires
    }
    if not needing:
        pytest.skip("no service's first step requires another's")
    name, others = sorted(needing.items())[0]
    url = create_database(server)
    try:
        empty = {f"{other.upper()}_DATABASE_URL": "" for other in others}
        result = run_cli(name, "up", "--url", url, env=empty)
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert f"{others[0].upper()}_DATABASE_URL is empty" in line
        assert history(url) == []
    finally:
        drop_database(server, url)
