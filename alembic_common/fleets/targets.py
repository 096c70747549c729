"""Where a service's databases are, and which of them this run takes.

Sources: ``--url`` given several times, ``<SERVICE>_DATABASE_URLS``, a targets file (one
URL or ``name=URL`` a line, ``#`` comments) or a tenant registry (a query on a control
database returning ``name`` and ``url``, or ``name``, ``host``, ``port`` and ``database``).
Every entry says where it came from, so a bad or duplicate one is a usage error naming its
line. ``--shard I/N`` keeps a stable hash-partition of the list, ``--only`` a previous
report's failures.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from alembic_common.core import urls
from alembic_common.errors import ConnectError, UsageError
from alembic_common.safety.redact import first_line

_NAMED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,127})\s*=\s*(\S.*)$")
_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+psycopg)?://", re.IGNORECASE)
# What a report's target did not do: a rerun takes these.
UNFINISHED = ("failed", "not run", "skipped")


class Entry(NamedTuple):
    """One target as listed: its URL, an optional name, and where it was listed."""

    url: str
    where: str  # "targets.txt line 4", "--url #2", "registry row 3 (clinic-7)"
    source: str  # the option or variable that listed it
    name: str | None = None


# --- sources -------------------------------------------------------------------------------


def from_urls(raw: Sequence[str], source: str) -> list[Entry]:
    """``--url`` given several times, or the entries of ``<SERVICE>_DATABASE_URLS``."""
    return [_entry(u, f"{source} #{i}", source) for i, u in enumerate(raw, 1)]


def from_file(path: Path) -> list[Entry]:
    """A targets file: one URL or ``name=URL`` a line; blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read --targets-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--targets-file {path} is not UTF-8 text") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name} line {number}"
        named = _NAMED.match(line)
        if named and not _SCHEME.match(line):
            found.append(_entry(named.group(2), where, "--targets-file", named.group(1)))
        elif _SCHEME.match(line):
            found.append(_entry(line, where, "--targets-file"))
        else:
            raise UsageError(
                f"{where}: expected a postgresql:// URL or name=URL (names: letters, digits, "
                "'_', '.', '-')"
            )
    return found


def from_registry(url: str, query: str, connect_timeout: int) -> list[Entry]:
    """The rows of a tenant registry query, read in a read-only transaction.

    Columns by name: ``name`` and ``url``, or ``name``, ``host``, ``port`` (optional) and
    ``database`` (or ``dbname``). A URL with a password is refused: credentials come from
    ``PGPASSFILE`` or the environment, never from the registry in clear.
    """
    import psycopg

    if not query.strip():
        raise UsageError("--registry-query is empty")
    canonical = urls.parse(url, "--registry-url").url()
    shown = urls.mask(canonical)
    try:
        with psycopg.connect(canonical, connect_timeout=connect_timeout, autocommit=False) as conn:
            conn.read_only = True
            with conn.cursor() as cur:
                cur.execute(query.encode())  # bytes: taken as it is, no placeholders
                if cur.description is None:
                    raise UsageError("--registry-query returned no rows (it is not a query)")
                columns = [c.name.lower() for c in cur.description]
                rows = cur.fetchall()
    except psycopg.OperationalError as exc:
        raise ConnectError(
            f"cannot read the tenant registry at {shown}: {first_line(exc)}"
        ) from None
    except psycopg.Error as exc:
        raise UsageError(f"--registry-query failed: {first_line(exc)}") from None
    return [
        _registry_entry(dict(zip(columns, row, strict=True)), n) for n, row in enumerate(rows, 1)
    ]


def _registry_entry(row: Mapping[str, Any], number: int) -> Entry:
    where = f"registry row {number}"
    name = row.get("name")
    if name is None or not str(name).strip():
        raise UsageError(f"{where}: no name (the query must return a 'name' column)")
    where = f"{where} ({str(name).strip()[:60]})"
    if row.get("url") is not None:
        entry = _entry(str(row["url"]), where, "registry", str(name).strip())
    elif row.get("host") is not None and (row.get("database") or row.get("dbname")):
        port = row.get("port")
        try:
            number_port = int(port) if port is not None else None
        except (TypeError, ValueError):
            raise UsageError(f"{where}: port {str(port)[:20]!r} is not a number") from None
        if number_port is not None and not 0 < number_port < 65536:
            raise UsageError(f"{where}: port {number_port} is not a TCP port (1-65535)")
        parsed = urls.Parsed(
            os.environ.get("PGUSER") or "postgres",
            None,
            ((str(row["host"]).strip().strip("[]"), number_port),),
            str(row.get("database") or row.get("dbname")),
            {},
        )
        entry = _entry(parsed.url(), where, "registry", str(name).strip())
    else:
        raise UsageError(
            f"{where}: the query must return 'url', or 'host' and 'database' (and 'port')"
        )
    parsed_url = urls.parse(entry.url)
    if parsed_url.password or parsed_url.params.get("password"):
        raise UsageError(
            f"{where}: the registry holds a password in clear; give credentials through "
            "PGPASSFILE or PGPASSWORD instead"
        )
    return entry


def _entry(raw: str, where: str, source: str, name: str | None = None) -> Entry:
    if not raw.strip():
        raise UsageError(f"{where} is empty")
    try:
        return Entry(urls.parse(raw.strip(), where).url(), where, source, name)
    except UsageError as exc:
        text = str(exc)
        raise UsageError(text if text.startswith(where) else f"{where}: {text}") from None


# --- checks and selection ------------------------------------------------------------------


def identity(entry: Entry) -> str:
    """What makes two entries the same database: server and database, not the login."""
    from alembic_common.core.settings import Settings

    where = Settings("listed", entry.url, "listed")
    return f"{where.host.lower()}:{where.port}/{where.database}"


def unique(entries: Sequence[Entry]) -> list[Entry]:
    """The entries, refusing a database or a name listed twice (naming both places)."""
    seen: dict[str, Entry] = {}
    names: dict[str, Entry] = {}
    for entry in entries:
        key = identity(entry)
        if key in seen:
            raise UsageError(f"{entry.where}: {key} is listed twice (also {seen[key].where})")
        seen[key] = entry
        if entry.name is not None:
            if entry.name in names:
                raise UsageError(
                    f"{entry.where}: the name {entry.name} is used twice (also "
                    f"{names[entry.name].where})"
                )
            names[entry.name] = entry
    return list(entries)


def parse_shard(text: str, environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """``I/N`` (0 <= I < N), or ``auto``: Kubernetes' JOB_COMPLETION_INDEX and JOB_COMPLETIONS."""
    if text.strip().lower() == "auto":
        index, count = (
            environ.get(v, "").strip() for v in ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS")
        )
        missing = [
            v for v, x in (("JOB_COMPLETION_INDEX", index), ("JOB_COMPLETIONS", count)) if not x
        ]
        if missing:
            raise UsageError(
                f"--shard auto needs {' and '.join(missing)} in the environment (an Indexed "
                "Job sets JOB_COMPLETION_INDEX; set JOB_COMPLETIONS to its completions)"
            )
        source = "JOB_COMPLETION_INDEX/JOB_COMPLETIONS"
    else:
        index, _, count = text.partition("/")
        source = "--shard"
    if not (index.strip().isdigit() and count.strip().isdigit()):
        raise UsageError(
            f"{source} {text if source == '--shard' else f'{index}/{count}'!r} is not I/N"
        )
    i, n = int(index), int(count)
    if n < 1 or i >= n:
        raise UsageError(f"{source} {i}/{n}: the index must be 0..N-1 and N at least 1")
    return i, n


def in_shard(key: str, index: int, count: int) -> bool:
    """A stable partition: the same key lands in the same shard on every machine and run."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def shard_key(entry: Entry) -> str:
    return entry.name if entry.name is not None else identity(entry)


def unfinished(path: Path) -> set[str]:
    """The targets a ``--json`` report says did not finish (failed, not run, skipped)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        listed = report["targets"]
        return {
            str(t["target"]) for t in listed if isinstance(t, dict) and t.get("state") in UNFINISHED
        }
    except OSError as exc:
        raise UsageError(f"cannot read --only {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            f"--only {path} is not a --json report of a run over several targets "
            "(no 'targets' list)"
        ) from None


def limit(text: str, total: int, option: str) -> int:
    """A count (``5``) or a share of ``total`` (``10%``, rounded up)."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            share = Decimal(raw[:-1].strip())
            if not (share.is_finite() and 0 <= share <= 100):
                raise ValueError
            return math.ceil(share * total / 100)
        number = int(raw)
        if number < 0:
            raise ValueError
        return number
    except (ValueError, ArithmeticError):
        raise UsageError(f"{option} {raw[:20]!r} is not a count or a percentage (0-100%)") from None
