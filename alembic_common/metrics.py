"""Run figures in Prometheus text exposition format, for node_exporter's textfile collector."""

from __future__ import annotations

from dataclasses import dataclass

_HELP = {
    "migrate_current_version": "Schema version the database is at (0: empty).",
    "migrate_head_version": "Newest schema version this code knows.",
    "migrate_pending_migrations": "Migrations known to the code and not applied.",
    "migrate_last_run_success": "1 if the last run against this database succeeded, else 0.",
    "migrate_last_run_duration_seconds": "Wall time of the last run against this database.",
    "migrate_last_run_timestamp_seconds": "Unix time the last run finished.",
}


@dataclass(frozen=True)
class Sample:
    """The figures of one service's database after a run."""

    service: str
    target: str  # host:port/database, never a URL with credentials
    current: int | None
    head: int | None
    pending: int | None
    success: bool
    seconds: float
    finished_at: float


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(samples: list[Sample]) -> str:
    """The textfile: HELP and TYPE once per metric, one line per service and target."""
    values = {
        "migrate_current_version": lambda s: s.current if s.current is not None else 0,
        "migrate_head_version": lambda s: s.head,
        "migrate_pending_migrations": lambda s: s.pending,
        "migrate_last_run_success": lambda s: int(s.success),
        "migrate_last_run_duration_seconds": lambda s: round(s.seconds, 3),
        "migrate_last_run_timestamp_seconds": lambda s: round(s.finished_at, 3),
    }
    lines = []
    for name, value in values.items():
        lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge"]
        for s in samples:
            v = value(s)
            if v is not None:
                labels = f'service="{_escape(s.service)}",target="{_escape(s.target)}"'
                lines.append(f"{name}{{{labels}}} {v}")
    return "\n".join(lines) + "\n"
