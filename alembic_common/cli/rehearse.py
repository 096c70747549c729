"""The ``rehearse`` command: the pending steps on a throwaway copy, measured, and back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from alembic_common.cli import options
from alembic_common.cli.connection import Connection
from alembic_common.cli.frame import app, service_of
from alembic_common.cli.options import (
    VERSION_PARSER,
    AcceptChanged,
    Atomic,
    Contract,
    Env,
    HoldContract,
    Json,
    LockTimeout,
    Retries,
    StatementTimeout,
    seconds,
    with_connection,
)
from alembic_common.cli.render import Reporter, err, md_cell, out, print_json, spans, table
from alembic_common.core import runner
from alembic_common.errors import UsageError


@app.command()
@with_connection
def rehearse(
    ctx: typer.Context,
    conn: Connection,
    version: Annotated[
        int | None,
        typer.Option(
            "--version", help="Rehearse up to and including this version.", parser=VERSION_PARSER
        ),
    ] = None,
    from_backup: Annotated[
        Path | None,
        typer.Option(
            "--from-backup",
            metavar="FILE",
            help="Make the copy from this backup (written by 'backup') instead of a fresh dump.",
        ),
    ] = None,
    max_lock_ms: Annotated[
        float,
        typer.Option(
            "--max-lock-ms",
            help="A step that holds a lock blocking reads or writes (SHARE or stronger) on an "
            "existing table longer than this makes the rehearsal fail (exit 1).",
            parser=seconds(unit="milliseconds"),
        ),
    ] = 1000.0,
    lock_timeout: LockTimeout = 5.0,
    statement_timeout: StatementTimeout = 0,
    retries: Retries = 3,
    atomic: Atomic = False,
    contract: Contract = False,
    hold_contract: HoldContract = False,
    accept_changed: AcceptChanged = False,
    env: Env = None,
    as_json: Json = False,
    markdown: Annotated[
        bool,
        typer.Option("--markdown", help="Print the report as Markdown, for a pull request."),
    ] = False,
) -> None:
    """Rehearse the pending steps on a throwaway copy of the database, and prove the way back.

    The copy is a new database on the same server, made from a fresh dump (or --from-backup);
    the database itself is only read. 'up' runs there what it would run now, measured step
    by step (time, locks and how long each was held, rows changed, table and index sizes);
    then 'down' goes back and every table's rows are compared with the copy before the run.
    The copy and the dump are removed at the end, also when interrupted. Exit 1 when a step
    failed, a lock was held longer than --max-lock-ms, or the way back lost or changed rows.
    """
    service = service_of(ctx)
    if as_json and markdown:
        raise UsageError("choose one output: --json or --markdown")
    if version is not None:
        runner.check_version(service, service.disk_versions(), version)
    if from_backup is not None and not from_backup.is_file():
        raise UsageError(f"--from-backup {from_backup}: no such backup file")
    run_options = runner.RunOptions(
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        retries=retries,
        atomic=atomic,
        contract=contract,
        hold_contract=hold_contract,
        accept_changed=accept_changed,
        environment=options.environment(env),
    )
    if contract and hold_contract:
        raise UsageError("--contract and --hold-contract contradict each other; give one")
    settings = conn.settings(service, say=err)
    from alembic_common.safety import rehearsal  # pg_dump and co.: only here

    found = rehearsal.rehearse(
        service,
        settings,
        version,
        run_options,
        from_backup=from_backup,
        max_lock_ms=max_lock_ms,
        progress=None if (as_json or markdown) else Reporter(None),
    )
    if as_json:
        print_json(found.to_dict())
    elif markdown:
        out(as_markdown(found))
    else:
        show(found)
    if not found.ok:
        first = found.problems[0]
        more = f" (and {len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
        err(f"migrate: error: rehearse: {first}{more}")
        raise typer.Exit(1)


def _bytes(n: int | None) -> str:
    from rich.filesize import decimal

    return "-" if n is None else decimal(n)


def _growth(size: Any) -> str:
    """How a table's size changed: heap and indexes."""

    def move(a: int | None, b: int | None) -> str:
        if a is None:
            return f"new {_bytes(b)}"
        if b is None:
            return "dropped"
        return f"{_bytes(a)} -> {_bytes(b)}"

    return (
        f"{size.table} {move(size.bytes_before, size.bytes_after)}, indexes "
        f"{move(size.index_bytes_before, size.index_bytes_after)}"
    )


def _cells(step: Any) -> tuple[str, str, str, str]:
    time = f"{step.seconds:.3f} s"
    if step.ok and not step.covers:  # --atomic: the batch's figures are on its last step
        return time, "(in the batch's figures)", "", ""
    lock = step.locks[0] if step.locks else None
    longest = f"{lock.mode} on {lock.table}: {lock.held_ms:,.0f} ms" if lock else "-"
    if len(step.covers) > 1:
        longest = f"versions {spans(step.covers)}, one transaction: {longest}"
    rows = ", ".join(f"{t} {n:,}" for t, n in step.rows_changed.items()) or "-"
    sizes = "; ".join(_growth(s) for s in step.sizes) or "-"
    return time, longest, rows, sizes


def _outcome(step: Any) -> str:
    return "ok" if step.ok else "FAILED"


def _headline(found: Any) -> str:
    if not found.steps and found.way_back is None:
        return f"{found.service}: nothing to rehearse on {found.target} (at {found.start})"
    versions = spans([s.version for s in found.steps])
    made = {"dump": "a fresh dump", "empty": "an empty database"}.get(found.source, found.source)
    return (
        f"{found.service}: rehearsed version(s) {versions} on a copy of {found.target} "
        f"(from {made}, {found.copy_seconds:.1f} s to copy)"
    )


def _way_back_line(found: Any) -> str | None:
    back = found.way_back
    if back is None:
        return None
    to = "no version" if back.to is None else f"version {back.to}"
    if back.error is not None:
        return f"way back: down to {to} failed: {back.error}"
    compared = [t for t in back.tables if t.compared]
    if back.ok:
        return f"way back: down to {to}; every table's rows as before ({len(compared)} compared)"
    return f"way back: down to {to}; rows differ (see the problems)"


def show(found: Any) -> None:
    out(_headline(found))
    if found.steps:
        rows = [(s.version, s.description, _outcome(s), *_cells(s)) for s in found.steps]
        out(
            table(
                (
                    "version",
                    "description",
                    "",
                    "time",
                    "top lock",
                    "rows changed",
                    "sizes",
                ),
                rows,
            )
        )
    line = _way_back_line(found)
    if line:
        out(line)
    if found.held:
        out(f"held: version(s) {spans(found.held)} ({found.why_held}); not rehearsed")
    for problem in found.problems:
        out(f"problem: {problem}")


def as_markdown(found: Any) -> str:
    lines = [f"### {md_cell(_headline(found))}", ""]
    if found.steps:
        lines += [
            "| version | description | outcome | time | top lock | rows changed | sizes |",
            "| ---: | --- | --- | ---: | --- | --- | --- |",
        ]
        for s in found.steps:
            cells = [str(s.version), s.description, _outcome(s), *_cells(s)]
            lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
        lines.append("")
    line = _way_back_line(found)
    if line:
        lines += [md_cell(line), ""]
    if found.held:
        lines += [md_cell(f"Held: version(s) {spans(found.held)} ({found.why_held})."), ""]
    if found.problems:
        lines += ["**Problems**", ""] + [f"- {md_cell(p)}" for p in found.problems] + [""]
    else:
        lines += ["No problems found.", ""]
    return "\n".join(lines)
