"""No-op `up` (database already at head): migrate.py against plain `alembic upgrade head`.

This is what every container start pays. Both run side by side, alternating, on the
same database; the figure is the ratio of medians. Target: 0.5x plain Alembic or less.

    python bench/noop_up.py [--runs 15]
"""

from __future__ import annotations

import argparse
import sys

from _common import ROOT, create_db, drop_db, median, server, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    srv = server()
    db = create_db(srv)
    try:
        ours = [sys.executable, str(ROOT / "scripts" / "migrate.py"), "patient", "up", "--url", db]
        plain = [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(ROOT / "services/patient/alembic.ini"),
            "-x",
            f"url={db}",
            "upgrade",
            "head",
        ]
        timed(ours)  # bring it to head; warm the file cache for both
        timed(plain)
        ours_t, plain_t = [], []
        for _ in range(args.runs):
            ours_t.append(timed(ours))
            plain_t.append(timed(plain))
        o, p = median(ours_t), median(plain_t)
        print(f"no-op up, median of {args.runs} runs each")
        print(f"  migrate.py patient up       {o * 1000:7.0f} ms")
        print(f"  alembic upgrade head        {p * 1000:7.0f} ms")
        print(f"  ratio (ours / plain)        {o / p:7.2f}x   (target <= 0.5x)")
    finally:
        drop_db(srv, db)


if __name__ == "__main__":
    main()
