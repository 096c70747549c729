"""Row-level security's cost on the hot path: one patient by patient_id within its entity.

1,000,000 patients across 1,000 entities, patient at head (RLS enabled and forced). The
same prepared lookup runs as patient_app (SET ROLE; entity set with tenancy.set_entity:
RLS applies) and as the owner (a superuser here: no RLS), interleaved, alternating which
goes first. A third variant is the app's lookup with the tenant filter left out (only the
policy names the entity). Reports p50 and p99 per round and the p99 ratio (target <=
1.1x): median and range over the rounds.

    python bench/tenant_lookup.py [--patients 1000000] [--entities 1000] [--iterations 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import psycopg
from _common import ROOT, create_db, drop_db, server

from alembic_common.core import runner, services
from alembic_common.core.settings import Settings
from alembic_common.tenancy import rls as tenancy

LOOKUP = "SELECT * FROM patients WHERE healthcare_entity_id = %s AND patient_id = %s"
POLICY_ONLY = "SELECT * FROM patients WHERE patient_id = %s"


def load(url: str, patients: int, entities: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
            " date_of_birth, country) SELECT 1 + i %% %s, 'P-' || i, 'Ana', 'Roy',"
            " date '1950-01-01' + (i %% 20000), 'Canada' FROM generate_series(1, %s) i",
            [entities, patients],
        )
        conn.execute("VACUUM ANALYZE patients")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=1_000)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    srv = server()
    url = create_db(srv)
    try:
        runner.up(
            services.get("patient", ROOT),
            Settings("patient", url, "bench"),
            options=runner.RunOptions(contract=True),
        )
        started = time.perf_counter()
        load(url, args.patients, args.entities)
        print(
            f"loaded {args.patients:,} patients across {args.entities:,} entities"
            f" in {time.perf_counter() - started:.1f}s"
        )
        rng = random.Random(14)
        with (
            psycopg.connect(url, autocommit=True) as app,
            psycopg.connect(url, autocommit=True) as owner,
        ):
            app.execute("SET ROLE patient_app")
            assert app.execute("SELECT count(*) FROM patients").fetchone() == (0,)
            plan = "\n".join(
                r[0] for r in owner.execute("EXPLAIN " + LOOKUP, [1, "P-1000"]).fetchall()
            )
            print("owner plan:", " | ".join(plan.splitlines()[:2]))
            tenancy.set_entity(app, 1)
            plan = "\n".join(
                r[0] for r in app.execute("EXPLAIN " + POLICY_ONLY, ["P-1000"]).fetchall()
            )
            print("app plan (policy only):", " | ".join(plan.splitlines()[:2]))
            ratios, policy_ratios = [], []
            for round_ in range(1, args.rounds + 1):
                times: dict[str, list[float]] = {"app": [], "owner": [], "policy": []}
                for i in range(args.iterations):
                    n = rng.randrange(1, args.patients + 1)
                    entity, pid = 1 + n % args.entities, f"P-{n}"
                    tenancy.set_entity(app, entity)  # as a request would, outside the timing
                    order = ["app", "owner", "policy"] if i % 2 else ["policy", "owner", "app"]
                    for who in order:
                        conn = owner if who == "owner" else app
                        query, params = (
                            (POLICY_ONLY, [pid]) if who == "policy" else (LOOKUP, [entity, pid])
                        )
                        t = time.perf_counter()
                        row = conn.execute(query, params, prepare=True).fetchone()
                        times[who].append((time.perf_counter() - t) * 1e6)
                        assert row is not None and row[1] == entity, (who, entity, pid)
                stats = {w: (pct(v, 0.5), pct(v, 0.99)) for w, v in times.items()}
                ratio = stats["app"][1] / stats["owner"][1]
                policy_ratio = stats["policy"][1] / stats["owner"][1]
                ratios.append(ratio)
                policy_ratios.append(policy_ratio)
                print(
                    f"round {round_}: owner p50 {stats['owner'][0]:.0f}us p99 {stats['owner'][1]:.0f}us"
                    f" | patient_app p50 {stats['app'][0]:.0f}us p99 {stats['app'][1]:.0f}us"
                    f" | patient_app, policy only p50 {stats['policy'][0]:.0f}us"
                    f" p99 {stats['policy'][1]:.0f}us | p99 ratio {ratio:.3f}x"
                    f" (policy only {policy_ratio:.3f}x)"
                )
        print(
            f"p99 ratio patient_app/owner: median {statistics.median(ratios):.3f}x, range"
            f" {min(ratios):.3f}-{max(ratios):.3f}x over {args.rounds} rounds (target <= 1.1x)"
        )
        print(
            f"p99 ratio policy only/owner: median {statistics.median(policy_ratios):.3f}x,"
            f" range {min(policy_ratios):.3f}-{max(policy_ratios):.3f}x"
        )
    finally:
        drop_db(srv, url)


if __name__ == "__main__":
    main()
