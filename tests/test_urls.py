"""Database URLs: our raw-password rule, then libpq's own reading of everything else.

A password pasted raw comes back exactly, and libpq reads the canonical URL to the same
user, password, hosts, ports, database and parameters; a URL libpq refuses is a usage error
that quotes no part of the password.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from alembic_common.core import urls
from alembic_common.errors import ConfigError

# Characters a pasted password may hold raw (the module's documented rule), and more.
RAW = [*"@%:/#? &,;[]!$'()*+~", "%41", "%25", "%zz", "%E9", "%C3%A9"]
# '=' is left out of passwords and user names: after a raw '?' a 'keyword=value' would read
# as the query (the rule's documented ambiguity). '\x00' cannot reach libpq at all.
piece = st.one_of(
    st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00="),
    st.sampled_from(RAW),
)
password = st.lists(piece, min_size=1, max_size=12).map("".join)
user = st.lists(piece.filter(lambda c: ":" not in c), min_size=1, max_size=6).map("".join)
# (as typed in a URL, as libpq reads it)
HOSTS = [
    ("db", "db"),
    ("127.0.0.1", "127.0.0.1"),
    ("[::1]", "::1"),
    ("[fe80::1%25eth0]", "fe80::1%eth0"),
    ("%2Ftmp%2Fpg", "/tmp/pg"),
    ("h%C3%B6st", "höst"),
    ("hö-st.internal", "hö-st.internal"),
]
host = st.tuples(st.sampled_from(HOSTS), st.one_of(st.none(), st.integers(1, 65535)))
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"))
PARAMS = ["sslmode", "application_name", "options", "connect_timeout", "target_session_attrs"]
# Each parameter's values as libpq takes them (a value it refuses is a usage error).
VALUES = {
    "sslmode": st.sampled_from(urls.CHOICES["sslmode"]),
    "application_name": text,
    "options": text,
    "connect_timeout": st.integers(1, 999).map(str),
    "target_session_attrs": st.sampled_from(urls.CHOICES["target_session_attrs"]),
}
params_of = st.lists(st.sampled_from(PARAMS), unique=True, max_size=3).flatmap(
    lambda keys: st.fixed_dictionaries({k: VALUES[k] for k in keys})
)


def typed(part: str) -> str:
    """A user name or password as a person pastes it: raw, except that a part of URL-safe
    characters only that holds a %XX escape has its '%' written %25 (the documented rule)."""
    if re.fullmatch(r"[A-Za-z0-9\-._~!$&'()*+,;=:%]*", part) and re.search(
        r"%[0-9A-Fa-f]{2}", part
    ):
        return part.replace("%", "%25")
    return part


def hostlist(hosts: list[tuple[tuple[str, str], int | None]]) -> str:
    return ",".join(h + (f":{p}" if p else "") for (h, _), p in hosts)


@given(
    name=user,
    secret=password,
    hosts=st.lists(host, min_size=1, max_size=3),
    database=st.one_of(st.none(), text.filter(bool)),
    params=params_of,
)
def test_a_raw_password_round_trips_through_libpq(
    name: str,
    secret: str,
    hosts: list[tuple[tuple[str, str], int | None]],
    database: str | None,
    params: dict[str, str],
) -> None:
    path = "" if database is None else "/" + quote(database, safe="")
    # A value may hold a raw '@' (application_name=patient@3).
    query = "&".join(f"{k}={quote(v, safe='@')}" for k, v in params.items())
    raw = f"postgresql://{typed(name)}:{typed(secret)}@{hostlist(hosts)}{path}"
    parsed = urls.parse(raw + (f"?{query}" if query else ""))

    assert (parsed.user, parsed.password, parsed.database) == (name, secret, database)
    assert parsed.hosts == tuple((h, p) for (_, h), p in hosts)
    assert parsed.params == params
    libpq = conninfo_to_dict(parsed.url())
    assert libpq.get("user") == name and libpq.get("password") == secret
    assert libpq.get("host", "") == ",".join(h for (_, h), _ in hosts)
    assert libpq.get("port", "") == ",".join(str(p or "") for _, p in hosts)
    assert libpq.get("dbname") == database
    assert {k: libpq[k] for k in params} == params
    # ... exactly libpq's reading of the same URL written fully encoded by hand,
    encoded = (
        f"postgresql://{quote(name, safe='')}:{quote(secret, safe='')}@{hostlist(hosts)}{path}"
    )
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    assert libpq == conninfo_to_dict(encoded + (f"?{query}" if query else ""))
    # ... and the canonical form is a fixed point.
    assert urls.parse(parsed.url()) == parsed


# Where the raw-password rule has nothing to decide (no '@' after the host), we accept
# exactly what libpq accepts and read it as libpq does, but for libpq's connect-time rules
# that its parser leaves to the connection (ports in 1-65535, as many ports as hosts) and
# values that are not UTF-8. (A query refused by libpq that holds an '@' is, by the rule,
# the end of a password before another host.)
query_item = st.one_of(
    st.tuples(
        st.sampled_from([*PARAMS, "port", "ssl", "sslmode", "colour", "", "Port"]),
        st.sampled_from(["=", "", "=="]),
        st.lists(st.sampled_from([*"aZ09-_ /?#:=%é", "%41", "%2", "%E9", "%00"]), max_size=6).map(
            "".join
        ),
    ).map("".join),
    st.sampled_from(["ssl=true", "ssl=false", "options=-c%20x%3D1", "options=-c x=1", ""]),
)
host_text = st.lists(
    st.sampled_from([*"ab1.-_[]:,%~!&= ", "::1", "%2F", "%2C", "%25", "%zz", "5432", "0"]),
    max_size=8,
).map("".join)


def libpq_reading(url: str) -> dict[str, str] | None:
    try:
        return conninfo_to_dict(url)
    except Exception:  # libpq refuses it (ProgrammingError) or a value is not UTF-8
        return None


def same_reading(ours: dict[str, str], theirs: dict[str, str]) -> bool:
    """Equal as libpq connects with them: an empty host is no host, a list of empty ports
    no port, a single port is every host's, and 05432 is 5432."""

    def plain(values: dict[str, str]) -> dict[str, str]:
        values = dict(values)
        if values.get("host") == "":
            del values["host"]
        hosts = values.get("host", "").split(",")
        ports = [str(int(p)) if p else "" for p in values.pop("port", "").split(",")]
        if len(ports) == 1:
            ports *= len(hosts)
        if any(ports):
            values["port"] = ",".join(ports)
        return values

    return plain(ours) == plain(theirs)


def connect_time_rules_hold(values: dict[str, str]) -> bool:
    """libpq's rules for ports, which its parser leaves to the connection."""
    ports = values.get("port", "").split(",")
    if not all(p == "" or (p.isascii() and p.isdigit() and 1 <= int(p) <= 65535) for p in ports):
        return False
    hosts = len(values["host"].split(",")) if "host" in values else 1
    return len(ports) in (1, hosts) and values_pass_libpq(values)


def values_pass_libpq(values: dict[str, str]) -> bool:
    """libpq's own verdict on the values it checks when it connects (sslmode,
    target_session_attrs, ...): with them, a connection to a closed port is refused by the
    port, not by libpq. connect_timeout is read by the client before libpq (psycopg here,
    libpq's blocking connect in pg_dump): a whole number in ASCII digits, as libpq's."""
    timeout = values.get("connect_timeout")
    if timeout is not None and not re.fullmatch(r"\s*[-+]?[0-9]+\s*", timeout, re.ASCII):
        return False
    kept = {
        k: v for k, v in values.items() if k not in ("host", "hostaddr", "port", "connect_timeout")
    }
    try:
        psycopg.connect(make_conninfo(**kept, host="127.0.0.1", port="1")).close()
    except psycopg.Error as exc:
        return "Connection refused" in str(exc)
    return True


@example("sslmode= ")  # found by hypothesis: the paste's trailing space is the URL's end
@given(st.lists(query_item, max_size=4).map("&".join))
def test_a_query_is_accepted_exactly_when_libpq_accepts_it(query: str) -> None:
    """As pasted: a raw space or '=' inside a value is encoded first (libpq refuses them)."""
    url = f"postgresql://u@db/x?{query}".strip()  # whitespace around is the paste's
    pasted = url.partition("?")[2]  # as stripped: 'sslmode= ' ends at '='
    libpq = libpq_reading(f"postgresql://u@db/x?{urls.pasted(pasted)}")
    try:
        parsed = urls.parse(url)
    except ConfigError:
        assert libpq is None or not connect_time_rules_hold(libpq)
    else:
        assert libpq is not None and same_reading(conninfo_to_dict(parsed.url()), libpq)


@given(host_text, st.sampled_from(["/x", "/d%zzb", "/d b", "/é#/", ""]))
def test_hosts_and_database_are_accepted_exactly_when_libpq_accepts_them(
    hosts: str, path: str
) -> None:
    url = f"postgresql://{hosts}{path}".strip()  # whitespace around is the paste's
    libpq = libpq_reading(url)
    try:
        parsed = urls.parse(url)
    except ConfigError:
        assert libpq is None or not connect_time_rules_hold(libpq)
    else:
        assert libpq is not None and same_reading(conninfo_to_dict(parsed.url()), libpq)


@pytest.mark.parametrize(
    ("url", "reading"),
    [  # accepted by libpq, refused by the hand-written parser this module had before
        ("postgresql://u@[fe80::1%25eth0]:5433/db", {"host": "fe80::1%eth0", "port": "5433"}),
        ("postgresql://u@db/ab#c", {"dbname": "ab#c"}),
        ("postgresql://u@db/a/b", {"dbname": "a/b"}),
        ("postgresql://u@h%C3%B6st/db", {"host": "höst"}),
        ("postgresql://u@db:/db", {"host": "db"}),
        ("postgresql://u@db/x?ssl=true", {"sslmode": "require"}),
        ("postgresql://u@db/x?sslmode=require&", {"sslmode": "require"}),
        ("postgresql://u@db/x?sslmode=disable&sslmode=require", {"sslmode": "require"}),
        (  # an empty host is none: the hosts are counted from hostaddr
            "postgresql://127.0.0.1:1,127.0.0.2:1/db?hostaddr=127.0.0.1,127.0.0.2&host=",
            {"hostaddr": "127.0.0.1,127.0.0.2", "port": "1,1"},
        ),
    ],
)
def test_what_libpq_reads_is_what_we_read(url: str, reading: dict[str, str]) -> None:
    canonical = urls.parse(url).url()
    assert conninfo_to_dict(canonical) == conninfo_to_dict(url)
    assert reading.items() <= conninfo_to_dict(canonical).items()


def test_the_keywords_are_the_linked_libpqs() -> None:
    """The query's keywords come from the linked libpq, not from a list kept by hand."""
    linked = {o.keyword.decode() for o in pq.Conninfo.get_defaults()}
    assert linked == urls.KNOWN_PARAMS
    assert "sslmode" in urls.KNOWN_PARAMS


def test_every_secret_keyword_of_the_linked_libpq_is_masked() -> None:
    """libpq marks a secret option with the display character '*': each must be masked."""
    secret = {o.keyword.decode() for o in pq.Conninfo.get_defaults() if o.dispchar == b"*"}
    assert "password" in secret
    assert secret <= set(urls.SECRET_KEYS)


# --- refusals quote no part of the password ----------------------------------------------

PASSWORD = "Pä§ж@/#?ю%x"
REFUSED = [  # (what follows the user part, what the message says)
    ("h:0/db", "port outside 1-65535"),
    ("h:65536/db", "port outside 1-65535"),
    ("h:54x3/db", "port that is not a number"),
    ("h1:5432,h2:0/db", "port outside 1-65535"),
    ("h/db?port=99999", "port outside 1-65535"),
    ("h/db?sslmode=require&colour=red", "unknown query parameter 'colour'"),
    ("h/db?ssl=false", "unknown query parameter 'ssl'"),
    ("h/db?sslmode", "not key=value pairs"),
    ("h/d%zzb", "broken percent escape in the database name"),
    ("h/d b", "raw space in the database name"),
    ("h/d%00b", "%00"),
    ("h/db?application_name=%zz", "broken percent escape in the value of application_name"),
    ("h/db?application_name=%E9", "percent escape in the value of application_name"),
    ("h/db?sslpassword=%00", "%00"),
    ("[::1/db", "host list that libpq cannot read"),
    ("[]/db", "host list that libpq cannot read"),
    ("[::1]x/db", "host list that libpq cannot read"),
    ("h%zz/db", "broken percent escape in the host list"),
    (":%2C/db", "cannot pair with its ports"),
    ("/db?host=a,b&port=1,2,3", "2 host(s) but 3 ports"),
    ("a,b/db?hostaddr=10.0.0.1", "2 host(s) but 1 host addresses"),
]


def _leaked(message: str, secret: str) -> list[str]:
    fragments = {secret[i : i + 3] for i in range(len(secret) - 2)}
    spellings = {secret, quote(secret), quote(secret, safe=""), *fragments}
    return sorted(s for s in spellings if s in message)


def _chain(exc: BaseException) -> str:
    """Every message, argument and held object of an exception and of those behind it."""
    seen = []
    current: BaseException | None = exc
    while current is not None:
        seen += [str(current), repr(current.args), repr(getattr(current, "object", ""))]
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


@pytest.mark.parametrize(("tail", "says"), REFUSED, ids=[t for t, _ in REFUSED])
def test_what_libpq_refuses_is_a_usage_error_that_quotes_no_password(tail: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        urls.parse(f"postgresql://u:{PASSWORD}@{tail}", "--url")
    message = str(caught.value)
    assert message.startswith("--url cannot be used: it ") and says in message, message
    assert "\n" not in message
    assert _leaked(_chain(caught.value), PASSWORD) == []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://u:s3cr\x00et@h/db", "NUL character"),
        ("postgresql://u:s3cr%00et@h/db", "cannot read its user name or password"),
        ("postgresql://u:s3cr\udcffet@h/db", "not UTF-8"),
    ],
)
def test_what_libpq_cannot_take_in_a_password_is_refused(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        urls.parse(url)
    assert says in str(caught.value)
    assert "s3cr" not in _chain(caught.value)


@given(secret=password, tail=st.sampled_from([t for t, _ in REFUSED]))
def test_no_refusal_quotes_any_password(secret: str, tail: str) -> None:
    secret = "ж" + secret
    with pytest.raises(ConfigError) as caught:
        urls.parse(f"postgresql://u:{typed(secret)}@{tail}")
    chain = _chain(caught.value)
    # Fragments of ASCII only may be words of the message ("ort", "in "); the rest may not.
    assert [f for f in _leaked(chain, secret) if not f.isascii()] == [], chain
    assert secret not in chain and quote(secret, safe="") not in chain


def test_an_unknown_parameter_is_named_only_where_it_cannot_be_a_password() -> None:
    """A '?' in a password can look like a query: 'u:1?my_secret=1@h' tries the query
    'my_secret=1@h...' first. A name with an '@' after it is never quoted."""
    with pytest.raises(ConfigError) as caught:
        urls.parse("postgresql://u:1?my_secret=1@h:99999/db")
    assert "my_secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="unknown query parameter 'bogus'"):
        urls.parse("postgresql://u:p?x@h/db?bogus=1")


@pytest.mark.parametrize(
    ("pasted", "meant"),
    [
        ("options=-c search_path=patient_v5", {"options": "-c search_path=patient_v5"}),
        (
            "application_name=front desk&options=-c x=1",
            {"application_name": "front desk", "options": "-c x=1"},
        ),
        ("options=-c%20x%3D1", {"options": "-c x=1"}),
    ],
)
def test_a_value_pasted_with_raw_spaces_and_equals_signs_means_what_was_typed(
    pasted: str, meant: dict[str, str]
) -> None:
    parsed = urls.parse(f"postgresql://u@h/db?{pasted}")
    assert parsed.params == meant
    read = conninfo_to_dict(parsed.url())
    assert {k: read[k] for k in meant} == meant


override = st.fixed_dictionaries(
    {},
    optional={
        "host": st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2),
        "port": st.integers(1, 65535),
        "user": st.sampled_from(["v", "wer", "ü"]),
        "dbname": st.sampled_from(["x", "other db", "é"]),
    },
)


@given(
    hosts=st.lists(host, min_size=1, max_size=2),
    database=st.sampled_from(["", "/db", "/d%C3%A9"]),
    login=st.sampled_from(["", "u@", "u:pw@"]),
    query=override,
)
def test_settings_name_the_server_database_and_user_libpq_connects_to(
    hosts: list[tuple[tuple[str, str], int | None]],
    database: str,
    login: str,
    query: dict[str, object],
) -> None:
    """A query parameter wins over the authority in libpq (``?host=``, ``?port=``,
    ``?user=``, ``?dbname=``): every name a run prints or acts on (labels, error messages,
    per-server limits, a fleet's duplicates) follows libpq's own reading."""
    from alembic_common.core.settings import Settings, normalize_url

    params = {
        k: ",".join(h for (_, h) in v) if k == "host" else str(v)  # type: ignore[union-attr]
        for k, v in query.items()
    }
    url = f"postgresql://{login}{hostlist(hosts)}{database}"
    if params:
        url += "?" + "&".join(f"{k}={quote(v, safe='/,')}" for k, v in params.items())
    libpq = conninfo_to_dict(url)  # the oracle: libpq reading what was typed
    names, ports = libpq.get("host", "").split(","), str(libpq.get("port", "")).split(",")
    if len(ports) not in (1, len(names)):
        with pytest.raises(ConfigError):
            normalize_url(url)
        return
    settings = Settings("svc", normalize_url(url), "given")
    ports = ports * len(names) if len(ports) == 1 else ports
    expected = [(n, int(p) if p else 5432) for n, p in zip(names, ports, strict=True)]
    assert settings.addresses == expected
    assert settings.user == libpq.get("user", settings.user)
    assert settings.database == libpq.get("dbname", settings.user)
    assert settings.label == f"{settings.host_port}/{settings.database}"
    moved = settings.for_database("moved")
    assert conninfo_to_dict(moved.url)["dbname"] == moved.database == "moved"


def test_a_pooler_console_is_where_libpq_connects() -> None:
    """MIGRATE_POOLER_URLS: a console is named, and checked to be PgBouncer's, as libpq reads
    its URL (a ?dbname= or ?host= wins over the authority)."""
    from alembic_common.fleets import poolers

    console = "postgresql://stats@a:6432/pgbouncer"
    assert poolers.configured({"MIGRATE_POOLER_URLS": f"{console}?host=b&port=7000"})
    assert poolers.label(f"{console}?host=b&port=7000") == "b:7000"
    assert poolers.label(console) == "a:6432"
    assert poolers.configured({"MIGRATE_POOLER_URLS": "postgresql://s@a:6432/app?dbname=pgbouncer"})
    with pytest.raises(ConfigError, match="database pgbouncer"):
        poolers.configured({"MIGRATE_POOLER_URLS": f"{console}?dbname=app"})


@pytest.mark.parametrize("value", ["TLSv1.2", "tlsv1.2", "TLSV1.3"])
def test_a_tls_version_is_read_as_libpq_reads_it(value: str) -> None:
    """libpq compares these ignoring case."""
    url = f"postgresql://u@127.0.0.1/x?ssl_min_protocol_version={value}"
    assert urls.parse(url).params["ssl_min_protocol_version"] == value
    assert values_pass_libpq({"ssl_min_protocol_version": value})
