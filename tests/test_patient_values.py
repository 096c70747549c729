"""No value from a patient row leaves through a message, an event, a --json object, metrics
or a --debug traceback, whatever kind of failure quotes it.

Hypothesis draws realistic values (Faker's names, e-mails, phone numbers and addresses in
the platform's locales, and arbitrary text) and puts them in a row that a failing step
trips over: a cast, a CHECK, a unique index, a foreign key, NOT NULL, an exclusion
constraint, a date, an enum. Every output of the run is then searched for the value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import add_step, create_database, drop_database, run_cli
from faker import Faker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LOCALES = ("fr_CA", "en_US", "fr_FR", "ar_AA")
FAKERS = [Faker(locale) for locale in LOCALES]


@st.composite
def patient_values(draw: st.DrawFn) -> str:
    fake = draw(st.sampled_from(FAKERS))
    fake.seed_instance(draw(st.integers(0, 2**32 - 1)))
    kind = draw(
        st.sampled_from(["name", "email", "phone_number", "street_address", "text", "spanning"])
    )
    if kind == "spanning":  # two parts across what would end a line, a quote or a key
        return fake.name() + draw(st.sampled_from(BREAKS)) + fake.street_address()
    if kind == "text":
        value = draw(
            st.text(
                st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                min_size=6,
                max_size=30,
            )
        )
    else:
        value = str(getattr(fake, kind)())
    # Short or blank values could match a message's own words: the claim is about data.
    return value if len(value.strip()) >= 6 and '"' not in value else fake.name() + " Zyx"


# What a value may hold that ends a line or a quoted value in a message, or moves a terminal.
BREAKS = [
    "\n",
    "\r",
    "\r\n",
    "\u2028",
    "\x85",
    "\x1c",
    "\x1e",
    '"',
    '" ',
    '")\n',
    "\x1b[2J\x1b[31m",
]
BREAKS += [") already exists.\n", ")\nDETAIL:  ", '"\nHINT:  ', "\u202e"]


def parts(value: str) -> list[str]:
    """The pieces of ``value`` between what BREAKS hold, each long enough to be data."""
    pieces = re.split(
        r'[\n\r\x85\u2028\x1c\x1e"\x1b\u202e]|\) already exists\.|DETAIL:|HINT:', value
    )
    return [p.strip() for p in pieces if len(p.strip()) >= 6]


# Each kind of failure: the tables it needs, the rows holding the value (%s), and the step
# that trips over them, whatever the value (a cast reads it behind a character no integer,
# date or JSON document starts with).
KINDS = {
    "cast": ("v text", "INSERT INTO held VALUES (%s)", "ALTER TABLE held ALTER COLUMN v TYPE integer USING ('x' || v)::integer"),
    "date": ("v text", "INSERT INTO held VALUES (%s)", "ALTER TABLE held ALTER COLUMN v TYPE date USING ('x' || v)::date"),
    "enum": ("v text", "INSERT INTO held VALUES (%s)", "CREATE TYPE mood AS ENUM ('ok'); ALTER TABLE held ALTER COLUMN v TYPE mood USING v::mood"),
    "json": ("v text", "INSERT INTO held VALUES (%s)", "ALTER TABLE held ALTER COLUMN v TYPE jsonb USING ('{' || v)::jsonb"),
    "check": ("v text", "INSERT INTO held VALUES (%s)", "ALTER TABLE held ADD CONSTRAINT held_v CHECK (v = 'none')"),
    "unique": ("v text", "INSERT INTO held VALUES (%s), (%s)", "CREATE UNIQUE INDEX held_v ON held (v)"),
    "foreign key": ("v text", "INSERT INTO held VALUES (%s)", "CREATE TABLE other (v text PRIMARY KEY); ALTER TABLE held ADD FOREIGN KEY (v) REFERENCES other (v)"),
    "not null": ("v text, w text", "INSERT INTO held (v) VALUES (%s)", "ALTER TABLE held ALTER COLUMN w SET NOT NULL"),
    "exclusion": ("v text", "INSERT INTO held VALUES (%s), (%s)", "ALTER TABLE held ADD CONSTRAINT held_x EXCLUDE (v WITH =)"),
    "insert": ("v text, n integer", "INSERT INTO held (v) VALUES (%s)", "INSERT INTO held (n) SELECT ('x' || v)::integer FROM held"),
    "update": ("v text, d date", "INSERT INTO held (v) VALUES (%s)", "UPDATE held SET d = ('x' || v)::date"),
}  # fmt: skip


@pytest.fixture(scope="module")
def failing(
    tmp_path_factory: pytest.TempPathFactory, server: str, migrating_role: str
) -> Iterator[dict[str, tuple[Path, str]]]:
    """For each kind, a project whose user service ends in a step that fails that way, and a
    database at the version before it."""
    import shutil

    from conftest import ROOT, up

    made = {}
    for kind, (columns, _, step) in KINDS.items():
        root = tmp_path_factory.mktemp(kind.replace(" ", "_"))
        shutil.copytree(
            ROOT / "services", root / "services", ignore=shutil.ignore_patterns("__pycache__")
        )
        url = create_database(server)
        up("user", url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE held ({columns})")
        body = "\n".join(f"    op.execute({part.strip()!r})" for part in step.split(";"))
        add_step(root, "user", body, f"Fails: {kind}")
        made[kind] = (root, url)
    yield made
    for _, url in made.values():
        drop_database(server, url)


def outputs(root: Path, url: str, tmp: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    """Everything one failing run writes: stdout (--json), stderr (--debug), events, metrics."""
    events, metrics = tmp / "events.jsonl", tmp / "metrics.prom"
    for path in (events, metrics):
        path.unlink(missing_ok=True)
    result = run_cli(
        "user", "up", "--url", url, "--json", "--events", str(events), "--metrics-file", str(metrics), *extra,
        env={"MIGRATE_ROOT": str(root), **(env or {})},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    written = "".join(p.read_text() for p in (events, metrics) if p.exists())
    return result.stdout + result.stderr + written


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=patient_values())
def test_no_value_from_a_row_appears_in_any_output(
    failing: dict[str, tuple[Path, str]], tmp_path: Path, kind: str, value: str
) -> None:
    root, url = failing[kind]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE held")
        _, rows, _ = KINDS[kind]
        conn.execute(rows, [value] * rows.count("%s"))
    seen = outputs(root, url, tmp_path, "--debug")
    assert "Traceback" in seen  # --debug printed the chain, reduced
    for form in {value, value.strip(), json.dumps(value)[1:-1], *parts(value)}:
        assert form not in seen, (kind, value, seen[-2000:])
    assert "\x1b" not in seen and "\u202e" not in seen  # nothing a terminal would obey


def test_show_data_shows_the_values_with_a_warning(
    failing: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    root, url = failing["cast"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE held")
        conn.execute("INSERT INTO held VALUES ('Amélie Tremblay')")
    hidden = outputs(root, url, tmp_path)
    assert "Amélie Tremblay" not in hidden
    assert 'integer: "***" (SQLSTATE 22P02)' in hidden and "warning" not in hidden
    shown = outputs(root, url, tmp_path, "--show-data")
    assert "Amélie Tremblay" in shown and "warning: --show-data" in shown
    for off in ("0", "false", "No", " off "):
        assert "Amélie Tremblay" not in outputs(root, url, tmp_path, env={"MIGRATE_SHOW_DATA": off})
    for on in ("1", "true", "YES", "on"):
        assert "Amélie Tremblay" in outputs(root, url, tmp_path, env={"MIGRATE_SHOW_DATA": on})


# PostgreSQL's own messages that quote a value, as the server words them ({} is the value).
MESSAGES = [
    'invalid input syntax for type integer: "{}"',
    'invalid input value for enum mood: "{}"',
    'duplicate key value violates unique constraint "held_v"\nDETAIL:  Key (v)=({}) already exists.',
    'could not create unique index "held_v"\nDETAIL:  Key (lower(v))=({}) is duplicated.',
    'insert or update on table "held" violates foreign key constraint "held_v_fkey"\n'
    'DETAIL:  Key (v)=({}) is not present in table "other".',
    'conflicting key value violates exclusion constraint "held_x"\n'
    "DETAIL:  Key (v)=({}) conflicts with existing key (v)=({}).",
    'could not create exclusion constraint "held_x"\n'
    "DETAIL:  Key (v)=({}) conflicts with key (v)=({}).",
    'new row for relation "held" violates check constraint "held_v"\n'
    "DETAIL:  Failing row contains (1, {}, null).",
    'no partition of relation "held" found for row\n'
    "DETAIL:  Partition key of the failing row contains (v) = ({}).",
]


@settings(max_examples=300, deadline=None)
@given(
    message=st.sampled_from(MESSAGES),
    head=st.from_regex(r"[A-Z][a-z]{7,12}", fullmatch=True),
    tail=st.from_regex(r"[A-Z][a-z]{7,12}", fullmatch=True),
    middle=st.one_of(st.sampled_from(BREAKS), st.text(min_size=1, max_size=12)),
)
def test_a_value_is_masked_whole_whatever_it_holds(
    message: str, head: str, tail: str, middle: str
) -> None:
    """However a value breaks lines or mimics the message's own quotes, parentheses and
    endings, none of it is left in the reduced message, nor in its one line."""
    from alembic_common.safety import redact

    value = head + middle + tail
    reduced = redact.without_values(message.replace("{}", value))
    assert head not in reduced and tail not in reduced, reduced
    assert '"held' in reduced or "enum mood" in reduced or "type integer" in reduced  # names stay
    assert "\n" not in redact.one_line(reduced) and "\x1b" not in redact.one_line(reduced)


@pytest.mark.parametrize(
    ("statement", "value", "kept"),
    [
        ("SELECT xmlparse(content '<a>Zyxwvu Tremblay')", "Zyxwvu", "invalid XML content"),
        ("SELECT make_date(1987, 13, 31)", "1987-13-31", "date field value out of range"),
        ("SELECT '31/12/1987'::date", "31/12/1987", "HINT:  Perhaps you need a different "),
    ],
    ids=["xml detail", "make_date", "a hint kept"],
)  # fmt: skip
def test_a_data_exception_shows_no_value_unquoted_either(
    server: str, statement: str, value: str, kept: str
) -> None:
    """PostgreSQL's own messages that echo the input without quotes (an XML parser's detail,
    make_date's value); the hint after a masked value stays whole."""
    from alembic_common.safety import redact

    with psycopg.connect(server) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute(statement)
    seen = redact.first_line(raised.value) + "\n" + redact.traceback_text(raised.value)
    assert value not in seen, seen
    assert kept in seen, seen


def test_a_tool_s_messages_are_each_reduced_on_their_own() -> None:
    """pg_restore's stderr: a value masked in one message runs into no other, unless it
    holds what would end its message (then more is masked, never less)."""
    from alembic_common.safety.backup import _scrubbed

    two = (
        'pg_restore: error: could not execute query: ERROR:  invalid input syntax for type integer: "Zyxwvu"\n'
        'pg_restore: error: could not execute query: ERROR:  relation "visits" does not exist\n'
    )
    assert _scrubbed(two, None).endswith(
        'integer: "***" / pg_restore: error: could not execute query: ERROR:  relation "visits" does not exist'
    )
    for hostile in (
        '"Zyxwvu\npg_restore: Tremblay"',
        "Key (v)=(Zyxwvu\npg_restore: Tremblay) already exists.",
    ):
        said = _scrubbed(f"pg_restore: error: ERROR:  x: {hostile}\n", None)
        assert "Zyxwvu" not in said and "Tremblay" not in said, said
