"""What a run reports while it works: one typed record per kind of event, all of them here.

The library hands these to a ``Progress`` callback and never prints them; the CLI turns
each into a line on stderr and, with ``--events``, into a JSON line (``to_dict``: the
``service`` and ``target`` it concerns, ``event`` its kind, then its fields). No record
holds a credential or a value from a row: targets are labels, sessions are described.

Records are made once and never changed (``tagged`` makes a copy) nor compared. Every start
of the command makes these classes, so they are plain dataclasses without a generated
``__eq__`` or ``__repr__`` (``Event.__repr__`` serves them all): frozen ones with their own
methods took 11 ms of a 230 ms no-op start, these take about 2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(kw_only=True, eq=False, repr=False)
class Event:
    """One thing a run reports; ``kind`` names it in the JSON lines."""

    kind: ClassVar[str]
    service: str | None = None
    target: str | None = None  # the database's label, never its URL

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        tags = {k: fields.pop(k) for k in ("service", "target")}
        return {**{k: v for k, v in tags.items() if v is not None}, "event": self.kind, **fields}

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({shown})"

    def tagged(self, service: str, target: str) -> Event:
        """This event, saying which service and target it concerns."""
        return dataclasses.replace(self, service=service, target=target)


Progress = Callable[[Event], None]


# --- a run of one target ----------------------------------------------------------------------


@dataclass(kw_only=True, eq=False, repr=False)
class DbWait(Event):
    """``--wait``: the database does not accept connections yet."""

    kind = "db_wait"
    wait_s: float


@dataclass(kw_only=True, eq=False, repr=False)
class LockWait(Event):
    """Another runner holds the service's migration lock."""

    kind = "lock_wait"
    holder_pid: int | None
    wait_s: float


@dataclass(kw_only=True, eq=False, repr=False)
class Applied(Event):
    """A step's upgrade committed."""

    kind = "applied"
    version: int
    duration_ms: int


@dataclass(kw_only=True, eq=False, repr=False)
class RolledBack(Event):
    """A step's downgrade committed, or (``batch``) an ``--atomic`` batch was rolled back."""

    kind = "rolled_back"
    version: int
    duration_ms: int
    batch: bool = False


@dataclass(kw_only=True, eq=False, repr=False)
class Adopted(Event):
    """A history made by the previous system, recorded for Alembic."""

    kind = "adopted"
    versions: list[int]


@dataclass(kw_only=True, eq=False, repr=False)
class AcceptedChanged(Event):
    """``up --accept-changed``: applied steps whose SQL changed, accepted as they are now."""

    kind = "accepted_changed"
    versions: list[int]


@dataclass(kw_only=True, eq=False, repr=False)
class PartWay(Event):
    """A step stopped part-way the other way, turned to go on in this run's direction."""

    kind = "part_way"
    version: int
    was: str
    now: str


@dataclass(kw_only=True, eq=False, repr=False)
class Backfill(Event):
    """How far a batched backfill is: rows so far, the share of the key range, its pace."""

    kind = "backfill"
    table: str
    name: str
    rows_done: int
    fraction: float
    rows_per_s: int
    eta_s: float | None
    resumed_from: int | None = None
    workers: int | None = None
    batch_keys: int | None = None


@dataclass(kw_only=True, eq=False, repr=False)
class Notice(Event):
    """A step's own ``RAISE NOTICE 'migrate: ...'``: what it skipped or kept."""

    kind = "notice"
    message: str


@dataclass(kw_only=True, eq=False, repr=False)
class LockRetry(Event):
    """A step hit ``lock_timeout`` and runs again after a pause."""

    kind = "lock_retry"
    version: int | None
    attempt: int
    delay_s: float


@dataclass(kw_only=True, eq=False, repr=False)
class Held(Event):
    """Contract steps held back, and why."""

    kind = "held"
    versions: list[int]
    why: str | None


@dataclass(kw_only=True, eq=False, repr=False)
class ReleaseWait(Event):
    """``up --wait``: waiting for the old release that holds a contract step back."""

    kind = "release_wait"
    version: int
    wait_s: float
    why: str | None


@dataclass(kw_only=True, eq=False, repr=False)
class Unannounced(Event):
    """A contract step about to run beside sessions that announce no release."""

    kind = "unannounced"
    version: int
    sessions: list[dict[str, Any]]
    listed: str


@dataclass(kw_only=True, eq=False, repr=False)
class Rollback(Event):
    """``--on-failure rollback``: this run's steps undone by their downgrades or a restore."""

    kind = "rollback"
    path: str  # "downgrade" or "restore"
    versions: list[int] | None = None
    backup: str | None = None


# --- backups ----------------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False, repr=False)
class Backup(Event):
    """A verified backup written."""

    kind = "backup"
    path: str
    version: int | None
    bytes: int
    seconds: float


@dataclass(kw_only=True, eq=False, repr=False)
class Terminating(Event):
    """A restore ends the sessions on the database (described, never their queries)."""

    kind = "terminating"
    sessions: list[str]


@dataclass(kw_only=True, eq=False, repr=False)
class PooledClients(Event):
    """Clients behind a pooler that stay connected to it through a restore."""

    kind = "pooled_clients"
    sessions: list[str]


@dataclass(kw_only=True, eq=False, repr=False)
class Restored(Event):
    """A backup restored."""

    kind = "restored"
    path: str
    version: int | None


# --- a command's run as a whole (written by the CLI) ------------------------------------------


@dataclass(kw_only=True, eq=False, repr=False)
class RunStarted(Event):
    kind = "run_started"
    action: str
    targets: list[str]


@dataclass(kw_only=True, eq=False, repr=False)
class Failed(Event):
    kind = "failed"
    action: str
    state: str
    cause: str | None


@dataclass(kw_only=True, eq=False, repr=False)
class RunFinished(Event):
    kind = "run_finished"
    action: str
    ok: bool
    seconds: float
    failed: int
    targets: int
