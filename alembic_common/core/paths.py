"""Where the project lives on disk: its root and the embedded server's data folder."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_NAME = ".pgdata"


def project_root() -> Path:
    """The repository root: ``MIGRATE_ROOT`` if set, else the folder holding ``services/``."""
    if os.environ.get("MIGRATE_ROOT"):
        return Path(os.environ["MIGRATE_ROOT"]).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "services").is_dir():
        return here
    return Path.cwd()


def data_dir(root: Path | None = None) -> Path:
    """Where the embedded server keeps its data (``MIGRATE_PGDATA`` overrides)."""
    if os.environ.get("MIGRATE_PGDATA"):
        return Path(os.environ["MIGRATE_PGDATA"]).resolve()
    return (root or project_root()) / DATA_DIR_NAME
