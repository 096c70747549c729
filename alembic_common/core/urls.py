"""Database URLs as people paste them: one documented rule, a canonical form, masking.

The rule (libpq's, made explicit for raw characters): in
``postgresql://USER:PASSWORD@HOSTS/DATABASE?PARAMS``

* the query is the part after the first ``?`` whose parameters are all keywords of the
  linked libpq and before which the rest of the URL parses; values may hold ``@``
  (``application_name=patient@3``);
* the user part ends at the **last** ``@`` before the host, so a password may contain raw
  ``@``, ``%``, ``:``, ``/``, ``#``, ``?``, spaces and non-ASCII;
* the user name ends at the first ``:``. A user part that holds a character which would
  have had to be percent-encoded was pasted raw and is taken exactly as typed; otherwise
  ``%XX`` (two hex digits) is decoded and any other ``%`` is kept (write ``%25`` for a
  literal ``%`` in an otherwise plain password).

A URL that does not parse is a usage error whose message quotes no part of it (an
unknown parameter's name is quoted only when it stands after a well-formed user part).
Everything downstream sees the canonical form, fully percent-encoded, so masking is exact.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from psycopg import pq

from alembic_common.errors import ConfigError

SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
# The linked libpq's connection keywords, the only ones it accepts as URL query parameters.
KNOWN_PARAMS = frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.%a-zA-Z]+\]|[A-Za-z0-9._~%-]*)(?::([0-9]*))?$")
_KEY = re.compile(r"^[a-z_]{1,40}$")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_URL_SAFE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:%]*")


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
            (f"[{h}]" if ":" in h else quote(h, safe=".-_~")) + (f":{p}" if p else "")
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


def _strict(text: str, what: str) -> str:
    """Decode a part where every ``%`` must begin a valid escape."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        raise _Bad(f"a broken percent escape in the {what}")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad(f"a percent escape in the {what} that is not UTF-8") from None


def _hosts(text: str) -> tuple[tuple[str, int | None], ...]:
    if text == "":
        return ()
    found = []
    for part in text.split(","):
        match = _HOST.match(part)
        if not match:
            raise _Bad("a host that is not a host name, an address or [IPv6]")
        host, port = match.group(1), match.group(2)
        if port is not None and port == "":
            raise _Bad("an empty port")
        number = int(port) if port else None
        if number is not None and not 1 <= number <= 65535:
            raise _Bad("a port outside 1-65535")
        found.append((_strict(host.strip("[]"), "host"), number))
    return tuple(found)


def _authority(text: str) -> Parsed:
    """``[user[:password]@]hosts[/database]``: the user part ends at the last ``@``."""
    at = text.rfind("@")
    userinfo, rest = (text[:at], text[at + 1 :]) if at >= 0 else (None, text)
    slash = rest.find("/")
    hostpart, path = (rest, None) if slash < 0 else (rest[:slash], rest[slash + 1 :])
    hosts = _hosts(hostpart)
    database = None
    if path is not None and path != "":
        if any(ch in path for ch in "/?#") or any(ch.isspace() for ch in path):
            raise _Bad("a database name with a raw '/', '?', '#' or space")
        database = _strict(path, "database name")
    user = password = None
    if userinfo is not None:
        name, colon, secret = userinfo.partition(":")
        user = _lenient(name) or None
        password = _lenient(secret) if colon else None
    return Parsed(user, password, hosts, database, {})


def _query(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if text == "":
        return params
    for item in text.split("&"):
        key, eq, value = item.partition("=")
        if not eq or not _KEY.match(key):
            raise _Bad("a query that is not key=value pairs")
        if key not in KNOWN_PARAMS:
            raise _Bad(f"an unknown query parameter {key!r}")
        if key in params:
            raise _Bad(f"the query parameter {key!r} given twice")
        params[key] = _strict(value, f"value of {key}")
    return params


def parse(raw: str, source: str = "the URL") -> Parsed:
    """Split a database URL by the documented rule; a usage error quotes none of it."""
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
    problem: str | None = None
    for index in [i for i, ch in enumerate(rest) if ch == "?"]:
        try:
            head = _authority(rest[:index])
        except _Bad:
            continue  # this '?' is inside the password
        try:
            params = _query(rest[index + 1 :])
        except _Bad as exc:
            problem = problem or exc.reason
            continue
        return _counted(Parsed(head.user, head.password, head.hosts, head.database, params), source)
    try:
        return _authority(rest)  # no query: every '?' belongs to the password
    except _Bad as exc:
        raise ConfigError(f"{source} cannot be used: it has {problem or exc.reason}") from None


def _counted(parsed: Parsed, source: str) -> Parsed:
    """libpq pairs the hosts with the ports and host addresses listed: a list of ports
    (or of addresses) must be as long as the list of hosts."""
    params = parsed.params
    hosts = len(parsed.hosts) or len(params.get("host", params.get("hostaddr", "")).split(","))
    named = bool(parsed.hosts) or "host" in params
    for key in ("port", "hostaddr"):
        given = len(params[key].split(",")) if key in params else 0
        paired = given > 1 or (key == "hostaddr" and given > 0 and named)
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
