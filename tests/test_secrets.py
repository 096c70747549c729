"""No password ever reaches the output, on any failing path; wrong passwords fail cleanly."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import SECRET, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alembic_common.errors import ConfigError
from alembic_common.settings import mask, normalize_url

WRONG = "Wr0ng-pa55word?"


def assert_clean(output: str, *secrets: str) -> None:
    for secret in (SECRET, WRONG, quote(SECRET, safe=""), quote(WRONG, safe=""), *secrets):
        assert secret not in output, f"{secret!r} leaked in:\n{output}"


def test_wrong_password_is_one_line_exit_1(auth_server: str) -> None:
    result = run_cli("patient", "up", "--url", auth_server.format(password=quote(WRONG)))
    assert result.exit_code == 1
    assert "authentication failed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_clean(result.output)


def test_right_password_works_and_json_shows_it_masked(auth_server: str, tmp_path: Path) -> None:
    url = auth_server.format(password=quote(SECRET))
    result = run_cli("user", "up", "--json", "--url", url)
    assert result.exit_code == 0, result.output
    assert "postgres:***@" in json.loads(result.stdout)["database"]
    status = run_cli("user", "status", "--json", "--url", url)
    assert status.exit_code == 0
    assert_clean(result.output + status.output)
    # The password may come from a file instead of the command line...
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    bare = auth_server.replace("{password}", "").replace("postgres:@", "postgres@")
    from_file = run_cli("user", "status", "--url", bare, "--password-file", str(secret_file))
    assert from_file.exit_code == 0, from_file.output
    # ...or from PGPASSWORD, which libpq reads itself.
    from_env = run_cli("user", "status", "--url", bare, env={"PGPASSWORD": SECRET})
    assert from_env.exit_code == 0, from_env.output
    assert_clean(from_file.output + from_env.output)


FAILING_PATHS = [
    ["patient", "up", "--url", f"postgresql://postgres:{quote(SECRET)}@127.0.0.1:1/x"],
    [
        "patient",
        "status",
        "--url",
        f"postgresql://postgres:{quote(SECRET)}@127.0.0.1:1/x",
        "--debug",
    ],
    ["patient", "up", "--url", f"postgresql://postgres:{quote(SECRET)}@127.0.0.1:notaport/x"],
    ["patient", "up", "--url", f"postgres://postgres:{SECRET}@127.0.0.1:1/x"],
    ["patient", "up", "--url", f"mysql://root:{quote(SECRET)}@127.0.0.1/x"],
    ["patient", "up", "--host", "127.0.0.1", "--port", "1", "--password", SECRET],
    ["patient", "up", "--host", "127.0.0.1", "--port", "1", "--password", SECRET, "--debug"],
    [
        "patient",
        "up",
        "--version",
        "99",
        "--url",
        f"postgresql://postgres:{quote(SECRET)}@127.0.0.1:1/x",
    ],
    ["patient", "down", "--url", f"postgresql://postgres:{quote(SECRET)}@127.0.0.1:1/x"],
    ["nosuch", "up", "--url", f"postgresql://postgres:{quote(SECRET)}@127.0.0.1:1/x"],
]


@pytest.mark.parametrize("args", FAILING_PATHS)
def test_failing_paths_never_print_the_password(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.exit_code in (1, 2)
    assert_clean(result.output)


def test_env_passwords_never_printed() -> None:
    env = {"PATIENT_DATABASE_URL": f"postgresql://postgres:{quote(SECRET)}@127.0.0.1:1/x"}
    result = run_cli("patient", "up", "--debug", env=env)
    assert result.exit_code == 1
    assert_clean(result.output)


def test_auth_failures_never_print_the_password(auth_server: str, tmp_path: Path) -> None:
    missing_db = auth_server.format(password=quote(SECRET)).replace("/authdb", "/nope")
    outputs = [
        run_cli("patient", "up", "--url", missing_db),
        run_cli("patient", "up", "--url", auth_server.format(password=quote(WRONG)), "--debug"),
        run_cli("patient", "status", "--json", "--url", auth_server.format(password=quote(WRONG))),
    ]
    pw_file = tmp_path / "secret"
    pw_file.write_text(WRONG)
    bare = auth_server.replace("{password}", "").replace("postgres:@", "postgres@")
    outputs.append(run_cli("patient", "up", "--url", bare, "--password-file", str(pw_file)))
    outputs.append(run_cli("patient", "up", "--url", bare, env={"PGPASSWORD": WRONG}))
    for result in outputs:
        assert result.exit_code == 1, result.output
        assert_clean(result.output)
    assert "does not exist" in outputs[0].stderr


# Fuzzing: URL handling and argument parsing never crash, never leak.

password = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20
).map(lambda s: "Pw#" + s)


@given(st.text(max_size=80))
def test_normalize_url_accepts_or_refuses_cleanly(raw: str) -> None:
    try:
        url = normalize_url(raw)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert url.startswith("postgresql://")


@given(
    user=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8),
    pw=password,
    host=st.sampled_from(["db", "127.0.0.1", "[::1]", "patient-db.internal"]),
    port=st.one_of(st.none(), st.integers(1, 65535)),
)
def test_mask_hides_any_password(user: str, pw: str, host: str, port: int | None) -> None:
    netloc = f"{user}:{quote(pw, safe='')}@{host}" + (f":{port}" if port else "")
    url = f"postgresql://{netloc}/db?sslmode=require"
    masked = mask(url)
    assert quote(pw, safe="") not in masked and pw not in masked
    assert f"{user}:***@{host}" in masked
    assert mask(normalize_url(url)) == masked


OPTION_VALUES = {
    "--version": st.one_of(st.integers(-3, 12).map(str), st.text(max_size=5)),
    "--url": st.sampled_from(
        [
            f"postgresql://postgres:{quote(SECRET)}@127.0.0.1:1/x",
            f"postgres://u:{quote(SECRET)}@127.0.0.1:99999/x",
            f"postgresql://u:{SECRET}@/x",
            "http://x",
            "",
            "postgresql://",
            "::::",
        ]
    ),
    "--host": st.sampled_from(["127.0.0.1", "", "::1"]),
    "--port": st.sampled_from(["1", "0", "70000", "-5", "x"]),
    "--password": st.just(SECRET),
    "--database": st.sampled_from(["nodb_fuzz", ""]),
    "--connect-timeout": st.sampled_from(["1", "0", "x"]),
    "--lock-wait": st.sampled_from(["0", "-1", "x"]),
    "--env": st.sampled_from(["production", "dev"]),
}
FLAGS = ["--json", "--atomic", "--debug", "--allow-production", "--help", "--bogus"]


@st.composite
def argv(draw: st.DrawFn) -> list[str]:
    args = [draw(st.sampled_from(["patient", "user", "nosuch", "", "--url"]))]
    args.append(draw(st.sampled_from(["up", "down", "status", "sideways", "--version"])))
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            args.append(draw(st.sampled_from(FLAGS)))
        else:
            option = draw(st.sampled_from(sorted(OPTION_VALUES)))
            args += [option, draw(OPTION_VALUES[option])]
    return args


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(args=argv())
def test_cli_fuzz_never_crashes_or_leaks(args: list[str]) -> None:
    env = {"DATABASE_URL": f"postgresql://postgres:{quote(SECRET)}@127.0.0.1:1/nowhere"}
    result = run_cli(*args, env=env)
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output or "--debug" in args
    if result.exit_code != 0 and "--debug" not in args:
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("migrate: error: "), result.output
        assert all(not ln.startswith("  ") for ln in lines)
    assert_clean(result.output)
