"""Shared bench helpers: a server to measure on, throwaway databases, and timing."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
# Measure as deployed, with Python's bytecode cache: a shell that sets
# PYTHONDONTWRITEBYTECODE (this sandbox does) would make every process it starts compile
# the modules edited since the cache was written, on both sides of a comparison.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.path.insert(0, str(ROOT))

from alembic_common.core import embedded, paths  # noqa: E402
from alembic_common.core.db import with_database  # noqa: E402
from alembic_common.core.settings import Settings, normalize_url  # noqa: E402


def server() -> str:
    """BENCH_DATABASE_URL, else TEST_DATABASE_URL, else the embedded server."""
    for var in ("BENCH_DATABASE_URL", "TEST_DATABASE_URL"):
        if os.environ.get(var):
            return normalize_url(os.environ[var])
    return embedded.server_url(paths.data_dir(ROOT))


def database_of(url: str) -> str:
    return Settings("bench", url, "bench").database


def create_db(server_url: str, *, template: str | None = None, prefix: str = "bench") -> str:
    """A new, uniquely named database (a copy of ``template``'s database if given); its URL.

    A template must have no connections while it is copied."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(database_of(template)))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(query)
    return with_database(server_url, name)


def drop_db(server_url: str, url: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(database_of(url))
            )
        )


def create_dbs(
    server_url: str,
    count: int,
    *,
    template: str | None = None,
    prefix: str = "bench",
    threads: int = 8,
) -> list[str]:
    """``count`` new databases, ``threads`` CREATE DATABASE at a time (a drop or a copy is
    mostly waiting on the server's checkpoint and disk, so a few at once go faster)."""
    if count <= 0:
        return []
    with ThreadPoolExecutor(max_workers=min(threads, count)) as pool:
        return list(
            pool.map(
                lambda _: create_db(server_url, template=template, prefix=prefix), range(count)
            )
        )


def drop_dbs(server_url: str, urls: Iterable[str], threads: int = 8) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda url: drop_db(server_url, url), urls))


def drop_prefixed(server_url: str, prefix: str, threads: int = 8) -> int:
    """Drop every database whose name starts with ``prefix`` (a bench's leftovers); how many."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [prefix]
            )
        ]
    drop_dbs(server_url, [with_database(server_url, name) for name in names], threads)
    return len(names)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of one subprocess run, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed:\n{done.stderr}")
    return elapsed


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """'median (range min-max)', each value times ``scale``."""
    low, mid, high = (v * scale for v in (min(values), median(values), max(values)))
    if len(values) == 1:
        return f"{mid:.{digits}f}"
    dash = " to " if low < 0 else "-"  # "-84 to 54", not "-84-54"
    return f"{mid:.{digits}f} (range {low:.{digits}f}{dash}{high:.{digits}f})"
