"""Shared bench helpers: a server to measure on, throwaway databases, and timing."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alembic_common import embedded, paths  # noqa: E402
from alembic_common.db import with_database  # noqa: E402
from alembic_common.settings import Settings, normalize_url  # noqa: E402


def server() -> str:
    """BENCH_DATABASE_URL, else TEST_DATABASE_URL, else the embedded server."""
    for var in ("BENCH_DATABASE_URL", "TEST_DATABASE_URL"):
        if os.environ.get(var):
            return normalize_url(os.environ[var])
    return embedded.server_url(paths.data_dir(ROOT))


def create_db(server_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_db(server_url: str, url: str) -> None:
    name = Settings("bench", url, "bench").database
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


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
