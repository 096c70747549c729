"""Secrets a run was handed, and scrubbing them from every output it makes.

The secrets are gathered once, when the command line starts: passwords in ``--url``
values and in every ``*_DATABASE_URL(S)``, ``*_MIGRATION_URL`` and ``MIGRATE_POOLER_URLS``
variable, ``--password``, the first line of
``--password-file``, ``PGPASSWORD`` and the passwords of the passfile libpq would read.
A ``Scrubber`` masks URL passwords and replaces each secret in every spelling it could
take on the way out (percent-encoded, JSON- or repr-escaped). The command line applies
it to stdout and stderr (whole lines at a time, so a secret split across writes is still
caught) and to every file it writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from alembic_common.core import urls
from alembic_common.errors import ConfigError

URL_VARIABLES = (
    "DATABASE_URL",
    "DATABASE_URLS",
    "MIGRATION_URL",
    "MIGRATION_URLS",
    "MIGRATE_SCRATCH_SERVER",
    "MIGRATE_POOLER_URLS",
    "REGISTRY_URL",
)
SHORTEST = 3  # shorter strings are too common to replace blindly; they hold no 3-char fragment


def _url_passwords(raw: str) -> set[str]:
    """The password of each URL in ``raw`` (one URL or a list), however it was typed."""
    found: set[str] = set()
    for part in urls.split_list(raw) or [raw]:
        with contextlib.suppress(ConfigError):
            parsed = urls.parse(part)
            secrets = [parsed.password, *(parsed.params.get(k) for k in urls.SECRET_KEYS)]
            found.update(p for p in secrets if p)
        # The text between the scheme and the last '@' holds the password even when the
        # URL does not parse: never let a fragment of it through.
        _, sep, rest = part.partition("://")
        if sep and "@" in rest:
            userinfo = rest[: rest.rfind("@")]
            if ":" in userinfo:
                found.add(userinfo.split(":", 1)[1])
    return found


def _passfile(environ: Mapping[str, str]) -> set[str]:
    path = Path(environ.get("PGPASSFILE") or Path.home() / ".pgpass")
    found = set()
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                fields = line.replace("\\:", "\0").split(":")
                if len(fields) >= 5:
                    found.add(":".join(fields[4:]).replace("\0", ":").replace("\\\\", "\\"))
    return found


def gather(argv: Sequence[str], environ: Mapping[str, str]) -> frozenset[str]:
    """Every secret the user may have handed this run."""
    found: set[str] = set()
    for name, value in environ.items():
        if name.endswith(URL_VARIABLES):
            found |= _url_passwords(value)
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if name in ("--url", "--registry-url"):
            found |= _url_passwords(value)
        elif name == "--password":
            found.add(value)
        elif name == "--password-file":
            with contextlib.suppress(OSError, UnicodeDecodeError):
                found.update(Path(value).read_text().splitlines()[:1])
    found.add(environ.get("PGPASSWORD", ""))
    found |= _passfile(environ)
    return frozenset(s for s in found if len(s) >= SHORTEST)


def spellings(secret: str) -> set[str]:
    """The forms a secret can take in output: as is, percent-encoded, escaped."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret, safe="/"),
        quote(secret, safe="/").lower(),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        secret.encode("unicode_escape").decode("ascii"),
    }
    return {f for f in forms if len(f) >= SHORTEST}


class Scrubber:
    """Masks URL passwords and every known secret in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = frozenset(secrets)
        forms = {form for secret in self.secrets for form in spellings(secret)}
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = urls.mask(text)
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text

    def __reduce__(self) -> tuple[Any, tuple[frozenset[str]]]:
        return Scrubber, (self.secrets,)


class ReaderGone(Exception):
    """Whoever read this output went away (``| head -1``); not an OSError, so no library
    in between turns it into an error exit of its own."""


class ScrubbedStream(io.TextIOBase):
    """A text stream that passes whole lines through a scrubber to the stream beneath."""

    def __init__(self, target: TextIO, scrub: Scrubber) -> None:
        self.target, self.scrub, self._pending = target, scrub, ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self._send(self.scrub(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        text, self._pending = self._pending, ""
        self._send(self.scrub(text) if text else "")

    def _send(self, text: str) -> None:
        try:
            if text:
                self.target.write(text)
            self.target.flush()
        except BrokenPipeError:
            raise ReaderGone from None

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


def from_environment(argv: Sequence[str]) -> Scrubber:
    """The scrubber of a command line run in this process's environment."""
    return Scrubber(gather(argv, os.environ))


# --- values from rows: what a server message may quote ---------------------------------------

# --show-data (or this variable) shows server messages as they are; by default every value a
# message quotes is replaced by ***, so no patient's data reaches a terminal, a log pipeline,
# a --json object, an events file or a traceback.
SHOW_DATA = "MIGRATE_SHOW_DATA"
DEBUG = "MIGRATE_DEBUG"  # --debug for every run
# A quoted name right after one of these words names a database object, not a value.
_OBJECTS = frozenset(
    [
        "relation",
        "table",
        "column",
        "constraint",
        "index",
        "type",
        "schema",
        "function",
        "procedure",
        "routine",
        "role",
        "database",
        "sequence",
        "view",
        "trigger",
        "extension",
        "policy",
        "operator",
        "domain",
        "collation",
        "encoding",
        "tablespace",
        "publication",
        "subscription",
        "server",
        "attribute",
        "savepoint",
        "cursor",
        "parameter",
        "portal",
        "statement",
        "setting",
        "aggregate",
        "conversion",
        "family",
        "class",
        "language",
        "transform",
        "cast",
        "rule",
        "event",
    ]
)
_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_WORD_BEFORE = re.compile(r"([A-Za-z_]+)\s*$")
# Where a row's values start: ``Key (columns)=(`` and ``[Partition key of the] failing row
# contains (``. They run to the last ")" of the text, whatever they hold (newlines,
# parentheses, the message's own words): the values' own ")" is one of them.
_ROW_VALUES = re.compile(r"\bkey \(.*?\)=\(|\bfailing row contains \(", re.IGNORECASE)
_BYTES = re.compile(r"0x[0-9a-fA-F]{2}(?:\s+0x[0-9a-fA-F]{2})*")
# Lines of a database error that quote the statement or its context, values and all.
_STATEMENT_LINE = re.compile(r"^\s*(?:LINE \d+:|\[SQL:|\[parameters:|QUERY:|CONTEXT:|\s*\^)")
# A switch (MIGRATE_SHOW_DATA, MIGRATE_DEBUG) is on or off only when it says so plainly.
SWITCH = {"1": True, "true": True, "yes": True, "on": True}
SWITCH |= {"": False, "0": False, "false": False, "no": False, "off": False}


def switch(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """An on/off variable: unset, empty, 0, false, no or off is off; 1, true, yes or on is
    on (case and spaces aside); anything else is a usage error, so that ``=false`` cannot
    turn on what it meant to turn off."""
    value = environ.get(name, "")
    found = SWITCH.get(value.strip().lower())
    if found is None:
        raise ConfigError(
            f"{name} {value.strip()[:30]!r} is neither on nor off; use 1, true, yes or on, "
            "or 0, false, no or off (or leave it unset)"
        )
    return found


def switched_on(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a switch is on; a value the command line refuses (``switch``) is off."""
    return SWITCH.get(environ.get(name, "").strip().lower(), False)


def shows_data(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether --show-data (or MIGRATE_SHOW_DATA) is on."""
    return switched_on(SHOW_DATA, environ)


def _masked_rows(text: str) -> str:
    match = _ROW_VALUES.search(text)
    if match is None:
        return text
    close = text.rfind(")")
    return text[: match.end()] + "***)" + (text[close + 1 :] if close >= match.end() else "")


def without_values(text: str, names: Iterable[str] = ()) -> str:
    """``text`` (a server message, or a client tool's output) with every value it quotes
    from a row replaced by ``***``: quoted literals, ``Key (...)=(...)`` values, ``Failing
    row contains (...)``, byte sequences. Names stay: a quoted word after an object kind
    (``relation "patients"``, ``constraint "c"``) or one of ``names``; SQLSTATEs too.

    A value may hold quotes, parentheses and line breaks of its own, so the text is read
    whole, never a line at a time: a quoted value is masked from its opening quote to the
    last quote in the text, a key's or a failing row's values to the last ``)``; what a
    value holds can only make more of the text masked."""
    if shows_data():
        return text
    kept = set(names)
    text = _masked_rows(text)
    for match in _QUOTED.finditer(text):
        inner = match.group(0)[1:-1].replace('""', '"')
        before = _WORD_BEFORE.search(text[: match.start()])
        if inner in kept or (before is not None and before.group(1).lower() in _OBJECTS):
            continue
        text = text[: match.start()] + '"***"' + text[text.rfind('"') + 1 :]
        break
    return _BYTES.sub("***", text)


def one_line(text: str) -> str:
    """``text`` on one line: line breaks, escape sequences and other control or format
    characters (a value may hold any of them) written as escapes, never sent to a terminal."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        else ch
        for ch in text
    )


def first_line(exc: BaseException) -> str:
    """An error in one line: its first, with URL passwords masked and, for a server error,
    its whole primary message (a value it quotes may span lines) with the values of rows
    replaced (the names in its diagnostics kept), and its SQLSTATE."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's DBAPIError wraps psycopg's
    diag = getattr(cause, "diag", None)
    if diag is None or not diag.sqlstate:  # not the server's message (a connection failure)
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        return one_line(urls.mask(lines[0]) if lines else type(cause).__name__)
    names = (
        diag.schema_name,
        diag.table_name,
        diag.column_name,
        diag.constraint_name,
        diag.datatype_name,
    )
    primary = (diag.message_primary or "").strip() or type(cause).__name__
    reduced = _primary(urls.mask(primary), diag.sqlstate, (n for n in names if n))
    return f"{one_line(reduced)} (SQLSTATE {diag.sqlstate})"


def _primary(text: str, sqlstate: str | None, names: Iterable[str] = ()) -> str:
    """A server error's primary message without values. A data exception (class 22) may
    name its value unquoted after a colon (``date field value out of range: 2020-13-01``
    from make_date): that is masked too."""
    reduced = without_values(text, names)
    if shows_data() or not (sqlstate or "").startswith("22"):
        return reduced
    head, colon, tail = reduced.partition(": ")
    return f"{head}: ***" if colon and not tail.startswith('"') else reduced


def _error_text(exc: BaseException) -> str:
    """A database error's whole text without row values: its message, DETAIL and HINT
    reduced, the statement and its context left out."""
    if shows_data():
        return str(exc)
    cause = getattr(exc, "orig", None) or exc
    diag = getattr(cause, "diag", None)
    if diag is not None and diag.message_primary:
        fields = [_primary(diag.message_primary, diag.sqlstate)]
        if diag.message_detail:  # a data exception's detail may echo its input, unquoted (XML)
            data = (diag.sqlstate or "").startswith("22") and not _ROW_VALUES.search(
                diag.message_detail
            )
            fields.append("DETAIL:  " + ("***" if data else without_values(diag.message_detail)))
        if diag.message_hint:
            fields.append("HINT:  " + without_values(diag.message_hint))
        return "\n".join(fields) + "\n(statement and context not shown: --show-data)"
    lines = [ln for ln in str(exc).split("\n") if not _STATEMENT_LINE.match(ln)]
    left = "" if len(lines) == len(str(exc).split("\n")) else "\n(statement not shown: --show-data)"
    return without_values("\n".join(lines)) + left


def _from_database(exc: BaseException) -> bool:
    return any(
        type(e).__module__.split(".")[0] in ("psycopg", "sqlalchemy")
        for e in (exc, getattr(exc, "orig", None))
        if e is not None
    )


def traceback_text(exc: BaseException) -> str:
    """``--debug``'s traceback of ``exc``, each database error in its chain without values."""
    import traceback

    shown = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    pending: list[tuple[BaseException | None, Any]] = [(exc, shown)]
    while pending:
        error, frame = pending.pop()
        if error is None or frame is None or id(error) in seen:
            continue
        seen.add(id(error))
        if _from_database(error):
            frame._str = _error_text(error)  # what format() prints after the type's name
        pending.append((error.__cause__, frame.__cause__))
        pending.append((error.__context__, frame.__context__))
    return "".join(shown.format())
