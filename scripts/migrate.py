#!/usr/bin/env python3
"""python scripts/migrate.py SERVICE up|down|status [options]  (same as the `migrate` command)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alembic_common.cli import run

if __name__ == "__main__":
    run()
