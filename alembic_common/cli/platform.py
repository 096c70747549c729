"""The platform commands: ``all up`` and ``all status``, every service in dependency order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from alembic_common import deps, fleet, runner, services
from alembic_common.cli.migrate import Pair, finish, run_fleet, write_metrics
from alembic_common.cli.options import Connection
from alembic_common.cli.render import Reporter, err, out, print_json, table
from alembic_common.errors import MigrationError, UsageError
from alembic_common.services import Service
from alembic_common.settings import Settings

ALL = "all"


def platform_targets(conn: Connection, known: dict[str, Service]) -> dict[str, Settings]:
    """Each service's own database; two services resolving to one database is refused."""
    targets = {name: conn.settings(service, say=err) for name, service in known.items()}
    seen: dict[tuple[str, int, str], str] = {}
    for name, target in targets.items():
        key = (target.host, target.port, target.database)
        if key in seen:
            raise UsageError(
                f"{seen[key]} and {name} both resolve to the database {target.label}: each service "
                f"needs its own (set {name.upper()}_DATABASE_URL; DATABASE_URL names one database)"
            )
        seen[key] = name
    return targets


def all_up(
    conn: Connection,
    options: runner.RunOptions,
    jobs: int,
    reporter: Reporter,
    metrics_file: Path | None,
    json_output: bool,
) -> None:
    """Every service to head, in dependency order, independent ones in parallel."""
    known = services.discover()
    targets = platform_targets(conn, known)
    pending = {}
    for name, service in known.items():
        report = runner.status(service, targets[name])
        pending[name] = report.pending
    started = time.time()
    reporter.emit(
        "run_started", action="up", service=ALL, targets=[t.label for t in targets.values()]
    )
    segments = deps.segments(known, pending)
    jobs_list = [
        fleet.Job(seg.service, targets[seg.service], seg.target, frozenset(seg.after))
        for seg in segments
    ]
    done = run_fleet(
        jobs_list, fleet.up_work, jobs, reporter, stop_on_failure=True, options=options
    )
    per_service = {name: [o for _, o in done if o.service == name] for name in known}
    pairs: list[Pair] = [
        (targets[name], fleet.merge(name, targets[name], found, known[name].head))
        for name, found in per_service.items()
    ]
    finish(reporter, "up", pairs, started, metrics_file, json_output)


def platform_state(row: dict[str, Any]) -> str:
    """One service's state in words, worst first."""
    if row["unknown"]:
        return f"AHEAD {row['unknown']}"
    if row["problem"]:
        return str(row["problem"])
    if row["unmet"]:
        return "; ".join(row["unmet"])
    if set(row["pending"]) - set(row["held"]):
        return "behind"
    if row["held"]:
        return f"at head but contract {row['held']} held ('up --contract')"
    return "at head"


def all_status(conn: Connection, metrics_file: Path | None, json_output: bool) -> None:
    """One table for the whole platform: versions, pending work and unmet requirements."""
    known = services.discover()
    deps.graph(known)  # declared dependencies are valid and acyclic
    targets = platform_targets(conn, known)
    rows = []
    pairs: list[Pair] = []
    for name, service in known.items():
        try:
            report = runner.status(service, targets[name])
        except MigrationError as exc:
            rows.append(
                {"service": name, "database": targets[name].display, "error": str(exc), "ok": False}
            )
            continue
        pairs.append((targets[name], fleet.Outcome(name, targets[name].display, "ok", report)))
        runnable = [v for v in report.pending if v not in report.held]
        waiting = [
            str(u) for u in deps.unmet(service, runnable, lambda other: targets[other], known)
        ]
        rows.append(
            {
                "service": name,
                "database": report.database,
                "current": report.current,
                "head": report.head,
                "pending": report.pending,
                "unknown": report.unknown,
                "problem": report.problem,
                "legacy": report.legacy,
                "unmet": waiting,
                "held": report.held,
                "ok": report.ok and not report.behind and not waiting,
            }
        )
    if metrics_file is not None:
        write_metrics(metrics_file, pairs, run=False)
    if json_output:
        print_json({"ok": all(r["ok"] for r in rows), "services": rows})
    else:
        lines = []
        for r in rows:
            if "error" in r:
                lines.append((r["service"], "-", "-", "-", r["error"]))
                continue
            current = "-" if r["current"] is None else r["current"]
            lines.append((r["service"], current, r["head"], r["pending"] or "-", platform_state(r)))
        out("platform")
        out(table(("service", "current", "head", "pending", "state"), lines))
    if not all(r["ok"] for r in rows):
        raise typer.Exit(1)
