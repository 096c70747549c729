"""Database URLs as people paste them: one documented rule, a canonical form, masking.

The rule (libpq's, made explicit for raw characters): in
``postgresql://USER:PASSWORD@HOSTS/DATABASE?PARAMS``

* the query is the part after the first ``?`` whose parameters libpq accepts and before
  which the rest parses; values may hold ``@`` (``application_name=patient@3``), and raw
  spaces and ``=`` (``options=-c search_path=x``), which are encoded for libpq;
* the user part ends at the **last** ``@`` before the host, so a password may contain raw
  ``@``, ``%``, ``:``, ``/``, ``#``, ``?``, spaces and non-ASCII;
* the user name ends at the first ``:``. A user part that holds a character which would
  have had to be percent-encoded was pasted raw and is taken exactly as typed; otherwise
  ``%XX`` (two hex digits) is decoded and any other ``%`` is kept (write ``%25`` for a
  literal ``%`` in an otherwise plain password).

Only that rule is ours. What follows the user part is read by the linked libpq itself
(``PQconninfoParse``, through ``psycopg.pq``): the host list and ports, ``[IPv6]`` literals,
the database name, the query's keywords (the linked libpq's own) and values, and their
percent escapes; it is accepted when libpq accepts it and means what libpq reads. The
canonical form is read by libpq once more before anything downstream sees it. On top we
hold the rules libpq's parser leaves to the connection: every port is a number in
1-65535, and a list of ports or host addresses is as long as the list of hosts (a single
port serves every host). Values must be UTF-8, and a NUL character is refused (libpq's
strings end at one).

A URL that does not parse is a usage error whose message quotes no part of it (libpq's
own message, which does, is never passed on; an unknown parameter's name is quoted only
when no ``@`` follows its ``?``, so that it cannot be part of a password). Everything
downstream sees the canonical form, fully percent-encoded, so masking is exact.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple
from urllib.parse import quote

import psycopg
from psycopg import pq

from alembic_common.errors import ConfigError

SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
# The linked libpq's connection keywords, the only ones it accepts as URL query parameters.
KNOWN_PARAMS = frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())
_KEY = re.compile(r"^[a-z_]{1,40}$")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_URL_SAFE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:%]*")
_PORT = re.compile(r"[0-9]{1,5}")


class Parsed(NamedTuple):
    """The parts of a database URL, decoded."""

    user: str | None
    password: str | None
    hosts: tuple[tuple[str, int | None], ...]
    database: str | None
    params: dict[str, str]

    def url(self) -> str:
        """The canonical ``postgresql://`` form, every part percent-encoded."""
        auth = ""
        if self.user is not None or self.password is not None:
            auth = quote(self.user or "", safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        hosts = ",".join(
            (f"[{quote(h, safe=':')}]" if ":" in h else quote(h, safe=".-_~"))
            + (f":{p}" if p else "")
            for h, p in self.hosts
        )
        path = "/" + quote(self.database, safe="") if self.database is not None else ""
        query = "&".join(
            f"{quote(k, safe='')}={quote(v, safe='/')}" for k, v in self.params.items()
        )
        return f"postgresql://{auth}{hosts}{path}" + (f"?{query}" if query else "")


class _Bad(Exception):
    """One reason a part does not parse, worded without quoting the part."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _libpq(conninfo: str) -> dict[str, bytes] | None:
    """libpq's own reading of ``conninfo`` (``PQconninfoParse``): each keyword it sets, with
    its value decoded from the URL's escapes; None where libpq refuses it. libpq's message
    quotes the text, so it is dropped here, not even kept as an exception's context."""
    try:
        options = pq.Conninfo.parse(conninfo.encode())
    except psycopg.OperationalError:
        options = None
    if options is None:
        return None
    return {o.keyword.decode(): o.val for o in options if o.val is not None}


@functools.lru_cache(maxsize=4096)
def reading(url: str) -> dict[str, str]:
    """What libpq takes from ``url``, keyword by keyword (empty where it refuses the URL). A
    query parameter wins over the same part of the authority (``?host=``, ``?port=``,
    ``?user=``, ``?dbname=``): this, not the URL's look, is where a connection goes.
    Remembered: treat it as read only."""
    found = _libpq(url) or {}
    return {key: value.decode("utf-8", "replace") for key, value in found.items()}


def _text(value: bytes, what: str) -> str:
    """A value libpq decoded, as text. The error is raised outside the ``except``: the
    decoding error, which holds the value, must not ride along as its context."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        pass
    raise _Bad(f"a percent escape in the {what} that is not UTF-8")


def _why(text: str, what: str) -> str:
    """Why libpq refused ``text`` (the URL's ``what``), in words that quote none of it."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        return f"a broken percent escape in the {what}"
    if "%00" in text:
        return f"an escaped NUL (%00) in the {what}"
    if " " in text:
        return f"a raw space in the {what} (write %20)"
    return f"a {what} that libpq cannot read"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lenient(text: str) -> str:
    """Decode ``%XX`` escapes in a user part that was encoded; keep a raw one as typed.

    A user part holding any character that would have had to be encoded (``@``, ``/``,
    ``#``, ``?``, a space, non-ASCII, ...) was pasted raw: its ``%`` are literal. Otherwise
    ``%XX`` is an escape and any other ``%`` stays as typed.
    """
    if "%" not in text or not _URL_SAFE.fullmatch(text):
        return text
    data, i = bytearray(), 0
    while i < len(text):
        if _ESCAPE.match(text, i):
            data.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            data.extend(text[i].encode())
            i += 1
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return text  # the escapes were not meant as escapes


def _ports(text: str) -> list[int | None]:
    """A comma-separated list of ports, as libpq connects with them: each empty (the
    default) or a number in 1-65535."""
    found: list[int | None] = []
    for port in text.split(","):
        if port and not _PORT.fullmatch(port):
            raise _Bad("a port that is not a number")
        if port and not 1 <= int(port) <= 65535:
            raise _Bad("a port outside 1-65535")
        found.append(int(port) if port else None)
    return found


def _server(text: str) -> tuple[tuple[tuple[str, int | None], ...], str | None]:
    """``hosts[/database]`` as libpq reads them: its host list paired with its port list,
    and the database name."""
    values = _libpq("postgresql://" + text)
    if values is None:
        hosts, _, path = text.partition("/")  # only to say which part libpq refused
        if _libpq("postgresql://" + hosts) is None:
            raise _Bad(_why(hosts, "host list"))
        raise _Bad(_why(path, "database name"))
    # libpq lists a port for every host once one has a port and leaves out a list that is
    # one empty entry; connecting, it gives a single port to every host.
    names = _text(values["host"], "host list").split(",") if "host" in values else [""]
    ports = _ports(_text(values["port"], "port list")) if "port" in values else [None]
    if len(ports) == 1:
        ports = ports * len(names)
    if len(names) != len(ports):  # an encoded ',' in a port splits it in two
        raise _Bad("a host list that libpq cannot pair with its ports (an encoded ',')")
    database = _text(values["dbname"], "database name") if "dbname" in values else None
    if names == [""] and ports == [None]:
        return (), database
    return tuple(zip(names, ports, strict=True)), database


def _authority(text: str) -> Parsed:
    """``[user[:password]@]hosts[/database]``: the user part ends at the last ``@``."""
    at = text.rfind("@")
    userinfo, rest = (text[:at], text[at + 1 :]) if at >= 0 else (None, text)
    server, question, _ = rest.partition("?")
    hosts, database = _server(server)
    if question:  # the query starts at this '?', which another candidate tried
        raise _Bad("a query that libpq does not accept")
    user = password = None
    if userinfo is not None:
        name, colon, secret = userinfo.partition(":")
        user = _lenient(name) or None
        password = _lenient(secret) if colon else None
    return Parsed(user, password, hosts, database, {})


def pasted(query: str) -> str:
    """A query as people paste it, as libpq reads it: a raw space or ``=`` inside a value
    is encoded (``options=-c search_path=patient_v5``); the rest is left to libpq."""
    items = (item.partition("=") for item in query.split("&"))
    return "&".join(
        key + eq + value.replace(" ", "%20").replace("=", "%3D") for key, eq, value in items
    )


def _query(text: str) -> dict[str, str]:
    """The query's parameters as libpq reads them, pasted raw values included."""
    text = pasted(text)
    values = _libpq("postgresql:///?" + text)
    if values is None:
        raise _Bad(_query_problem(text))
    params = {key: _text(value, f"value of {key}") for key, value in values.items()}
    if "port" in params:
        _ports(params["port"])
    for key, value in params.items():
        _value(key, value)
    return params


# The parameters whose values libpq checks itself, refusing the connection (a usage error
# here, before anything connects; the value is never quoted back).
CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": (
        "any", "read-write", "read-only", "primary", "standby", "prefer-standby",
    ),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "load_balance_hosts": ("disable", "random"),
    "sslnegotiation": ("postgres", "direct"),
    "sslcertmode": ("disable", "allow", "require"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
}  # fmt: skip
CASELESS = frozenset({"ssl_min_protocol_version", "ssl_max_protocol_version"})  # as libpq
INTEGERS = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
_INTEGER = re.compile(r"\s*[-+]?[0-9]+\s*")


def _value(key: str, value: str) -> None:
    """Refuse a value libpq would refuse on connecting, naming the parameter only."""
    caseless = key in CASELESS
    if key not in KNOWN_PARAMS or (caseless and not value):
        return  # an empty value is refused too, but for the TLS versions (no bound)
    choices = CHOICES.get(key, ())
    same = (lambda c: c.lower() == value.lower()) if caseless else value.__eq__
    if choices and not any(map(same, choices)):
        *rest, last = choices
        raise _Bad(f"a {key} that libpq does not take (one of {', '.join(rest)} or {last})")
    if key in INTEGERS and not (_INTEGER.fullmatch(value) and value.strip().isascii()):
        raise _Bad(f"a {key} that is not a whole number")


def _query_problem(text: str) -> str:
    """Why libpq refused a query: the first parameter it refuses on its own."""
    for item in text.split("&"):
        if _libpq("postgresql:///?" + item) is not None:
            continue
        key, eq, value = item.partition("=")
        if not eq or "=" in value:
            return "a query that is not key=value pairs"
        if key not in KNOWN_PARAMS:
            # Where an '@' follows, this may be the middle of a password: no name then.
            named = f" {key!r}" if _KEY.match(key) and "@" not in text else ""
            return f"an unknown query parameter{named}"
        return _why(value, f"value of {key}")
    return "a query that libpq cannot read"


@functools.lru_cache(maxsize=4096)
def parse(raw: str, source: str = "the URL") -> Parsed:
    """Split a database URL by the documented rule; a usage error quotes none of it.

    Remembered (a fleet's target is read from its file, checked, and named by several
    settings): treat what it returns as read only."""
    text = raw.strip()
    if not text:
        raise ConfigError(f"{source} is empty (an unset shell variable?)")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ConfigError(f"{source} is not a URL: expected postgresql://USER@HOST/DATABASE")
    if scheme.lower() not in SCHEMES:
        shown = f" {scheme!r}" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,20}", scheme) else ""
        raise ConfigError(
            f"{source} has an unsupported scheme{shown}: use postgresql:// or postgres://"
        )
    if "\x00" in rest:
        raise ConfigError(f"{source} cannot be used: it has a NUL character")
    if not _utf8(rest):  # undecodable bytes in a command line arrive as lone surrogates
        raise ConfigError(f"{source} cannot be used: it is not UTF-8 text")
    problems: dict[int, str] = {}  # why the query starting at each '?' was refused
    for index in [i for i, ch in enumerate(rest) if ch == "?"]:
        try:
            head = _authority(rest[:index])
        except _Bad:
            continue  # this '?' is inside the password
        try:
            params = _query(rest[index + 1 :])
        except _Bad as exc:
            problems[index] = exc.reason
            continue
        return _checked(Parsed(head.user, head.password, head.hosts, head.database, params), source)
    try:
        return _checked(_authority(rest), source)  # no query: every '?' is the password's
    except _Bad as exc:
        reason = exc.reason
    # The user part ends at the last '@': a '?' after it is the query's, whose problem is
    # the one to tell (a '?' inside the password may have looked like a query, too).
    reason = problems.get(rest.find("?", rest.rfind("@") + 1), reason)
    raise ConfigError(f"{source} cannot be used: it has {reason}")


def _checked(parsed: Parsed, source: str) -> Parsed:
    """libpq pairs the hosts with the ports and host addresses it reads (a query parameter
    winning over the authority): a list of ports (or of addresses) must be as long as the
    list of hosts. The canonical form is read by libpq once more, so that what goes
    downstream is what libpq takes."""
    found = _libpq(parsed.url())
    if found is None:  # only the user part is left unread by libpq
        raise ConfigError(f"{source} cannot be used: libpq cannot read its user name or password")
    listed = {  # an empty value is no list at all, as libpq takes it
        key: len(found[key].split(b",")) for key in ("host", "port", "hostaddr") if found.get(key)
    }
    hosts = listed.get("host", listed.get("hostaddr", 1))
    for key in ("port", "hostaddr"):
        given = listed.get(key, 0)
        paired = given > 1 or (key == "hostaddr" and given > 0 and "host" in listed)
        if paired and given != hosts:
            raise ConfigError(
                f"{source} cannot be used: it names {hosts} host(s) but {given} "
                f"{'ports' if key == 'port' else 'host addresses'}"
            )
    return parsed


# --- masking -----------------------------------------------------------------------------

_USERINFO_PASSWORD = re.compile(r"(://[^/@:\s]*:)([^@\s]*)(@)")
# Every parameter that holds a secret: the password, a client key's, an OAuth client's.
SECRET_KEYS = ("password", "sslpassword", "oauth_client_secret")
_QUERY_PASSWORD = re.compile(
    r"((?:^|[?&\s])(?:" + "|".join(SECRET_KEYS) + r")=)([^&\s]*)", re.IGNORECASE
)


def mask(text: str) -> str:
    """Hide every password that a canonical URL or conninfo string in ``text`` carries."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***\3", text))


def split_list(raw: str) -> list[str]:
    """A comma-separated list of URLs; a comma inside a password stays with it."""
    parts = re.split(r",(?=\s*(?:postgres(?:ql)?(?:\+psycopg)?)://)", raw, flags=re.IGNORECASE)
    return [p.strip() for p in parts if p.strip()]
