"""Run figures in Prometheus text format, for node_exporter's textfile collector
(written and read with prometheus_client).

The file is merged, never blindly rewritten: each writer updates the series it knows and
keeps the rest. ``status`` knows the versions (current, head, pending) but not how the
last run went, so it leaves ``migrate_last_run_*`` as the last run wrote them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic_common.safety import files

HELP = {
    "migrate_current_version": "Schema version the database is at (0: empty).",
    "migrate_head_version": "Newest schema version this code knows.",
    "migrate_pending_migrations": "Migrations known to the code and not applied.",
    "migrate_last_run_success": "1 if the last run against this database succeeded, else 0.",
    "migrate_last_run_duration_seconds": "Wall time of the last run against this database.",
    "migrate_last_run_timestamp_seconds": "Unix time the last run finished.",
}
# A fleet run's aggregate, per service: 10,000 label sets are too many for most set-ups.
FLEET_HELP = {
    "migrate_fleet_targets": "Targets of the last fleet run, by outcome.",
    "migrate_fleet_slowest_seconds": "Wall time of the slowest target of the last fleet run.",
    "migrate_fleet_duration_seconds": "Wall time of the last fleet run.",
    "migrate_fleet_timestamp_seconds": "Unix time the last fleet run finished.",
}
OUTCOMES = ("at head", "migrated", "held", "failed", "skipped")  # how a run left a target
COUNTED = (*OUTCOMES, "behind")  # a status also finds targets behind; 0 after a run

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]  # metric, its labels sorted by name (as the text format has them)


@dataclass(frozen=True)
class Sample:
    """What one writer knows of one service's database; None: not known, keep the old value."""

    service: str
    target: str  # host:port/database, never a URL with credentials
    current: int | None = None
    head: int | None = None
    pending: int | None = None
    success: bool | None = None
    seconds: float | None = None
    finished_at: float | None = None
    empty: bool = False  # read, and at no version: current is 0, not unknown

    def values(self) -> dict[str, float]:
        current = 0 if self.empty and self.current is None else self.current
        found = {
            "migrate_current_version": current,
            "migrate_head_version": self.head,
            "migrate_pending_migrations": self.pending,
            "migrate_last_run_success": None if self.success is None else int(self.success),
            "migrate_last_run_duration_seconds": None
            if self.seconds is None
            else round(self.seconds, 3),
            "migrate_last_run_timestamp_seconds": None
            if self.finished_at is None
            else round(self.finished_at, 3),
        }
        return {k: v for k, v in found.items() if v is not None}


def parse(text: str) -> dict[Key, float]:
    """The series of ours a file holds, read by prometheus_client's parser one line at a
    time (a line it cannot read, or of another metric, is dropped)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[Key, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        with contextlib.suppress(ValueError, IndexError):
            for family in text_string_to_metric_families(line + "\n"):
                for sample in family.samples:
                    if sample.name in HELP or sample.name in FLEET_HELP:
                        found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def render(series: dict[Key, float]) -> str:
    """The text format, written by prometheus_client: HELP and TYPE once per metric, one
    line per service and target."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    class Series(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            for name, text in (HELP | FLEET_HELP).items():
                rows = sorted((k, v) for k, v in series.items() if k[0] == name)
                if rows:
                    family = GaugeMetricFamily(name, text, labels=[k for k, _ in rows[0][0][1]])
                    for (_, labels), value in rows:
                        family.add_metric([v for _, v in labels], value)
                    yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Series())
    return generate_latest(registry).decode()


@dataclass(frozen=True)
class Fleet:
    """A fleet run's aggregate for one service: targets per outcome, and the slowest one."""

    service: str
    outcomes: dict[str, int]
    slowest: tuple[str, float] | None  # target label, seconds
    seconds: float
    finished_at: float

    def series(self) -> dict[Key, float]:
        service = (("service", self.service),)
        found: dict[Key, float] = {
            ("migrate_fleet_targets", (*service, ("outcome", o.replace(" ", "_")))): (
                self.outcomes.get(o, 0)
            )
            for o in COUNTED
        }
        if self.slowest is not None:
            target, seconds = self.slowest
            labels = (*service, ("target", target))
            found["migrate_fleet_slowest_seconds", labels] = round(seconds, 3)
        found["migrate_fleet_duration_seconds", service] = round(self.seconds, 3)
        found["migrate_fleet_timestamp_seconds", service] = round(self.finished_at, 3)
        return found


def merge(
    series: dict[Key, float],
    samples: list[Sample],
    fleets: Sequence[Fleet] = (),
) -> dict[Key, float]:
    """The file's series updated: a service's fleet series are replaced as a whole."""
    renewed = {f.service for f in fleets}
    merged = {
        k: v
        for k, v in series.items()
        if not (k[0] in FLEET_HELP and dict(k[1]).get("service") in renewed)
    }
    for sample in samples:
        labels = (("service", sample.service), ("target", sample.target))
        for name, value in sample.values().items():
            merged[name, labels] = value
    for fleet in fleets:
        merged |= {(name, tuple(sorted(labels))): v for (name, labels), v in fleet.series().items()}
    return merged


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise writers of one metrics file (read, merge and rename as one)."""
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write(
    path: Path,
    samples: list[Sample],
    scrub: Callable[[str], str] = str,
    fleets: list[Fleet] | None = None,
) -> None:
    """Merge ``samples`` into the file at ``path`` (created if missing), atomically."""
    with _locked(path):
        existing = ""
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                existing = path.read_text()
        files.write_whole(path, scrub(render(merge(parse(existing), samples, fleets or []))))
