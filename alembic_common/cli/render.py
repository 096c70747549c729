"""What a person or a script reads: plain tables, hints, JSON, and run events.

Tables are plain aligned text (rich, without box drawing), piped or not: no padding to a
width, no line folded. On a terminal the last column is cut to the screen with an ellipsis
(``--json`` has everything) and hints wrap between words, never inside a quoted command
such as ``'up --contract'``. Run events become short lines on stderr and, with ``--events``,
JSON lines written through the run's scrubber.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic_common.core import events as ev
from alembic_common.core.events import Event
from alembic_common.safety import files
from alembic_common.safety.redact import Scrubber

if TYPE_CHECKING:
    from alembic_common.core.runner import RunResult, Status

NBSP = "\u00a0"
ELLIPSIS = "…"


def terminal() -> bool:
    return sys.stdout.isatty()


def width() -> int:
    return shutil.get_terminal_size((80, 24)).columns


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def spans(versions: Sequence[int]) -> str:
    """Sorted versions with each unbroken run shortened: ``1-1000``, ``2, 4-6``."""
    runs: list[tuple[int, int]] = []
    for version in versions:
        if runs and version == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], version)
        else:
            runs.append((version, version))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


def md_cell(text: str) -> str:
    """Text in a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def print_json(data: Any) -> None:
    out(json.dumps(data, default=str))


LAST_AT_LEAST = 20  # characters the last column keeps on a narrow terminal
WRAPS_AT_LEAST = 10  # an earlier column narrower than this is never wrapped further


def fit(natural: Sequence[int], limit: int) -> list[int]:
    """Column widths within ``limit`` (two spaces between columns): the last column gives
    way first, down to LAST_AT_LEAST; then the widest other one, which wraps."""
    widths = list(natural)
    over = sum(widths) + 2 * (len(widths) - 1) - limit
    give = min(max(over, 0), max(widths[-1] - LAST_AT_LEAST, 0))
    widths[-1] -= give
    over -= give
    while over > 0:
        widest = max(range(len(widths) - 1), key=lambda i: widths[i], default=None)
        if widest is None or widths[widest] <= WRAPS_AT_LEAST:
            break
        cut = min(over, widths[widest] - WRAPS_AT_LEAST)
        widths[widest] -= cut
        over -= cut
    return widths


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Rows as aligned plain text (rich, without box drawing). Piped: every cell whole and
    no line padded past its last cell. On a terminal: within its width, the last column
    cut with an ellipsis, earlier ones wrapped between words when they must give way."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    if not terminal() and not any("\n" in c for row in cells for c in row):
        return _plain_table(cells, right)
    natural = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return _rich_table(cells, right, fit(natural, width()) if terminal() else natural)


def _rich_table(cells: list[list[str]], right: Sequence[int], widths: list[int]) -> str:
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0), header_style="")
    last = len(widths) - 1
    for i, header in enumerate(cells[0]):
        grid.add_column(
            header,
            justify="right" if i in right else "left",
            width=widths[i],
            no_wrap=i == last,
            overflow="ellipsis" if i == last else "fold",
        )
    for row in cells[1:]:
        grid.add_row(*(Text(cell) for cell in row))
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=sum(widths) + 2 * last,
        color_system=None,
        highlight=False,
        markup=False,
        emoji=False,
    )
    console.print(grid)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def _plain_table(cells: list[list[str]], right: Sequence[int]) -> str:
    """What ``table`` prints when piped, without loading rich's tables (a ``status`` in a
    start hook or a script): columns two spaces apart, padded by display width."""
    from rich.cells import cell_len

    widths = [max(cell_len(row[i]) for row in cells) for i in range(len(cells[0]))]
    last = len(widths) - 1
    lines = []
    for row in cells:
        parts = []
        for i, cell in enumerate(row):
            if i in right:  # rich justifies a cell's text without its trailing spaces
                cell = cell.rstrip(" ")
            pad = " " * (widths[i] - cell_len(cell)) if i != last or i in right else ""
            parts.append(pad + cell if i in right else cell + pad)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


@contextmanager
def progress_bar(total: int, quiet: bool) -> Iterator[Callable[..., None]]:
    """A bar with counts on a terminal's stderr; yields the callback that advances it."""
    if quiet or not sys.stderr.isatty():  # no bar: rich's console is not even loaded
        yield lambda *_: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # No auto-refresh thread: workers are forked, and a thread holding a lock at fork time
    # would leave that lock held forever in the child.
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
        transient=True,
    )
    with bar:
        task = bar.add_task("databases", total=total)

        def advance(*_: Any) -> None:
            bar.advance(task)
            bar.refresh()

        yield advance


def wrapped(text: str) -> str:
    """A hint: one line when piped; on a terminal, wrapped between words but never inside
    a quoted command."""
    if not terminal():
        return text
    protected = re.sub(r"'[^']*'", lambda m: m.group(0).replace(" ", NBSP), text)
    lines = textwrap.wrap(protected, width=width(), break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines).replace(NBSP, " ")


@dataclass(frozen=True)
class Reporter:
    """Turns runner events into short lines on stderr and, with --events, JSON lines.

    Picklable, so worker processes of 'all up' and multi-target runs report the same way.
    Each JSON line is one write to a file opened for appending: lines from several
    processes never interleave.
    """

    events: str | None = None
    quiet: bool = False
    scrub: Scrubber = field(default_factory=Scrubber)

    def __call__(self, event: Event) -> None:
        if not self.quiet:
            line = describe(event)
            if line:
                err(line)
        if self.events:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            text = self.scrub(json.dumps({"ts": stamp, **event.to_dict()}, default=str)) + "\n"
            if self.events == "-":
                sys.stderr.write(text)
            else:
                files.append(Path(self.events), text)


def describe(event: Event) -> str | None:
    """The human line for an event, if it deserves one."""
    svc = event.service or ""
    at = f"{svc} [{event.target}]" if event.target else svc
    match event:
        case ev.LockWait():
            return (
                f"{svc}: waiting up to {event.wait_s:g}s for the migration lock held by pid "
                f"{event.holder_pid}"
            )
        case ev.DbWait():
            return (
                f"{svc}: waiting up to {event.wait_s:g}s for the database at {event.target} "
                "to accept connections"
            )
        case ev.Notice():
            return f"{at}: {event.message}"
        case ev.Applied():
            return f"{at}: applied version {event.version} ({event.duration_ms} ms)"
        case ev.RolledBack(batch=True):
            return f"{at}: version {event.version} rolled back with its batch (--atomic)"
        case ev.RolledBack():
            return f"{at}: rolled back version {event.version} ({event.duration_ms} ms)"
        case ev.Adopted():
            return f"{at}: adopted legacy history {event.versions} from schema_migrations"
        case ev.Backfill():  # a line per report, readable in a log (the bar is the fleet's)
            eta = f", ETA {event.eta_s:g}s" if event.eta_s is not None else ""
            return (
                f"{at}: backfill {event.table} {event.fraction:.0%}: {event.rows_done:,} rows, "
                f"{event.rows_per_s:,} rows/s{eta}"
            )
        case ev.AcceptedChanged():
            return (
                f"{at}: accepted the changed SQL of version(s) {spans(event.versions)} as it is now"
            )
        case ev.ReleaseWait():
            return f"{at}: waiting up to {event.wait_s:g}s: {event.why}"
        case ev.Unannounced():
            return (
                f"{at}: contract step {event.version} runs beside session(s) that "
                f"announce no release: {event.listed}"
            )
        case ev.Backup():
            return f"{at}: backup {event.path} ({event.seconds:g}s)"
        case ev.Terminating():
            listed = "; ".join(event.sessions) or "the pooler's server connections"
            return f"{at}: terminating {listed}"
        case ev.PooledClients():
            return (
                f"{at}: their server connections ended, these clients stay connected to "
                f"their pooler and reconnect through it: {'; '.join(event.sessions)}"
            )
        case ev.Rollback():
            how = "their downgrades" if event.path == "downgrade" else f"restoring {event.backup}"
            return f"{at}: --on-failure rollback by {how}"
        case ev.LockRetry():
            return (
                f"{at}: version {event.version} hit lock_timeout; retry {event.attempt} "
                f"in {event.delay_s:g}s"
            )
    return None


# --- one database's run and status ----------------------------------------------------------


def held_hint(result: RunResult) -> str:
    return f"; {result.why_held}" if result.held and result.why_held else ""


def show_result(result: RunResult, json_output: bool) -> None:
    """What one ``up`` or ``down`` did, in a line (or its JSON)."""
    if json_output:
        print_json(result.to_dict())
        return
    name, held = result.service, held_hint(result)
    if result.noop:
        out(wrapped(f"{name}: at version {result.after}; nothing to do{held}"))
        return
    if result.adopted and not result.steps:
        out(
            wrapped(
                f"{name}: adopted the legacy history {result.adopted}; at version {result.after}{held}"
            )
        )
        return
    verb = "applied" if result.action == "up" else "rolled back"
    steps = ", ".join(map(str, result.steps)) or "nothing"
    before, after = (v if v is not None else "empty" for v in (result.before, result.after))
    if result.backup:
        out(wrapped(f"{name}: backup {result.backup}"))
    out(wrapped(f"{name}: {before} -> {after} ({verb} {steps}){held}"))


def show_status(report: Status) -> None:
    """One database's status as the table ``status`` prints."""
    from alembic_common.online import releases

    current = report.current if report.current is not None else "-"
    out(f"database: {report.database}")
    out(f"{report.service}: version {current} of {report.head}")
    rows = []
    for m in report.migrations:
        state = "applied" if m.applied else "pending"
        if m.part_way:
            state = "part-way"
        elif m.version in report.held:
            first = report.held[0]
            state = "held (contract)" if m.version == first else f"waits for {first}"
        applied_at = m.applied_at[:19].replace("T", " ") if m.applied_at else "-"
        rows.append((m.version, state, applied_at, m.description))
    out(table(("version", "state", "applied at", "description"), rows, right=(0,)))
    if report.in_progress:
        out(wrapped(f"PART-WAY: {report.in_progress.describe()}"))
    if report.why_held:
        out(wrapped(f"HELD: {report.why_held}"))
    if report.unannounced:
        out(
            wrapped(
                f"note: {len(report.unannounced)} session(s) announce no release (listed, not "
                f"counted for contract steps): {releases.describe(report.unannounced)}"
            )
        )
    if report.legacy:
        out(
            wrapped(
                "note: made by the previous migration system (no alembic_version); 'up' will adopt it"
            )
        )
    if report.renamed:
        out(
            wrapped(
                f"note: the recorded description of version(s) {spans(report.renamed)} differs from the "
                "code's docstring"
            )
        )
    if report.changed:
        out(
            wrapped(
                f"CHANGED: the SQL of version(s) {spans(report.changed)} is not what ran when they were "
                "applied; 'up' refuses to build on them until reviewed ('up --accept-changed')"
            )
        )
    if report.unverified:
        out(
            wrapped(
                f"note: version(s) {spans(report.unverified)} were applied without a checksum "
                "(legacy, plain alembic, or an older release): unverified"
            )
        )
    for item in report.invalid:
        out(wrapped(f"HEALTH: {item}"))
    if report.unknown:
        out(f"AHEAD: the database has versions this code does not know: {spans(report.unknown)}")
    if report.problem:
        out(f"INCONSISTENT: {report.problem}")
