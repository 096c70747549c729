"""The process around a run, without typer: signals as exceptions, every output through the
run's scrubber, a closed stdout, ``--show-data``, the one line of a failure, and the end of
the process.

Both the whole CLI (``frame.py``) and its fast path (``fast.py``) run inside these.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from alembic_common.errors import MigrationError
from alembic_common.safety import redact

PROG = "migrate"


class Signalled(KeyboardInterrupt):
    """SIGTERM (or SIGINT) as an exception, so the run rolls back and reports like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def showing_data(asked: bool) -> Iterator[None]:
    """``--show-data`` for this run only (its forked workers inherit it; nothing after it does)."""
    before = os.environ.get(redact.SHOW_DATA)
    if asked:
        os.environ[redact.SHOW_DATA] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(redact.SHOW_DATA, None)
        else:
            os.environ[redact.SHOW_DATA] = before


def _raise_signal(signum: int, frame: Any) -> None:
    raise Signalled(signum)


@contextlib.contextmanager
def signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into exceptions for the duration of a run (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def scrubbed(scrub: redact.Scrubber) -> Iterator[None]:
    """Route stdout and stderr through the scrubber; a closed stdout is not an error (one
    closed before the run started, which Python leaves as None, writes nowhere)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout = redact.ScrubbedStream(out or open(os.devnull, "w"), scrub)  # noqa: SIM115
    sys.stderr = redact.ScrubbedStream(err or open(os.devnull, "w"), scrub)  # noqa: SIM115
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(redact.ReaderGone, ValueError, OSError):
                stream.flush()
        sys.stdout, sys.stderr = out, err


def failed(exc: BaseException, argv: Sequence[str], *, debug: bool) -> int:
    """Say what stopped a run (an error of ours, a signal, a bug) on one line; its exit code."""
    if isinstance(exc, MigrationError):
        return fail(argv, str(exc), exc.exit_code, debug=debug)
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", signal.SIGINT)
        return fail(argv, f"interrupted ({signal.Signals(signum).name})", 128 + signum, debug=debug)
    return fail(
        argv,
        f"unexpected {type(exc).__name__}: {redact.first_line(exc)} (rerun with --debug for the "
        "traceback)",
        1,
        debug=debug,
    )


def fail(argv: Sequence[str], message: str, code: int, *, debug: bool, usage: bool = False) -> int:
    """``migrate: error: MESSAGE`` on stderr (``debug``: after the traceback of the error being
    handled), with ``--json`` the failure's object on stdout; the exit code."""
    import json
    import traceback

    error = sys.exc_info()[1]
    if debug:
        sys.stderr.write(redact.traceback_text(error) if error else traceback.format_exc())
    line = redact.one_line(" ".join(message.split()))
    sys.stderr.write(f"{PROG}: error: {line}\n")
    if "--json" in argv:
        sys.stdout.write(json.dumps(failure_json(argv, error, line, code, usage=usage)) + "\n")
    return code


def failure_json(
    argv: Sequence[str],
    error: BaseException | None,
    message: str,
    code: int,
    *,
    usage: bool = False,
) -> dict[str, Any]:
    """The one JSON object a failed command prints under ``--json``: which command, that it
    failed, how (``error``: exit code, kind, the one-line message, service and version where
    known), and what it had done before (``steps`` applied or rolled back)."""
    words = [a for a in argv[:2] if not a.startswith("-")]
    kind = (
        error.kind
        if isinstance(error, MigrationError)
        else "usage"
        if usage
        else "interrupted"
        if isinstance(error, KeyboardInterrupt)
        else "unexpected"
    )
    service = getattr(error, "service", None) or (words[0] if words else None)
    done = error.done if isinstance(error, MigrationError) else {}
    return {
        "service": service,
        "action": words[1] if len(words) > 1 else None,
        "ok": False,
        **done,
        "error": {
            "exit_code": code,
            "kind": kind,
            "message": message,
            "service": service,
            "version": getattr(error, "version", None),
        },
    }


@contextlib.contextmanager
def reader_may_go() -> Iterator[None]:
    """Printing a report whose exit code is already known: a reader that goes away
    (``| head -1``) ends the printing, not the verdict."""
    try:
        yield
        sys.stdout.flush()
    except redact.ReaderGone:
        stdout_gone()


def stdout_gone() -> int:
    """The reader of stdout went away (``| head -1``): stop quietly, exit 0."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
    return 0


def finish(code: int) -> None:
    """Flush the output, run the ``atexit`` handlers, then end the process at once: the
    interpreter's own teardown of the modules loaded (psycopg above all) cost every start
    about 100 ms, a third of a no-op ``up``. Files the run writes (events, metrics,
    backups) are written and closed by then."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
