"""Checksums of what each migration runs, as Flyway's ``validate`` and Atlas's ``atlas.sum``.

A version's checksum is the sha256 of its offline SQL (Alembic's ``--sql`` output,
without the toolkit's bookkeeping), with whitespace and line endings normalised: a
comment or reformatting in the Python file does not count, a changed statement does,
and so does a change in a shared helper (``ddl``, ``safe``, ``backfill``) that alters what
an old migration runs.

The checksums live in ``services/<name>/migrations/checksums.txt`` (written by
``migrate SERVICE hash``, checked in CI), each beside a fingerprint of its migration
file's bytes. ``status`` compares them with what ``schema_migrations`` recorded without
importing Alembic; a migration whose file no longer matches its fingerprint (edited, or
added since the last ``hash``) is rendered afresh, so an edit is seen even before anyone
re-hashes. ``up`` records each step's checksum as it applies it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import NamedTuple

from alembic_common.core.services import Service
from alembic_common.errors import ScriptError

FILE = "checksums.txt"
HEADER = (
    "# VERSION  sha256 of its offline SQL (whitespace normalised)  sha256 of its file\n"
    "# Written by 'migrate {service} hash'; CI checks it is current ('hash --check').\n"
)
_LINE = re.compile(r"^(\d{4,})\s+([0-9a-f]{64})\s+([0-9a-f]{64})$")


def path(service: Service) -> Path:
    return service.path / "migrations" / FILE


def of(statements: list[str]) -> str:
    """The checksum of a version's statements: line endings and whitespace do not count."""
    normalised = " ".join(" ".join(statements).split())
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def compute(service: Service, versions: list[int] | None = None) -> dict[int, str]:
    """Render offline the part of the history that holds ``versions`` (all when None) and
    take each version's checksum."""
    from alembic_common.authoring import offline

    disk = service.disk_versions()
    wanted = disk if versions is None else sorted(set(versions) & set(disk))
    if not wanted:
        return {}
    below = [v for v in disk if v < wanted[0]]
    start = below[-1] if below else None
    sums = {
        v.version: of(v.migration_sql())
        for v in offline.sql_plan(service, start, wanted[-1]).versions
    }
    return {v: sums[v] for v in wanted if v in sums}


def fingerprints(service: Service) -> dict[int, str]:
    """The sha256 of each migration file's bytes, by version."""
    return dict(service.file_hashes)


# The checksums file as last parsed, by path and text: a fleet reads it for every target,
# and comparing the text is a fraction of parsing its lines again.
_PARSED: dict[Path, tuple[str, dict[int, tuple[str, str]]]] = {}


def read(service: Service) -> dict[int, tuple[str, str]]:
    """The file's (checksum, fingerprint) per version (empty when it has none yet)."""
    where = path(service)
    try:
        text = where.read_text()
    except FileNotFoundError:
        return {}
    known = _PARSED.get(where)
    if known is None or known[0] != text:
        known = _PARSED[where] = (text, _parse(service, text))
    return dict(known[1])


def _parse(service: Service, text: str) -> dict[int, tuple[str, str]]:
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ScriptError(
                f"{path(service).name} line {number} is not 'VERSION SQL-SHA256 FILE-SHA256'",
                service=service.name,
            )
        found[int(match.group(1))] = (match.group(2), match.group(3))
    return found


def render(service: Service, sums: dict[int, str]) -> str:
    prints = fingerprints(service)
    lines = [f"{v:04d} {sums[v]} {prints.get(v)}" for v in sorted(sums)]
    return HEADER.format(service=service.name) + "\n".join(lines) + "\n"


def write(service: Service, sums: dict[int, str]) -> Path:
    target = path(service)
    target.write_text(render(service, sums))
    return target


def listed(service: Service) -> dict[int, str]:
    """The file's checksums of the migration files it still matches (plain Alembic records
    these; a step it does not list is recorded without one, as unverified)."""
    prints = fingerprints(service)
    return {
        v: checksum for v, (checksum, print_) in read(service).items() if print_ == prints.get(v)
    }


def expected(service: Service, versions: list[int]) -> dict[int, str]:
    """What each of ``versions`` runs today: the file's checksum while the migration file
    is the one it was taken from, else rendered afresh (an edit, or a step not hashed yet)."""
    listed = read(service)
    prints = fingerprints(service) if versions else {}
    fresh = {v: listed[v][0] for v in versions if v in listed and listed[v][1] == prints.get(v)}
    missing = [v for v in versions if v not in fresh]
    if missing:
        fresh |= compute(service, missing)
    return {v: fresh[v] for v in versions if v in fresh}


class Verdict(NamedTuple):
    """Applied versions against the code: changed since applied, or never checksummed."""

    changed: list[int]
    unverified: list[int]


def verdict(service: Service, recorded: dict[int, str | None]) -> Verdict:
    """Compare the checksums ``schema_migrations`` recorded with what the code runs today."""
    known = set(service.disk_versions())
    now = expected(service, sorted(v for v, c in recorded.items() if c is not None and v in known))
    changed, unverified = [], []
    for version, checksum in sorted(recorded.items()):
        if checksum is None or version not in now:
            unverified.append(version)
        elif checksum != now[version]:
            changed.append(version)
    return Verdict(changed, unverified)
