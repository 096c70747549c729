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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from alembic_common import urls
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
