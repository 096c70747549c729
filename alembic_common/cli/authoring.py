"""The authoring commands: ``revision``, ``check``, ``diff``, ``plan``, ``lint`` and ``hash``."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import typer

from alembic_common.cli.connection import Connection
from alembic_common.cli.frame import app, service_of
from alembic_common.cli.options import VERSION_PARSER, Json, with_connection
from alembic_common.cli.render import (
    ELLIPSIS,
    err,
    md_cell,
    out,
    print_json,
    spans,
    table,
    wrapped,
)
from alembic_common.core import runner
from alembic_common.errors import ScriptError, UsageError


@app.command()
@with_connection
def revision(
    ctx: typer.Context,
    conn: Connection,
    message: Annotated[str, typer.Option("--message", "-m", help="What the migration does.")],
    autogenerate: Annotated[
        bool, typer.Option("--autogenerate", help="Fill it in from the models' differences.")
    ] = False,
) -> None:
    """Write the next numbered migration file (e.g. 0006_add_patient_allergies.py)."""
    from alembic_common.authoring import revisions as authoring

    service = service_of(ctx)
    settings = conn.explicit(service, say=err) if autogenerate else None
    path = authoring.revision(service, message, autogenerate=autogenerate, settings=settings)
    out(str(path))


@app.command()
@with_connection
def check(ctx: typer.Context, conn: Connection, as_json: Json = False) -> None:
    """Exit 0 when a database at head matches the models (and, with --url, the migrations)."""
    from alembic_common.authoring import revisions as authoring

    service = service_of(ctx)
    result = authoring.compare(service, conn.explicit(service, say=err))
    if as_json:
        print_json(result.to_dict())
    else:
        show_comparison(result)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
@with_connection
def diff(ctx: typer.Context, conn: Connection, as_json: Json = False) -> None:
    """Print what would bring the database to match the models (and the migrations)."""
    from alembic_common.authoring import revisions as authoring

    service = service_of(ctx)
    result = authoring.compare(service, conn.explicit(service, say=err), operations=True)
    if as_json:
        print_json(result.to_dict())
    else:
        show_comparison(result, "-- ")
        if result.operations:
            out("-- Alembic operations to match the models (for a new migration, not run here):")
            out("\n".join(f"--   {line}" for line in result.operations.splitlines()))
        if result.schema_drift:
            out("-- SQL that makes the database what the migrations make, keeping every value:")
            out(result.repair.text().rstrip("\n"))
    if not result.ok:
        raise typer.Exit(1)  # drift remains until the script (or a migration) mends it


def show_comparison(result: Any, prefix: str = "") -> None:
    """What differs, a line each (``prefix``: '-- ' keeps diff's output a psql script)."""
    where = f"{result.service} ({result.database}, version {result.version}, head {result.head})"
    lines = [f"{where}: not at head; run 'up' first"] if result.version != result.head else []
    lines += [f"models vs database: {line}" for line in result.model_differences]
    lines += [f"migrations vs database: {d.describe()}" for d in result.schema_drift]
    if result.ok:
        lines.append(f"{where}: the database matches the models")
    for line in lines:
        out(prefix + line)


@app.command()
@with_connection
def plan(
    ctx: typer.Context,
    conn: Connection,
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            help="Plan up to (or with --down, back to) this version.",
            parser=VERSION_PARSER,
        ),
    ] = None,
    to_down: Annotated[
        bool, typer.Option("--down", help="Plan the rollback of --version and later.")
    ] = False,
    contract: Annotated[
        bool, typer.Option("--contract", help="Include contract steps, as 'up --contract' would.")
    ] = False,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print a plain SQL script instead of a table.")
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="[table|sql|json|markdown]",
            help="How to show the plan: a table (the default), a SQL script (as --sql), JSON "
            "(as --json) or Markdown, for a pull-request comment.",
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Also list the run's own statements (BEGIN, COMMIT, the version tables).",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Show the exact SQL that up (or down) would run, with each statement's lock. Changes nothing.

    The table shows each statement on one line, cut (whole with --sql or --json); the run's
    own bookkeeping statements only with --verbose."""
    from alembic_common.authoring import offline
    from alembic_common.authoring import revisions as authoring

    service = service_of(ctx)
    shape = _plan_format(fmt, sql, as_json)
    if version is not None:
        runner.check_version(service, service.disk_versions(), version)
    if to_down and version is None:
        raise UsageError(f"{service.name}: plan --down needs --version N", service=service.name)
    settings = conn.explicit(service, say=err)
    current, sessions = authoring.current_version(service, settings) if settings else (None, None)
    result = offline.review(
        service, current, version, down=to_down, contract=contract, sessions=sessions
    )
    if settings is not None:
        estimates = authoring.table_estimates(settings, offline.tables_named(result))
        for vp in result.versions:
            for st in vp.statements:
                st.rows = estimates.get(st.table) if st.table else None
    if shape == "json":
        print_json(result.to_dict())
    elif shape == "sql":
        typer.echo(result.sql(), nl=False)
    elif shape == "markdown":
        typer.echo(plan_markdown(result, verbose), nl=False)
    else:
        show_plan(result, verbose)


FORMATS = ("table", "sql", "json", "markdown")
SHOWN = 100  # characters of a statement in plan's table; --sql and --json show it whole
SHOWN_MARKDOWN = 400  # in a Markdown comment


def _plan_format(fmt: str | None, sql: bool, as_json: bool) -> str:
    """The one output shape asked for: --format, or its shorthands --sql and --json."""
    asked = {f for f, on in (("sql", sql), ("json", as_json)) if on}
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        asked.add(fmt)
    if len(asked) > 1:
        raise UsageError(f"choose one output: {' and '.join(sorted(asked))} were both asked for")
    return asked.pop() if asked else "table"


def _code(text: str) -> str:
    """A statement as inline code in a table cell, cut at SHOWN_MARKDOWN characters."""
    text = " ".join(text.split())
    text = text if len(text) <= SHOWN_MARKDOWN else text[: SHOWN_MARKDOWN - 1] + ELLIPSIS
    fence = "``" if "`" in text else "`"
    return f"{fence} {md_cell(text)} {fence}" if fence == "``" else f"`{md_cell(text)}`"


def plan_markdown(result: Any, verbose: bool) -> str:
    """The plan as Markdown for a pull-request comment: a heading, then a table of each
    version's statements with the lock each takes and the rows it may touch."""
    frm = "no version" if result.start is None else f"version {result.start}"
    to = "no version" if result.end is None else f"version {result.end}"
    lines = [f"### {md_cell(result.service)}: {result.direction} from {frm} to {to}", ""]
    note = result.held_note()
    tail = [f"_{md_cell(note)}._", ""] if note else []
    if not result.versions:
        return "\n".join([*lines, f"Nothing to {result.direction}.", "", *tail])
    hidden = 0
    for vp in result.versions:
        lines += [f"#### Version {vp.version}: {md_cell(vp.description)}", ""]
        lines += ["| lock | rows (est.) | statement |", "| --- | ---: | --- |"]
        for st in vp.statements:
            if st.bookkeeping and not verbose:
                hidden += 1
                continue
            lock = "-" if st.lock == "-" else md_cell(f"{st.lock} on {st.table}: {st.effect}")
            rows = "-" if st.rows is None else f"{st.rows:,}"
            lines.append(f"| {lock} | {rows} | {_code(st.sql)} |")
        lines.append("")
    if hidden:
        lines += [
            f"_{hidden} statements of the run's own bookkeeping not shown (`--verbose`)._",
            "",
        ]
    return "\n".join(lines + tail)


def show_plan(result: Any, verbose: bool) -> None:
    note = result.held_note()
    if not result.versions:
        out(f"{result.service}: nothing to {result.direction} (at {result.start})")
        if note:
            out(wrapped(note))
        return
    hidden = 0
    for vp in result.versions:
        out(wrapped(f"{result.service} {vp.direction} version {vp.version}: {vp.description}"))
        rows = []
        for st in vp.statements:
            if st.bookkeeping and not verbose:
                hidden += 1
                continue
            lock = "-" if st.lock == "-" else f"{st.lock} on {st.table}: {st.effect}"
            text = " ".join(st.sql.split())
            text = text if len(text) <= SHOWN else text[: SHOWN - 1] + ELLIPSIS
            rows.append((lock, "-" if st.rows is None else f"{st.rows:,}", text))
        out(table(("lock", "rows (est.)", "statement"), rows, right=(1,)))
        out()
    if hidden:
        out(
            wrapped(
                f"({hidden} statements of the run's own bookkeeping not shown: --verbose lists them)"
            )
        )
    if note:
        out(wrapped(note))


@app.command()
@with_connection
def lint(
    ctx: typer.Context,
    conn: Connection,
    all_versions: Annotated[
        bool, typer.Option("--all", help="Lint every migration, not only pending ones.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Run squawk over the SQL of pending (or all) migrations; exit 1 on unaccepted findings."""
    from alembic_common.authoring import lint as linting
    from alembic_common.authoring import revisions as authoring

    service = service_of(ctx)
    disk = service.disk_versions()
    settings = None if all_versions else conn.explicit(service, say=err)
    current = authoring.current_version(service, settings)[0] if settings else None
    versions = [v for v in disk if current is None or v > current]
    findings = linting.lint(service, versions)
    rejected = [f for f in findings if f.accepted is None]
    if as_json:
        print_json(
            {
                "service": service.name,
                "versions": versions,
                "findings": [f.__dict__ for f in findings],
                "ok": not rejected,
            }
        )
    else:
        # an accepted rule is said once per version, with how many statements it covers
        accepted = Counter((f.version, f.rule, f.accepted) for f in findings if f.accepted)
        for f in findings:
            first = " ".join(f.statement.split())[:100]
            if not f.accepted:
                out(f"{service.name} {f.version}: {f.rule}: {f.message}\n    {first}")
            elif (f.version, f.rule, f.accepted) in accepted:
                times = accepted.pop((f.version, f.rule, f.accepted))
                many = f" ({times} statements)" if times > 1 else ""
                out(f"{service.name} {f.version}: accepted {f.rule}{many}: {f.accepted}")
        verdict = "clean" if not rejected else f"{len(rejected)} finding(s) to fix or accept"
        out(f"{service.name}: linted versions {versions or 'none'}: {verdict}")
    if rejected:
        raise typer.Exit(1)


@app.command("hash")
def hash_(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the file is not current; write nothing.")
    ] = False,
) -> None:
    """Write the checksums of every version's SQL to migrations/checksums.txt, and the SQL
    of the steps that are plain SQL to migrations/plain.json (--check: verify both)."""
    from alembic_common.authoring import checksums, compile
    from alembic_common.core import sqlsteps

    service = service_of(ctx)
    current = checksums.compute(service)
    compiled = compile.compile_service(service)
    try:
        listed = {v: c for v, (c, _) in checksums.read(service).items()}
    except ScriptError:
        if check:
            raise
        listed = {}  # an unreadable file is what 'hash' is for
    if check:
        stale = sorted(
            v for v in current.keys() | listed.keys() if current.get(v) != listed.get(v)
        ) or [v for v in current if checksums.listed(service).get(v) != current[v]]
        if stale:
            out(
                f"{service.name}: checksums.txt is not current for version(s) "
                f"{spans(stale)}: run 'migrate {service.name} hash' and commit it"
            )
            raise typer.Exit(1)
        written = sqlsteps.path(service)
        have = written.read_text(encoding="utf-8") if written.is_file() else None
        if have != sqlsteps.render(service, compiled):
            out(
                f"{service.name}: {sqlsteps.FILE} is not current: run 'migrate "
                f"{service.name} hash' and commit it"
            )
            raise typer.Exit(1)
        out(
            f"{service.name}: checksums.txt and {sqlsteps.FILE} are current ({len(current)} "
            f"versions, {len(compiled)} of them plain SQL)"
        )
        return
    path = checksums.write(service, current)
    sqlsteps.write(service, compiled)
    changed = sorted(v for v in current if listed.get(v) != current[v])
    out(
        f"{path} ({len(current)} versions; updated {spans(changed) or 'none'}; "
        f"{len(compiled)} plain SQL in {sqlsteps.FILE})"
    )
