"""No password ever reaches the output, on any failing path; wrong passwords fail cleanly."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from conftest import SECRET, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from alembic_common.core.settings import Settings, mask, normalize_url
from alembic_common.errors import ConfigError

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


def test_a_wrong_password_on_one_of_several_hosts_names_that_host(auth_server: str) -> None:
    """libpq's first line is its last attempt (a closed port here): the line says which
    server refused the password instead."""
    url = auth_server.format(password=quote(WRONG))
    head, _, query = url.partition("?")
    params = dict(item.split("=", 1) for item in query.split("&"))
    several = f"{head}?host={params['host']},127.0.0.1&port={params['port']},1"
    result = run_cli("patient", "status", "--url", several)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert f"authentication failed at {params['host']}/.s.PGSQL.{params['port']}" in line, line
    assert "password authentication failed" in line and "Connection refused" not in line
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


# --- every path, every sink: no fragment of any password ---------------------------------

SINKS = ("events.jsonl", "metrics.prom")


def _written(folder: Path) -> str:
    return "".join((folder / n).read_text() for n in SINKS if (folder / n).exists())


def _in_url(pw: str) -> str:
    """The password as a person pastes it; '%' is written %25 where it would read as an escape
    (the documented rule for a password of URL-safe characters only)."""
    if re.fullmatch(r"[A-Za-z0-9\-._~!$&'()*+,;=:%]*", pw) and re.search(r"%[0-9A-Fa-f]{2}", pw):
        return pw.replace("%", "%25")
    return pw


def _runs(pw: str, auth: str, trust_db: str, root: Path, folder: Path) -> list[str]:
    """Every path with ``pw`` in every place a password can come from; all output, in order."""
    socket = auth.replace(":{password}", "")  # the auth server's URL without a password
    own = auth.format(password=_in_url(pw))
    other = own.replace("/authdb?", "/authdb2?")
    conf = Settings("t", trust_db, "t")
    where = (  # a socket directory (the embedded server) goes in the query
        f"/{conf.database}?host={conf.host}&port={conf.port}"
        if conf.host.startswith("/")
        else f"{conf.host}:{conf.port}/{conf.database}"
    )
    trust = f"postgresql://postgres:{_in_url(pw)}@{where}"
    unreachable = f"postgresql://postgres:{_in_url(pw)}@127.0.0.1:1/nowhere"
    pw_file = folder / "pw"
    pw_file.write_text(pw + "\n")
    sinks = ["--events", str(folder / SINKS[0]), "--metrics-file", str(folder / SINKS[1])]
    copy = {"MIGRATE_ROOT": str(root)}
    runs = [
        (["user", "up", "--url", own, *sinks], {}),
        (["user", "status", "--json", "--url", own], {}),
        (["user", "status", "--url", own, "--metrics-file", str(folder / SINKS[1])], {}),
        (["user", "up", "--json", "--jobs", "2", *sinks], {"USER_DATABASE_URLS": f"{own},{other}"}),
        (["user", "status"], {"USER_DATABASE_URLS": f"{own},{unreachable}"}),
        (["user", "status", "--url", socket], {"PGPASSWORD": pw}),
        (["user", "status", "--url", socket, "--password-file", str(pw_file)], {}),
        (["user", "up", "--url", auth.format(password="wrong" + _in_url(pw)[::-1]), *sinks], {}),
        (["user", "up", "--url", unreachable, "--debug", *sinks], {}),
        (["user", "up", "--json", "--url", unreachable], {}),
        (["user", "up", "--url", trust, *sinks], copy),
        (["user", "up", "--url", trust, "--debug"], copy),
        (
            ["user", "up", "--json", *sinks],
            {**copy, "USER_DATABASE_URLS": f"{trust},{unreachable}"},
        ),
    ]
    outputs = []
    for args, env in runs:
        result = run_cli(*args, env=env)
        assert result.exit_code in (0, 1), (args, result.output)
        outputs.append(result.stdout + result.stderr + _written(folder))
    return outputs


def _fragments(pw: str) -> set[str]:
    return {pw[i : i + 3] for i in range(len(pw) - 2)}


password_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp")),
    min_size=6,
    max_size=20,
).filter(lambda s: s.strip() == s and "," not in s)


@pytest.fixture
def secret_world(
    auth_server: str, server: str, tmp_path: Path
) -> Iterator[tuple[str, str, Path, psycopg.Connection]]:
    """The password-checking server with two databases, a trust database whose version 2
    fails, and an admin session that sets the password of each example."""
    import shutil

    from conftest import ROOT, add_step, create_database, drop_database

    admin = psycopg.connect(auth_server.format(password=quote(SECRET)), autocommit=True)
    if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'authdb2'").fetchone():
        admin.execute("CREATE DATABASE authdb2")
    root = tmp_path / "project"
    shutil.copytree(
        ROOT / "services", root / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    add_step(root, "user", '    op.execute("SELECT 1 / 0")', "A failing step")
    trust_db = create_database(server)
    try:
        yield auth_server, trust_db, root, admin
    finally:
        admin.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(SECRET)))
        admin.close()
        drop_database(server, trust_db)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pw=password_text)
def test_no_fragment_of_any_password_in_any_output(
    pw: str,
    secret_world: tuple[str, str, Path, psycopg.Connection],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    auth, trust_db, root, admin = secret_world
    admin.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(pw)))
    folder = tmp_path_factory.mktemp("sinks")
    outputs = _runs(pw, auth, trust_db, root, folder)
    assert "authentication failed" not in outputs[0], "the right password must work"
    found = {f for f in _fragments(pw) for text in outputs if f in text}
    if found:
        # A fragment that the same runs print with an unrelated password is not a leak
        # (a digit run in a duration, a word of a message).
        other = "".join("ж" if ch.isalnum() else "ё" for ch in pw)
        admin.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(other)))
        baseline = "".join(_runs(other, auth, trust_db, root, tmp_path_factory.mktemp("base")))
        leaked = sorted(f for f in found if f not in baseline)
        assert not leaked, f"password {pw!r} leaked {leaked}"


def test_a_raw_at_sign_never_leaks_the_part_after_it(auth_server: str) -> None:
    pw = "abc@def/ghi#jkl"
    result = run_cli("user", "status", "--url", f"postgresql://postgres:{pw}@127.0.0.1:1/x")
    assert result.exit_code == 1
    for fragment in ("def", "ghi", "jkl", "abc"):
        assert fragment not in result.output, result.output


@pytest.mark.parametrize("key", ["sslpassword", "oauth_client_secret"])
def test_a_secret_connection_parameter_is_masked_everywhere(
    key: str, db: str, tmp_path: Path
) -> None:
    """A client key's passphrase (or an OAuth client's secret) in the URL is a secret too:
    masked in every output, and given to the client tools through a private file."""
    if key == "oauth_client_secret" and psycopg.pq.version() < 180000:
        pytest.skip("libpq before 18 does not know oauth_client_secret")
    from alembic_common.safety import backup

    secret = "Key-Passphrase-77"
    url = f"{db}{'&' if '?' in db else '?'}{key}={secret}"
    runs = [["status"], ["status", "--json"]]
    with psycopg.connect(db) as conn:
        tools = backup.choose(conn.info.server_version)
    if key == "sslpassword" or tools.major >= 18:  # the tools' libpq must know the parameter
        runs.append(["backup", "--to", str(tmp_path)])
    for args in runs:
        result = run_cli("user", *args, "--url", url, "--debug")
        assert result.exit_code == 0, result.output
        assert secret not in result.output, (args, result.output)
