"""The ``migrate`` command line: the only code that prints or exits.

``frame`` holds the app and its frame (errors, scrubbing, signals); the commands live by
concern in ``migrate`` (up, down, status; ``platform`` runs 'all'), ``authoring``
(revision, check, diff, plan, lint, hash), ``backup`` (backup, backups, restore) and
``ops`` (seed, login). A module registers its commands on the app when imported, and a
run imports only the module of the command it names; ``app`` here is the whole app.
``fast`` answers the commonest runs (``SERVICE up`` on one database or a fleet, ``SERVICE
status``) before typer is even imported, with what needs no typer: ``connection`` (the
connection flags and the databases they choose), ``outcomes`` (a run's report, events and
metrics), ``shell`` (its one-line errors and exit) and ``render``; ``run`` is the
process's entry point.
"""

from typing import Any

from alembic_common.cli.fast import main as run

__all__ = ["app", "load", "main", "run"]


def __getattr__(name: str) -> Any:
    if name not in ("app", "load", "main"):  # submodules are found by the import system
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from alembic_common.cli import frame

    return frame.load() if name == "app" else getattr(frame, name)  # app: every command
