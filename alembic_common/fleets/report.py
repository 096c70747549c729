"""The platform as one HTML page: ``migrate all report --out FILE.html``.

Everything on it is what the other commands already read: each service's status, held
contract steps and who holds them (as ``all status``), its history (``schema_migrations``),
the pending plan with each statement's lock (``plan``) and lint findings (``lint``), and
its schema from the catalog: tables, columns and their types, primary and foreign keys,
never a row. Files given add a rehearsal per service (``rehearse --json``) and a fleet
run's summary (``up --targets-file F --json``); both are read defensively, a missing key
being shown as absent.

The page runs no script and fetches nothing: CSS and SVG are inline, the diagrams are laid
out by Graphviz's ``dot`` and its SVG keeps only drawing elements (no link, no reference).
Every value passes Jinja's autoescape; a database is named by its settings' label, never
its URL. Nothing here prints or exits: errors are ``MigrationError``.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from markupsafe import Markup
from psycopg import sql

from alembic_common.core import db, deps, runner
from alembic_common.core.history import OWN_TABLES, TABLE, qualified, regclass_name
from alembic_common.core.project import Project
from alembic_common.core.services import Service
from alembic_common.core.settings import Settings
from alembic_common.core.urls import mask
from alembic_common.errors import ConnectError, MigrationError, UsageError
from alembic_common.online import partial

TEMPLATE = "report.html"
SHOWN_SQL = 400  # characters of a statement on the page
LABELS = 60  # characters of a state in a diagram's node
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


# --- what the page shows -------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    primary: bool


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: list[Column]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str  # schema.table
    columns: list[str]
    target: str
    target_columns: list[str]


@dataclass(frozen=True)
class Applied:
    """One ``schema_migrations`` row as the timeline shows it."""

    version: int
    description: str
    applied_at: datetime | None
    duration_ms: int | None  # as the history recorded it (None: an older or legacy row)
    since_previous: float | None  # seconds since the previous version was applied


@dataclass(frozen=True)
class Requirement:
    """A version of ``service`` that declares it needs ``other`` at ``needed``."""

    service: str
    version: int
    other: str
    needed: int
    # "applied" (the version is), "held" (a held contract step), "met" or "unmet" (a pending
    # step; unmet: it waits), "unchecked" (the other database could not be read), "unknown"
    # (this service's database could not be read)
    state: str


@dataclass
class ServiceReport:
    name: str
    label: str  # host:port/database: never the URL
    status: runner.Status | None = None
    error: str | None = None
    unreachable: bool = False
    history: list[Applied] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    erd: Markup | None = None
    plan: Any = None  # offline.SqlPlan: every pending version, held ones included
    plan_error: str | None = None
    findings: list[Any] = field(default_factory=list)  # lint.Finding
    lint_error: str | None = None
    rehearsal: dict[str, Any] | None = None
    timeline: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """Where it stands, in a few words."""
        if self.status is None:
            return "unreachable" if self.unreachable else "unreadable"
        s = self.status
        if s.unknown:
            return f"ahead ({', '.join(map(str, s.unknown))})"
        if s.problem:
            return "inconsistent"
        if s.in_progress:
            return "part-way"
        if s.behind:
            return "behind"
        return "at head, contract held" if s.held else "at head"


@dataclass
class Report:
    generated: datetime
    services: list[ServiceReport]
    requirements: list[Requirement]
    platform: Markup
    fleet: dict[str, Any] | None = None
    other_rehearsals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unreachable(self) -> list[str]:
        """Services whose database could not be read (the page says why)."""
        return [s.name for s in self.services if s.status is None]


# --- input files ---------------------------------------------------------------------------


def read_json(path: Path, option: str) -> dict[str, Any]:
    """A JSON object from a file the user named; anything else is a usage error."""
    if path.exists() and not path.is_file():
        raise UsageError(f"{option} {path} is not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{option} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"{option} {path}: cannot be read ({why})") from None
    try:
        found = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{option} {path} is not JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(found, dict):
        raise UsageError(f"{option} {path} is not a JSON object")
    return found


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _objects(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _no_urls(text: str | None) -> str | None:
    """A text from a file with any URL in it cut out (they may carry a password), and any
    password a conninfo in it names masked."""
    return None if text is None else mask(_URL.sub("***", text))


def rehearsal(found: dict[str, Any]) -> dict[str, Any]:
    """A ``rehearse --json`` report, each value checked for its type (None: absent)."""
    steps: list[dict[str, Any]] = []
    for step in _objects(found.get("steps")):
        locks = [
            {
                "table": _text(lock.get("table")),
                "mode": _text(lock.get("mode")),
                "held_ms": _number(lock.get("held_ms")),
            }
            for lock in _objects(step.get("locks"))
        ]
        changed = step.get("rows_changed")
        rows = (
            {str(k): _number(v) for k, v in changed.items()} if isinstance(changed, dict) else None
        )
        sizes = [
            {
                key: (_text(size.get(key)) if key == "table" else _number(size.get(key)))
                for key in (
                    "table",
                    "bytes_before",
                    "bytes_after",
                    "index_bytes_before",
                    "index_bytes_after",
                )
            }
            for size in _objects(step.get("sizes"))
        ]
        held = [lock["held_ms"] for lock in locks if lock["held_ms"] is not None]
        steps.append(
            {
                "version": _number(step.get("version")),
                "description": _text(step.get("description")),
                "ok": _flag(step.get("ok")),
                "seconds": _number(step.get("seconds")),
                "error": _no_urls(_text(step.get("error"))),
                "locks": locks,
                "longest_lock_ms": max(held) if held else None,
                "rows_changed": rows,
                "sizes": sizes,
            }
        )
    longest = max((s["seconds"] or 0.0 for s in steps), default=0.0)
    for step in steps:
        step["share"] = (step["seconds"] or 0.0) / longest * 100 if longest else 0.0
    back = found.get("way_back")
    way_back = None
    if isinstance(back, dict):
        way_back = {
            "ok": _flag(back.get("ok")),
            "error": _no_urls(_text(back.get("error"))),
            "tables": [
                {
                    "table": _text(t.get("table")),
                    **{
                        k: _number(t.get(k)) for k in ("rows_before", "rows_after", "lost", "added")
                    },
                }
                for t in _objects(back.get("tables"))
            ],
        }
    problems = found.get("problems")
    return {
        "service": _text(found.get("service")),
        "target": _no_urls(_text(found.get("target"))),
        "ok": _flag(found.get("ok")),
        "start": _number(found.get("start")),
        "end": _number(found.get("end")),
        "copy_seconds": _number(found.get("copy_seconds")),
        "max_lock_ms": _number(found.get("max_lock_ms")),
        "steps": steps,
        "way_back": way_back,
        "problems": (
            [_no_urls(p) for p in problems if isinstance(p, str)]
            if isinstance(problems, list)
            else None
        ),
    }


def fleet_summary(found: dict[str, Any]) -> dict[str, Any]:
    """A fleet ``--json`` report (``up`` or ``status`` over a targets file): its counts and
    each target's outcome; a failed command's JSON (``error``) says why it failed."""
    counts = found.get("summary")
    targets = []
    for t in _objects(found.get("targets")):
        result: dict[str, Any] = t["result"] if isinstance(t.get("result"), dict) else {}
        at = result.get("after", result.get("current"))
        targets.append(
            {
                "target": _no_urls(_text(t.get("target"))),
                "service": _text(t.get("service")),
                "outcome": _text(t.get("outcome")),
                "version": _number(at),
                "seconds": _number(t.get("seconds")),
                "error": _no_urls(_text(t.get("error"))),
            }
        )
    failure = found.get("error")
    return {
        "action": _text(found.get("action")),
        "service": _text(found.get("service")),
        "ok": _flag(found.get("ok")),
        "summary": (
            {str(k): _number(v) for k, v in counts.items()} if isinstance(counts, dict) else None
        ),
        "targets": targets,
        "error": _no_urls(_text(failure.get("message"))) if isinstance(failure, dict) else None,
    }


# --- reading the databases -----------------------------------------------------------------

_COLUMNS = """
SELECT n.nspname::text, c.relname::text, a.attname::text,
       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       coalesce(a.attnum = ANY (pk.conkey), false)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
ORDER BY 1, 2, a.attnum
"""

_FOREIGN_KEYS = """
SELECT con.conname::text, sn.nspname::text, s.relname::text, tn.nspname::text, t.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
             ORDER BY k.i),
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
             ORDER BY k.i)
FROM pg_catalog.pg_constraint con
JOIN pg_catalog.pg_class s ON s.oid = con.conrelid
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_catalog.pg_class t ON t.oid = con.confrelid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0
ORDER BY 2, 3, 1
"""


def own_tables(service: Service) -> set[str]:
    """The toolkit's bookkeeping tables (schema.table), which the diagram leaves out."""
    return {f"{service.schema}.{name}" for name in (*OWN_TABLES, partial.TABLE)}


def read_catalog(
    conn: psycopg.Connection[Any], leave_out: set[str]
) -> tuple[list[Table], list[ForeignKey]]:
    """Every table (ordinary or partitioned, not a partition) outside the system schemas,
    its columns with their types and primary key, and the foreign keys between them."""
    tables: dict[str, Table] = {}
    for schema, name, column, kind, not_null, primary in conn.execute(_COLUMNS):
        key = f"{schema}.{name}"
        if key in leave_out:
            continue
        table = tables.setdefault(key, Table(schema, name, []))
        if column is not None:
            table.columns.append(Column(column, kind, bool(not_null), bool(primary)))
    keys = [
        ForeignKey(name, f"{sn}.{sr}", list(cols), f"{tn}.{tr}", list(target_cols))
        for name, sn, sr, tn, tr, cols, target_cols in conn.execute(_FOREIGN_KEYS)
        if f"{sn}.{sr}" in tables and f"{tn}.{tr}" in tables
    ]
    return list(tables.values()), keys


def read_history(conn: psycopg.Connection[Any], schema: str) -> list[Applied]:
    """The history's rows, oldest version first, with what each recorded of its duration."""
    found = conn.execute(
        "SELECT pg_catalog.to_regclass(%s) IS NOT NULL,"
        " EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid ="
        " pg_catalog.to_regclass(%s) AND attname = 'duration_ms' AND NOT attisdropped)",
        [regclass_name(schema, TABLE)] * 2,
    ).fetchone()
    if found is None or not found[0]:
        return []
    duration = sql.SQL("duration_ms" if found[1] else "NULL::integer")
    query = sql.SQL("SELECT version, description, applied_at, {} FROM {} ORDER BY version").format(
        duration, qualified(schema, TABLE)
    )
    rows: list[Applied] = []
    previous: datetime | None = None
    for version, description, applied_at, ms in conn.execute(query):
        gap = (
            (applied_at - previous).total_seconds()
            if applied_at is not None and previous is not None
            else None
        )
        rows.append(Applied(version, description or "", applied_at, ms, gap))
        previous = applied_at if applied_at is not None else previous
    return rows


def _read_database(report: ServiceReport, service: Service, settings: Settings) -> None:
    """The history and the catalog, in one read-only snapshot."""
    with db.connect(settings) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            report.history = read_history(conn, service.schema)
            report.tables, report.foreign_keys = read_catalog(conn, own_tables(service))
        finally:
            conn.execute("COMMIT")


def _plan_and_lint(report: ServiceReport, service: Service, settings: Settings) -> None:
    """The pending plan with every statement's lock and row estimate, and lint's findings
    (each a note on the page when it cannot be made: squawk missing, a script error)."""
    from alembic_common.authoring import lint, offline
    from alembic_common.authoring import revisions as authoring

    status = report.status
    if status is None or not status.pending or not status.ok:
        return
    try:
        plan = offline.review(service, status.current, contract=True)
        estimates = authoring.table_estimates(settings, offline.tables_named(plan))
        for vp in plan.versions:
            for st in vp.statements:
                st.rows = estimates.get(st.table) if st.table else None
        report.plan = plan
    except MigrationError as exc:
        report.plan_error = str(exc)
    try:
        report.findings = lint.lint(service, status.pending)
    except MigrationError as exc:
        report.lint_error = str(exc)


def requirements(project: Project, reports: Mapping[str, ServiceReport]) -> list[Requirement]:
    """Every declared ``requires``, and whether a pending step now waits for it: read from
    the statuses already taken (an unreachable peer leaves it unchecked, never fails)."""
    deps.graph(project.services)  # declarations are valid and acyclic
    applied = {
        name: set(r.status.found.applied)
        for name, r in reports.items()
        if r.status is not None and r.status.ok
    }
    found = []
    for name, service in project.services.items():
        status = reports[name].status
        usable = status is not None and status.ok
        for m in service.migrations:
            for other, needed in sorted(m.requires.items()):
                if status is None or not usable:
                    state = "unknown"
                elif m.version in status.found.applied:
                    state = "applied"
                elif m.version in status.held:
                    state = "held"
                elif other not in applied:
                    state = "unchecked"
                else:
                    state = "met" if needed in applied[other] else "unmet"
                found.append(Requirement(name, m.version, other, needed, state))
    return found


# --- diagrams ------------------------------------------------------------------------------


def dot_binary() -> str:
    """Graphviz's ``dot``, which lays out every diagram of the page."""
    found = shutil.which("dot")
    if found is None:
        raise MigrationError(
            "Graphviz is not installed (no 'dot' on PATH): install it, e.g. "
            "'apt-get install graphviz' on Debian or Ubuntu"
        )
    return found


_DRAWING = {
    "svg",
    "g",
    "title",
    "polygon",
    "polyline",
    "path",
    "ellipse",
    "circle",
    "line",
    "rect",
    "text",
    "tspan",
}


def clean_svg(data: bytes) -> Markup:
    """Only drawing elements and plain attributes of dot's SVG: no link (``<a>`` is
    unwrapped), no ``href``, no event handler, no ``url(...)``, no XML declaration."""
    root = ET.fromstring(data)

    def local(name: str) -> str:
        return name.rsplit("}", 1)[-1]

    def clean(element: ET.Element) -> list[ET.Element]:
        """The element cleaned, or what replaces it (an ``<a>``'s children; nothing)."""
        kept: list[ET.Element] = []
        for child in list(element):
            element.remove(child)
            kept.extend(clean(child))
        tag = local(element.tag) if isinstance(element.tag, str) else ""
        if tag not in _DRAWING:
            return kept if tag == "a" else []
        element.tag = tag
        for name, value in list(element.attrib.items()):
            plain = local(name)
            if (
                name.startswith("{")
                or plain.lower().startswith("on")
                or plain.lower() in ("href", "src", "style")
                or "url(" in value.lower()
                or "javascript:" in value.lower()
            ):
                del element.attrib[name]
        element.extend(kept)
        return [element]

    cleaned = clean(root)
    if len(cleaned) != 1:
        raise MigrationError("Graphviz's dot wrote no SVG drawing")
    return Markup(ET.tostring(cleaned[0], encoding="unicode"))


def layout(source: str, dot: str) -> Markup:
    """Lay out a DOT graph as SVG, cleaned for the page."""
    try:
        done = subprocess.run(
            [dot, "-Tsvg"], input=source.encode("utf-8"), capture_output=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MigrationError(f"Graphviz's dot could not run: {exc}") from None
    if done.returncode != 0:
        line = done.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        raise MigrationError(f"Graphviz's dot failed: {line[0] if line else done.returncode}")
    return clean_svg(done.stdout)


def _h(text: object) -> str:
    """Text for a DOT HTML-like label (dot writes it escaped into the SVG)."""
    return html.escape(" ".join(str(text).split()), quote=True)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


_FONT = 'fontname="Helvetica,Arial,sans-serif"'


def platform_dot(reports: list[ServiceReport], reqs: list[Requirement]) -> str:
    """The services as nodes (version, pending steps, held contract steps and who holds
    them) and their ``requires`` as edges, red where a pending step waits."""
    ids = {r.name: f"s{i}" for i, r in enumerate(reports)}
    lines = [
        "digraph platform {",
        f"rankdir=LR; bgcolor=transparent; node [shape=plaintext {_FONT}]; edge [{_FONT} fontsize=10];",
    ]
    for r in reports:
        s = r.status
        colour = "#c62828" if s is None or not s.ok else "#2e7d32" if not s.behind else "#ef6c00"
        rows = [
            f'<TR><TD BGCOLOR="{colour}"><FONT COLOR="white"><B>{_h(r.name)}</B></FONT></TD></TR>'
        ]
        if s is None:
            rows.append(f"<TR><TD>{_h(r.state)}</TD></TR>")
        else:
            current = "none" if s.current is None else s.current
            rows.append(f"<TR><TD>version {_h(current)} of {_h(s.head)}</TD></TR>")
            rows.append(f"<TR><TD>{len(s.pending)} pending</TD></TR>")
            rows.append(f"<TR><TD>{_h(_cut(r.state, LABELS))}</TD></TR>")
            if s.held:
                who = ", ".join(
                    f"{h.application_name or 'no name'} (pid {h.pid})" for h in s.holders[:3]
                )
                more = f" and {len(s.holders) - 3} more" if len(s.holders) > 3 else ""
                held = f"contract {s.held[0]} held" + (f" by {who}{more}" if who else "")
                rows.append(f"<TR><TD>{_h(_cut(held, LABELS * 2))}</TD></TR>")
        table = "".join(rows)
        lines.append(
            f'{ids[r.name]} [label=<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" '
            f'CELLPADDING="4" COLOR="{colour}">{table}</TABLE>>];'
        )
    pairs: dict[tuple[str, str], list[Requirement]] = {}
    for q in reqs:
        pairs.setdefault((q.service, q.other), []).append(q)
    for (service, other), found in pairs.items():
        states = {q.state for q in found}
        colour, style = (
            ("#c62828", "bold")
            if "unmet" in states
            else ("#ef6c00", "dashed")
            if "unchecked" in states
            else ("#555555", "solid")
        )
        label = "<BR/>".join(
            _h(f"{q.service} {q.version} needs {q.other} {q.needed}") for q in found
        )
        lines.append(
            f'{ids[service]} -> {ids[other]} [label=<{label}> color="{colour}" '
            f'fontcolor="{colour}" style={style}];'
        )
    lines.append("}")
    return "\n".join(lines)


def erd_dot(tables: list[Table], keys: list[ForeignKey]) -> str:
    """Each table as a box of its columns and types (the primary key's marked), each
    foreign key as an edge from its columns to the columns it references."""
    ids = {t.qualified: f"t{i}" for i, t in enumerate(tables)}
    ports = {(t.qualified, c.name): f"c{j}" for t in tables for j, c in enumerate(t.columns)}
    lines = [
        "digraph erd {",
        f"rankdir=LR; bgcolor=transparent; node [shape=plaintext {_FONT} fontsize=11]; "
        f'edge [color="#1565c0" arrowhead=crow arrowtail=none {_FONT} fontsize=9];',
    ]
    for t in tables:
        rows = [
            f'<TR><TD COLSPAN="2" BGCOLOR="#37474f"><FONT COLOR="white"><B>{_h(t.qualified)}</B>'
            "</FONT></TD></TR>"
        ]
        for c in t.columns:
            name = f"<B>{_h(c.name)}</B> (PK)" if c.primary else _h(c.name)
            kind = _h(c.type) + ("" if c.not_null or c.primary else " (null)")
            port = ports[(t.qualified, c.name)]
            rows.append(
                f'<TR><TD ALIGN="LEFT" PORT="{port}">{name}</TD>'
                f'<TD ALIGN="LEFT"><FONT COLOR="#555555">{kind}</FONT></TD></TR>'
            )
        if not t.columns:
            rows.append('<TR><TD COLSPAN="2">(no columns)</TD></TR>')
        lines.append(
            f'{ids[t.qualified]} [label=<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" '
            f'CELLPADDING="3">{"".join(rows)}</TABLE>>];'
        )
    for k in keys:
        source = ports.get((k.table, k.columns[0])) if k.columns else None
        target = ports.get((k.target, k.target_columns[0])) if k.target_columns else None
        tail = f"{ids[k.table]}:{source}" if source else ids[k.table]
        head = f"{ids[k.target]}:{target}" if target else ids[k.target]
        lines.append(f'{tail} -> {head} [tooltip="{_h(k.name)}"];')
    lines.append("}")
    return "\n".join(lines)


# --- the timeline ---------------------------------------------------------------------------

WIDTH, LEFT, RIGHT = 960, 50, 20


def timeline(history: list[Applied]) -> dict[str, Any]:
    """Where each apply falls in time (x, oldest left), and how long each one took as the
    history recorded it (a bar per version, tallest the longest)."""
    when = [a for a in history if a.applied_at is not None]
    span = WIDTH - LEFT - RIGHT
    marks = []
    if when:
        first = min(a.applied_at for a in when if a.applied_at is not None)
        last = max(a.applied_at for a in when if a.applied_at is not None)
        total = (last - first).total_seconds()
        step = max(1, len(when) // 25)  # a label on at most about 25 marks
        for i, a in enumerate(when):
            assert a.applied_at is not None
            at = (a.applied_at - first).total_seconds()
            x = LEFT + (at / total * span if total > 0 else i / max(1, len(when) - 1) * span)
            marks.append({"x": round(x, 1), "version": a.version, "label": i % step == 0, "at": a})
    timed = [a for a in history if a.duration_ms is not None]
    longest = max((a.duration_ms or 0 for a in timed), default=0)
    bars = []
    if timed:
        width = span / len(timed)
        for i, a in enumerate(timed):
            height = (a.duration_ms or 0) / longest * 50 if longest else 0
            bars.append(
                {
                    "x": round(LEFT + i * width, 1),
                    "width": round(max(width - 1, 0.5), 1),
                    "height": round(max(height, 0.5), 1),
                    "at": a,
                }
            )
    return {"marks": marks, "bars": bars, "longest_ms": longest, "width": WIDTH, "left": LEFT}


# --- the page ------------------------------------------------------------------------------


def gather(
    project: Project,
    where: Mapping[str, Settings],
    *,
    rehearsals: list[dict[str, Any]] | None = None,
    fleet: dict[str, Any] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Report:
    """Read every service's database and lay out the diagrams (one unreachable database
    is a page that says so, not an error)."""
    dot = dot_binary()
    by_service: dict[str, dict[str, Any]] = {}
    others: list[dict[str, Any]] = []
    for found in rehearsals or []:
        read = rehearsal(found)
        name = read["service"]
        if name in project.services:
            if name in by_service:
                raise UsageError(f"--rehearsal: two files for the {name} service; give one each")
            by_service[name] = read
        else:
            others.append(read)
    reports: dict[str, ServiceReport] = {}
    for name, service in project.services.items():
        settings = where[name]
        r = ServiceReport(name, settings.label, rehearsal=by_service.get(name))
        reports[name] = r
        try:
            r.status = runner.status(service, settings)
            _read_database(r, service, settings)
        except ConnectError as exc:
            r.status, r.error, r.unreachable = None, str(exc), True
            continue
        except MigrationError as exc:
            r.status, r.error = None, str(exc)
            continue
        _plan_and_lint(r, service, settings)
        r.timeline = timeline(r.history)
        r.erd = layout(erd_dot(r.tables, r.foreign_keys), dot) if r.tables else None
    reqs = requirements(project, reports)
    shown = list(reports.values())
    return Report(
        now(),
        shown,
        reqs,
        layout(platform_dot(shown, reqs), dot),
        fleet_summary(fleet) if fleet is not None else None,
        others,
    )


def render(report: Report) -> str:
    """The page: the package's Jinja template with autoescape on."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("alembic_common.fleets", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["shown"] = _shown
    env.filters["sql"] = lambda text: _cut(" ".join(str(text).split()), SHOWN_SQL)
    env.filters["size"] = _size
    return env.get_template(TEMPLATE).render(report=report, shown_sql=SHOWN_SQL)


def _shown(value: Any, absent: str = "absent") -> str:
    """A value as the page shows it: absent when the file did not have it."""
    if value is None:
        return absent
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.3f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _size(value: float | None) -> str:
    """Bytes as rich writes them (powers of 1000: kB, MB), or that the file lacked them."""
    from rich.filesize import decimal

    return "absent" if value is None else decimal(int(value))
