"""The ``migrate`` command line: the only code that prints or exits.

``app`` is the frame (errors, scrubbing, signals); the commands live by concern in
``migrate`` (up, down, status; ``platform`` runs 'all'), ``authoring`` (revision, check,
diff, plan, lint, hash), ``backup`` (backup, backups, restore) and ``ops`` (seed, login).
A module registers its commands on ``app`` when imported, and a run imports only the
module of the command it names: ``load()`` gives the app with every command.
"""

from alembic_common.cli.app import app, load, main, run

__all__ = ["app", "load", "main", "run"]
