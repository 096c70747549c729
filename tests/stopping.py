"""Stop a migration run at its Nth commit boundary inside a step, for real.

Every commit a step makes of its own goes through ``safe.committed_so_far`` (the batched
backfill, a constraint validated in its own transaction, an index built CONCURRENTLY): the
step so far commits as the block begins, and the block's own work has committed when it
ends. Both are boundaries. At the Nth one counted in a run, the run is stopped one of three
ways, as production stops it:

  fail       an exception (a statement that fails there)
  terminate  pg_terminate_backend of the migration's own server process, from another
             session, once pg_stat_activity no longer lists it
  kill       SIGKILL of the migrating process
  sigterm    SIGTERM of the migrating process (what Kubernetes sends before SIGKILL)

Run as a script, it wraps the migrate CLI:
``python tests/stopping.py N MODE SERVICE ACTION [options]``; each boundary passed is
written to stderr as ``boundary N``, so a test sees how far the run got.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg

MODES = ("fail", "terminate", "kill", "sigterm")


class Stopped(RuntimeError):
    """The injected failure."""


def _terminate_own_backend() -> None:
    from alembic import op

    raw = op.get_bind().connection.dbapi_connection
    assert raw is not None
    pid = raw.info.backend_pid
    with psycopg.connect(raw.info.dsn, password=raw.info.password, autocommit=True) as other:
        other.execute("SELECT pg_catalog.pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 30
        while other.execute(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone() != (0,):
            if time.monotonic() > deadline:
                raise AssertionError(f"backend {pid} outlived pg_terminate_backend")
            time.sleep(0.01)


def stopper(at: int, mode: str, seen: list[int]) -> Callable[[], None]:
    """The action at each boundary: count it, and stop the run at the ``at``-th."""

    def boundary() -> None:
        seen.append(len(seen) + 1)
        print(f"boundary {len(seen)}", file=sys.stderr, flush=True)
        if len(seen) != at:
            return
        if mode == "fail":
            raise Stopped(f"stopped at commit boundary {at}")
        if mode == "terminate":
            _terminate_own_backend()
            return
        os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGTERM)

    return boundary


def wrap(
    real: Callable[[], AbstractContextManager[None]], boundary: Callable[[], None]
) -> Callable[[], AbstractContextManager[None]]:
    """``committed_so_far`` with a boundary as its block begins and once it has ended."""

    @contextmanager
    def committed_so_far() -> Iterator[None]:
        from alembic import op

        if op.get_context().as_sql:  # a plan (or a checksum) commits nothing
            with real():
                yield
            return
        with real():
            boundary()
            yield
        boundary()

    return committed_so_far


def install(at: int, mode: str) -> list[int]:
    """Patch this process's ``committed_so_far``; return the list of boundaries passed."""
    from alembic_common.online import safe

    seen: list[int] = []
    safe.committed_so_far = wrap(safe.committed_so_far, stopper(at, mode, seen))  # type: ignore[assignment]
    return seen


def main(argv: list[str]) -> Any:
    at, mode, *args = argv
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    install(int(at), mode)
    from alembic_common.cli import run

    sys.argv = ["migrate", *args]
    return run()


if __name__ == "__main__":
    main(sys.argv[1:])
