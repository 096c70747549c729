"""The seed's naive phone migration against ours, on 1,000,000 Faker-like patients, with
an old and a new release writing.

Builds one patients table at version 3 (realistic CA/US/FR/MA phone spellings, generated
in SQL; a sample is checked with libphonenumber), clones it (CREATE DATABASE ... TEMPLATE)
and migrates each copy while writers do single-row UPDATEs (and a few INSERTs) of random
patients:
  * naive (seed v4): the seed's version 4 verbatim, one transaction: ADD COLUMN, UPDATE
    every row with regexp_replace, DROP the old column, RENAME the new one;
  * naive (same conversion): one transaction doing what ours does: ADD COLUMN phone_e164
    and phone_extension, install patient_phone_parse and its rules, UPDATE every row with
    it, RENAME phone -> phone_original and phone_e164 -> phone;
  * ours: `migrate.py patient up --contract`: expand (columns + trigger), batched resumable
    backfill, then the contract step (forced: the old writer announces patient@3, which
    holds the contract under a plain `up`).
Writers: the old release (application_name patient@3, public.patients, writes national
numbers) runs throughout; the new release (patient@5, search_path patient_v5, writes E.164
numbers) starts as soon as patient_v5 exists, so only during ours. Latencies are split at
the moment alembic_version reads 0004 (v4 committed, contract begins).
Then: conversion rate (count(patient_phone_parse(...)) over all rows, one backend), and
the read overhead of the version schema's view against the table, on a copy at version 4
with patient_v5 present (prepared point lookups, interleaved blocks, 5 rounds).
Targets: each writer's max <= 50 ms during ours; ours <= 1.3x naive; view <= 1.05x table.

    python bench/phone_backfill.py [--rows 1000000] [--runs 1]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from _common import ROOT, create_db, drop_db, median, server

sys.path.insert(0, str(ROOT / "tests"))

from phones import COUNTRIES, oracle

from alembic_common.core import runner, services
from alembic_common.core.settings import Settings
from alembic_common.online.ddl import sql_statements
from alembic_common.online.releases import release_url

DATA = ROOT / "services" / "patient" / "migrations" / "data"
MIGRATE = [sys.executable, str(ROOT / "scripts/migrate.py"), "patient", "up"]

NAIVE_V4 = """
ALTER TABLE patients ADD COLUMN phone_international VARCHAR(25);
UPDATE patients SET phone_international =
    CASE
        WHEN country = 'Canada' THEN '+1' || REGEXP_REPLACE(phone, '[^0-9]', '', 'g')
        WHEN country = 'USA' THEN '+1' || REGEXP_REPLACE(phone, '[^0-9]', '', 'g')
        WHEN country = 'Morocco' THEN '+212' || REGEXP_REPLACE(phone, '[^0-9]', '', 'g')
        WHEN country = 'France' THEN '+33' || REGEXP_REPLACE(phone, '[^0-9]', '', 'g')
        ELSE phone
    END;
ALTER TABLE patients DROP COLUMN phone;
ALTER TABLE patients RENAME COLUMN phone_international TO phone;
"""

# Row g: country (ARRAY order) = COUNTRY_ORDER[g % 4]; healthcare entity 1 + g % 11;
# patient_id 'P' || g. id = g (identity, inserted in order).
COUNTRY_ORDER = ["Canada", "USA", "France", "Morocco"]
ENTITIES = 11

# Faker-like patients in one INSERT ... SELECT: deterministic pseudo-random digits from
# hashint8extended(g, seed); spellings chosen per country by a hash roll.
FAKE = """
WITH h AS (
    SELECT g, g %% 4 AS c,
           (hashint8extended(g, 1) & 9223372036854775807) AS h1,
           (hashint8extended(g, 2) & 9223372036854775807) AS h2,
           (hashint8extended(g, 3) & 9223372036854775807) AS h3,
           (hashint8extended(g, 4) & 9223372036854775807) AS h4,
           (hashint8extended(g, 5) & 9223372036854775807) AS h5
    FROM generate_series(1, %(rows)s) g
), n AS (
    SELECT *,
        CASE WHEN c < 2 THEN  -- NANP: area, exchange NXX (no N11), line
            (CASE c WHEN 0 THEN ARRAY['514','438','416','647','604','778','613','450','819','403']
                    ELSE ARRAY['212','646','415','312','617','202','305','713','206','503'] END)
                [1 + h1 %% 10]
            || (200 + h2 %% 800 + CASE WHEN h2 %% 800 %% 100 = 11 THEN 1 ELSE 0 END)::text
            || lpad((h3 %% 10000)::text, 4, '0')
        WHEN c = 2 THEN  -- France: mobiles 6x (x not 3 or 9) and 7[3-9], some Paris lines
            (ARRAY['60','61','62','64','65','66','67','68','73','74','75','76','77','78',
                   '12','14','14','13'])[1 + h1 %% 18]
            || lpad((h3 %% 10000000)::text, 7, '0')
        ELSE  -- Morocco: mobiles 6[0-79]x, some 52x lines
            (ARRAY['61','62','63','64','65','66','67','60','69','61','52'])[1 + h1 %% 11]
            || lpad((h3 %% 10000000)::text, 7, '0')
        END AS nsn,
        h4 %% 1000 AS junk, h4 / 1000 %% 100 AS ext, h5 %% 100 AS style
    FROM h
), s AS (
    SELECT *,
        CASE WHEN c < 2 THEN CASE
            WHEN style < 35 THEN '(' || substr(nsn, 1, 3) || ') ' || substr(nsn, 4, 3) || '-' || substr(nsn, 7)
            WHEN style < 50 THEN substr(nsn, 1, 3) || '.' || substr(nsn, 4, 3) || '.' || substr(nsn, 7)
            WHEN style < 62 THEN '1-' || substr(nsn, 1, 3) || '-' || substr(nsn, 4, 3) || '-' || substr(nsn, 7)
            WHEN style < 80 THEN '+1 ' || substr(nsn, 1, 3) || ' ' || substr(nsn, 4, 3) || ' ' || substr(nsn, 7)
            WHEN style < 92 THEN substr(nsn, 1, 3) || '-' || substr(nsn, 4, 3) || '-' || substr(nsn, 7)
            ELSE nsn END
        WHEN c = 2 THEN CASE
            WHEN style < 40 THEN '0' || substr(nsn, 1, 1) || ' ' || substr(nsn, 2, 2) || ' '
                || substr(nsn, 4, 2) || ' ' || substr(nsn, 6, 2) || ' ' || substr(nsn, 8, 2)
            WHEN style < 62 THEN '+33 ' || substr(nsn, 1, 1) || ' ' || substr(nsn, 2, 2) || ' '
                || substr(nsn, 4, 2) || ' ' || substr(nsn, 6, 2) || ' ' || substr(nsn, 8, 2)
            WHEN style < 72 THEN '+33 (0)' || substr(nsn, 1, 1) || ' ' || substr(nsn, 2, 2) || ' '
                || substr(nsn, 4, 2) || ' ' || substr(nsn, 6, 2) || ' ' || substr(nsn, 8, 2)
            WHEN style < 82 THEN '0033' || nsn
            WHEN style < 92 THEN '0' || substr(nsn, 1, 1) || '.' || substr(nsn, 2, 2) || '.'
                || substr(nsn, 4, 2) || '.' || substr(nsn, 6, 2) || '.' || substr(nsn, 8, 2)
            ELSE '0' || nsn END
        ELSE CASE
            WHEN style < 40 THEN '0' || substr(nsn, 1, 3) || '-' || substr(nsn, 4)
            WHEN style < 65 THEN '+212 ' || substr(nsn, 1, 1) || ' ' || substr(nsn, 2, 2) || ' '
                || substr(nsn, 4, 2) || ' ' || substr(nsn, 6, 2) || ' ' || substr(nsn, 8, 2)
            WHEN style < 78 THEN '00212' || nsn
            WHEN style < 90 THEN '0' || substr(nsn, 1, 1) || ' ' || substr(nsn, 2, 2) || ' '
                || substr(nsn, 4, 2) || ' ' || substr(nsn, 6, 2) || ' ' || substr(nsn, 8, 2)
            ELSE '+212' || nsn END
        END AS spelled
    FROM n
)
INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth,
                      gender, phone, email, city, country, preferred_language)
SELECT 1 + g %% {entities}, 'P' || g,
       (ARRAY['Marie','Jean','Fatima','Mohamed','Emily','James','Chloé','Youssef','Olivia',
              'Liam','Amina','Lucas'])[1 + h2 %% 12],
       (ARRAY['Tremblay','Gagnon','Smith','Johnson','Martin','Bernard','El Amrani','Benali',
              'Roy','Williams','Dubois','Alaoui'])[1 + h3 %% 12],
       date '1935-01-01' + (h1 %% 31000)::int,
       (ARRAY['female','male','other','unknown',NULL])[1 + h5 %% 5],
       CASE WHEN junk < 20 THEN (ARRAY['N/A', NULL, 'none', '', 'unknown', '-', NULL, 'TBD'])
                                [1 + junk %% 8]
            WHEN ext < 5 THEN spelled || (ARRAY[' x', ' ext. ', ' poste '])[1 + ext %% 3]
                || (1 + h2 %% 999)::text
            ELSE spelled END,
       'p' || g || '@example.org',
       (CASE c WHEN 0 THEN ARRAY['Montréal','Toronto','Vancouver','Ottawa']
               WHEN 1 THEN ARRAY['New York','Boston','Chicago','Seattle']
               WHEN 2 THEN ARRAY['Paris','Lyon','Marseille','Lille']
               ELSE ARRAY['Casablanca','Rabat','Marrakech','Fès'] END)[1 + h4 %% 4],
       (ARRAY['Canada','USA','France','Morocco'])[1 + c],
       (ARRAY['en','fr','ar',NULL])[1 + h1 %% 4]
FROM s
""".replace("{entities}", str(ENTITIES))

# Both new columns from one parse, as version 4 does.
CONVERTED = (
    "(SELECT split_part(p, ';ext=', 1), nullif(split_part(p, ';ext=', 2), '')"
    " FROM patient_phone_parse(phone, country) AS p)"
)


def country_of(key: int) -> str:
    return COUNTRY_ORDER[key % 4]


def fake_number(rng: random.Random, country: str) -> tuple[str, str]:
    """A valid number for ``country``: (national spelling, E.164)."""
    if country in ("Canada", "USA"):
        area = rng.choice(["514", "438", "416", "604"] if country == "Canada" else ["212", "415"])
        exchange = str(rng.randint(2, 9)) + rng.choice(["23", "34", "55", "78", "90"])
        line = f"{rng.randint(0, 9999):04d}"
        return f"({area}) {exchange}-{line}", f"+1{area}{exchange}{line}"
    nsn = rng.choice(["61", "66", "75"] if country == "France" else ["61", "66", "70"])
    nsn += f"{rng.randint(0, 9_999_999):07d}"
    pairs = " ".join(nsn[i : i + 2] for i in range(1, 9, 2))
    code = "33" if country == "France" else "212"
    return f"0{nsn[0]} {pairs}", f"+{code}{nsn}"


# --- building and cloning ---------------------------------------------------------------------


def build(srv: str, rows: int) -> tuple[str, float, float]:
    """A database at version 3 with ``rows`` patients; (url, build seconds, share valid)."""
    started = time.perf_counter()
    url = create_db(srv)
    runner.up(services.get("patient", ROOT), Settings("patient", url, "bench"), target=3)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FAKE, {"rows": rows})
        conn.execute("VACUUM ANALYZE patients")
        built = time.perf_counter() - started
        rng = random.Random(7)
        sample = conn.execute(
            "SELECT phone, country FROM patients WHERE id = ANY(%s)",
            [rng.sample(range(1, rows + 1), min(2000, rows))],
        ).fetchall()
        listed = conn.execute("SELECT DISTINCT country FROM patients ORDER BY 1").fetchall()
    assert {c for (c,) in listed} <= set(COUNTRIES), listed
    valid = sum(oracle(p, COUNTRIES[c])[0] is not None for p, c in sample if p is not None)
    return url, built, valid / len(sample)


def clone(srv: str, template: str) -> str:
    return create_db(srv, template=template)


# --- writers ----------------------------------------------------------------------------------


@dataclass
class Writer:
    """One release's writer: (start time, latency) of each write."""

    name: str
    writes: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def write_loop(
    url: str, rows: int, writer: Writer, stop: threading.Event, seed: int, e164: bool
) -> None:
    rng = random.Random(seed)
    count = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            count += 1
            started = time.perf_counter()
            try:
                if count % 50 == 0:  # a few new patients
                    country = rng.choice(COUNTRY_ORDER)
                    national, full = fake_number(rng, country)
                    conn.execute(
                        "INSERT INTO patients (healthcare_entity_id, patient_id, first_name,"
                        " last_name, date_of_birth, country, phone)"
                        " VALUES (%s, %s, 'New', 'Patient', '1990-05-05', %s, %s)",
                        [1 + count % ENTITIES, f"{writer.name}-{seed}-{count}", country,
                         full if e164 else national],
                    )  # fmt: skip
                else:
                    key = rng.randint(1, rows)
                    national, full = fake_number(rng, country_of(key))
                    conn.execute(
                        "UPDATE patients SET phone = %s, first_name = %s WHERE id = %s",
                        [full if e164 else national, writer.name, key],
                    )
            except psycopg.Error as exc:  # recorded, never fatal to the bench
                writer.errors.append(str(exc).splitlines()[0])
            writer.writes.append((started, time.perf_counter() - started))
            time.sleep(0.001)


@dataclass
class Run:
    started: float  # perf_counter() when the migration began
    total: float
    boundary: float | None  # when v4 had committed (contract began), None: not split
    new_started: float | None  # when the new writer started, relative to the start
    old: Writer
    new: Writer | None


def with_writers(url: str, rows: int, migrate: Callable[[], None], *, new_release: bool) -> Run:
    """Run ``migrate`` while the old release writes (and the new one, once patient_v5 exists)."""
    stop = threading.Event()
    old = Writer("patient@3")
    new = Writer("patient@5") if new_release else None
    threads = [
        threading.Thread(
            target=write_loop,
            args=(release_url(url, "patient", 3), rows, old, stop, 1, False),
        )
    ]
    threads[0].start()
    time.sleep(0.3)
    old.writes.clear()  # only what happens during the migration counts
    marks: dict[str, float] = {}

    def watch() -> None:
        """Start the new writer when patient_v5 appears; note when version 4 is committed."""
        with psycopg.connect(url, autocommit=True, application_name="bench-watch") as conn:
            while not stop.is_set():
                now = time.perf_counter()
                schema, version = conn.execute(
                    "SELECT to_regnamespace('patient_v5') IS NOT NULL,"
                    " (SELECT max(version_num) FROM public.alembic_version)"
                ).fetchone() or (False, None)
                if new is not None and schema and "new" not in marks:
                    marks["new"] = now
                    thread = threading.Thread(
                        target=write_loop,
                        args=(
                            release_url(url, "patient", 5, version_schema=True),
                            rows, new, stop, 2, True,
                        ),
                    )  # fmt: skip
                    thread.start()
                    threads.append(thread)
                if version is not None and version >= "0004" and "v4" not in marks:
                    marks["v4"] = now
                time.sleep(0.01)

    watcher = threading.Thread(target=watch) if new_release else None
    started = time.perf_counter()
    if watcher:
        watcher.start()
    try:
        migrate()
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        if watcher:
            watcher.join()
        for thread in threads:
            thread.join()
    for writer in (old, new):
        if writer is not None:  # writes started before the migration began or after it ended
            writer.writes[:] = [w for w in writer.writes if started <= w[0] < started + elapsed]
    boundary = marks["v4"] - started if "v4" in marks else None
    new_at = marks["new"] - started if "new" in marks else None
    return Run(started, elapsed, boundary, new_at, old, new)


# --- the migrations ---------------------------------------------------------------------------


def naive_seed(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(NAIVE_V4)
        conn.commit()


def naive_same(url: str) -> None:
    """One transaction with our conversion: columns, functions and rules, UPDATE, renames."""
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE patients ADD COLUMN phone_e164 TEXT")
        conn.execute("ALTER TABLE patients ADD COLUMN phone_extension TEXT")
        for statement in sql_statements((DATA / "phone_conversion.sql").read_text()):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO patient_phone_rules"
            " SELECT * FROM jsonb_populate_recordset(NULL::patient_phone_rules, %s::jsonb -> 'rules')"
            " ON CONFLICT DO NOTHING",
            [(DATA / "phone_rules.json").read_text()],
        )
        conn.execute(f"UPDATE patients SET (phone_e164, phone_extension) = {CONVERTED}")
        conn.execute("ALTER TABLE patients RENAME COLUMN phone TO phone_original")
        conn.execute("ALTER TABLE patients RENAME COLUMN phone_e164 TO phone")
        conn.commit()


def ours(url: str, *extra: str) -> None:
    done = subprocess.run(
        [*MIGRATE, *extra, "--url", url], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"migrate up {' '.join(extra)} failed:\n{done.stdout}\n{done.stderr}")


def conversion_rate(url: str, column: str) -> tuple[float, int]:
    """Rows per second of patient_phone_parse alone (one backend), and how many it reads."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        total = conn.execute("SELECT count(*) FROM patients").fetchone()
        started = time.perf_counter()
        parsed = conn.execute(
            f"SELECT count(patient_phone_parse({column}, country)) FROM patients"
        ).fetchone()
        elapsed = time.perf_counter() - started
    return (total[0] if total else 0) / elapsed, parsed[0] if parsed else 0


def read_overhead(
    url: str, rows: int, rounds: int = 5, each: int = 20_000, block: int = 1000
) -> dict[str, list[float]]:
    """View / table time of prepared point lookups, per round: by id and by the unique key."""
    queries = {
        "id": (
            "SELECT * FROM patient_v5.patients WHERE id = %s",
            "SELECT * FROM public.patients WHERE id = %s",
        ),
        "entity+patient_id": (
            "SELECT * FROM patient_v5.patients WHERE healthcare_entity_id = %s AND patient_id = %s",
            "SELECT * FROM public.patients WHERE healthcare_entity_id = %s AND patient_id = %s",
        ),
    }
    rng = random.Random(3)
    ratios: dict[str, list[float]] = {name: [] for name in queries}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, (view, table) in queries.items():
            for _ in range(rounds):
                spent = {view: 0.0, table: 0.0}
                for blk in range(each // block):
                    keys = [rng.randint(1, rows) for _ in range(block)]
                    args = [[k] if name == "id" else [1 + k % ENTITIES, f"P{k}"] for k in keys]
                    order = (view, table) if blk % 2 == 0 else (table, view)
                    for query in order:
                        started = time.perf_counter()
                        for arg in args:
                            conn.execute(query, arg, prepare=True).fetchone()
                        spent[query] += time.perf_counter() - started
                ratios[name].append(spent[view] / spent[table])
    return ratios


# --- reporting --------------------------------------------------------------------------------


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def latency_figures(writer: Writer, since: float, until: float, base: float) -> tuple:
    lat = [d for s, d in writer.writes if since <= s - base < until]
    if not lat:
        return None, None, 0
    return max(lat) * 1000, p99(lat) * 1000, len(lat)


def one_run(srv: str, template: str, rows: int, figures: dict[str, list[float]]) -> None:
    def note(label: str, value: float | None) -> None:
        if value is not None:
            figures.setdefault(label, []).append(value)

    for label, migrate, new_release in (
        ("naive (seed v4)", naive_seed, False),
        ("naive (same conversion)", naive_same, False),
        ("ours (v4 + v5, --contract)", lambda u: ours(u, "--contract", "--version", "5"), True),
    ):
        url = clone(srv, template)
        try:
            run = with_writers(url, rows, lambda m=migrate, u=url: m(u), new_release=new_release)
            if new_release:
                rate, parsed = conversion_rate(url, "phone_original")
                note("conversion rows/s (one backend)", rate)
                note("share read as valid by patient_phone_parse", parsed / rows)
        finally:
            drop_db(srv, url)
        print(f"  {label}: total {run.total:.2f} s", flush=True)
        note(f"{label}: total s", run.total)
        note(f"{label}: v4 (expand + backfill) s", run.boundary)
        note(f"{label}: new writer started at s", run.new_started)
        phases = [("overall", 0.0, float("inf"))]
        if run.boundary is not None:
            phases = [
                ("expand+backfill", 0.0, run.boundary),
                ("contract", run.boundary, float("inf")),
                *phases,
            ]
        for writer in (run.old, run.new):
            if writer is None:
                continue
            for phase, lo, hi in phases:
                worst, p, count = latency_figures(writer, lo, hi, run.started)
                note(f"{label}: {writer.name} {phase} max ms", worst)
                note(f"{label}: {writer.name} {phase} p99 ms", p)
                note(f"{label}: {writer.name} {phase} writes", count)
            if writer.errors:
                note(f"{label}: {writer.name} errors", len(writer.errors))
                print(f"    {writer.name} errors, e.g.: {writer.errors[0]}")
    figures.setdefault("ratio ours / naive (seed v4)", []).append(
        figures["ours (v4 + v5, --contract): total s"][-1] / figures["naive (seed v4): total s"][-1]
    )
    figures.setdefault("ratio ours / naive (same conversion)", []).append(
        figures["ours (v4 + v5, --contract): total s"][-1]
        / figures["naive (same conversion): total s"][-1]
    )
    url = clone(srv, template)
    try:
        ours(url, "--hold-contract", "--version", "5")  # version 4, patient_v5 present
        for name, values in read_overhead(url, rows).items():
            figures.setdefault(f"view / table, lookup by {name} (median of 5 rounds)", []).append(
                median(values)
            )
            print(
                f"  view / table by {name}: "
                + ", ".join(f"{v:.3f}" for v in values)
                + "x over 5 rounds",
                flush=True,
            )
    finally:
        drop_db(srv, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    srv = server()
    template, built, valid = build(srv, args.rows)
    print(
        f"{args.rows:,} Faker-like patients built in {built:.1f} s;"
        f" libphonenumber reads {valid:.1%} of a 2,000-row sample as valid",
        flush=True,
    )
    figures: dict[str, list[float]] = {}
    try:
        for number in range(args.runs):
            print(f"run {number + 1}/{args.runs}", flush=True)
            one_run(srv, template, args.rows, figures)
    finally:
        drop_db(srv, template)
    print()
    print(
        f"phone migration on {args.rows:,} patients; writers: old release patient@3 (public,"
        " national numbers) throughout; new release patient@5 (patient_v5, E.164) from when"
        " patient_v5 exists, ours only (naive runs have no version schema: old writer only)."
        " Phases split when alembic_version reads 0004."
    )
    for label, values in figures.items():
        if len(values) == 1:
            print(f"  {label:<72} {values[0]:12,.3f}")
        else:
            print(
                f"  {label:<72} {median(values):12,.3f}"
                f"  (range {min(values):,.3f} - {max(values):,.3f}, {len(values)} runs)"
            )
    ours_label = "ours (v4 + v5, --contract)"
    worst = max(
        (max(v) for k, v in figures.items() if k.startswith(ours_label) and k.endswith("max ms")),
        default=float("nan"),
    )
    print("targets:")
    print(f"  each writer's max during ours <= 50 ms: worst seen {worst:.1f} ms")
    print(
        f"  ours / naive (seed v4) <= 1.3x: {median(figures['ratio ours / naive (seed v4)']):.2f}x;"
        f" ours / naive (same conversion): "
        f"{median(figures['ratio ours / naive (same conversion)']):.2f}x"
    )
    for k, v in figures.items():
        if k.startswith("view / table"):
            print(f"  {k.split(',')[1].strip()} view <= 1.05x table: {median(v):.3f}x")


if __name__ == "__main__":
    main()
