"""Cost of patient_phone_parse per row, against a plain regexp_replace of the digits.

Builds a table of realistic phone inputs (mostly national and international spellings of
valid CA/US/FR/MA numbers, a few with extensions, other countries' numbers, other scripts'
digits and junk, drawn as tests/phones.py writes them), then times, 5 times each:
  * baseline: SELECT count(regexp_replace(raw, '[^0-9]', '', 'g')) FROM t
  * parse:    SELECT count(patient_phone_parse(raw, country)) FROM t
and prints µs/row (median and range), the extra cost of the conversion per row, and its
rows/s. Parallel query is off, so the figures are per backend. Target: extra <= ~5 µs/row.

    python bench/phone_conversion.py [--rows 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import psycopg
from _common import ROOT, create_db, drop_db, median, server

sys.path.insert(0, str(ROOT / "tests"))

import phonenumbers as pn
from phonenumbers import PhoneNumberFormat
from phones import (
    ARABIC_INDIC,
    COUNTRIES,
    FULL_WIDTH,
    IDD,
    JUNK,
    install,
    valid_number,
)


def realistic(rng: random.Random) -> tuple[str, str]:
    """One input as clinics type them: mostly plain national/international spellings."""
    country = rng.choice(list(COUNTRIES))
    region = COUNTRIES[country]
    number = valid_number(region, rng)
    national = pn.format_number(number, PhoneNumberFormat.NATIONAL)
    international = pn.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    e164 = pn.format_number(number, PhoneNumberFormat.E164)
    nsn = pn.national_significant_number(number)
    roll = rng.random()
    if roll < 0.30:
        raw = national
    elif roll < 0.52:
        raw = international
    elif roll < 0.65:
        raw = e164
    elif roll < 0.75:
        raw = "".join(c for c in national if c.isdigit())
    elif roll < 0.83:
        raw = national.replace(" ", ".").replace("(", "").replace(") ", ".").replace("-", ".")
    elif roll < 0.88:
        raw = f"{IDD[region]} {number.country_code} {nsn}"
    elif roll < 0.91:
        raw = f"{national} x{rng.randint(1, 999)}"
    elif roll < 0.93:
        raw = f"{national} poste {rng.randint(1, 999)}"
    elif roll < 0.96:
        other = valid_number(rng.choice(["GB", "DE", "IT", "ES", "DZ", "TN", "SN"]), rng)
        raw = pn.format_number(other, PhoneNumberFormat.INTERNATIONAL)
    elif roll < 0.97:
        raw = national.translate(rng.choice([ARABIC_INDIC, FULL_WIDTH]))
    else:
        raw = rng.choice(JUNK)
    return raw, country


def build(url: str, rows: int, distinct: int = 20000) -> None:
    rng = random.Random(2026)
    inputs = [realistic(rng) for _ in range(distinct)]
    with psycopg.connect(url, autocommit=True) as conn:
        install(conn)
        conn.execute("CREATE TABLE t (raw text, country text)")
        conn.execute(
            "INSERT INTO t SELECT r[1 + g %% %s], c[1 + g %% %s]"
            " FROM (SELECT %s::text[] AS r, %s::text[] AS c) a, generate_series(0, %s) g",
            [distinct, distinct, [r for r, _ in inputs], [c for _, c in inputs], rows - 1],
        )
        conn.execute("VACUUM ANALYZE t")


def measure(url: str, query: str, rows: int, runs: int) -> list[float]:
    """µs per row of each run."""
    found = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.execute(query)  # warm: cache, compiled regexes
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(query).fetchall()
            found.append((time.perf_counter() - started) / rows * 1e6)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    srv = server()
    url = create_db(srv)
    try:
        build(url, args.rows)
        base = measure(
            url, "SELECT count(regexp_replace(raw, '[^0-9]', '', 'g')) FROM t", args.rows, args.runs
        )
        parse = measure(
            url, "SELECT count(patient_phone_parse(raw, country)) FROM t", args.rows, args.runs
        )
        with psycopg.connect(url) as conn:
            valid = conn.execute(
                "SELECT count(patient_phone_parse(raw, country)) FROM t"
            ).fetchone()
    finally:
        drop_db(srv, url)
    extra = [p - b for p, b in zip(sorted(parse), sorted(base), strict=True)]
    print(f"rows: {args.rows} ({valid[0] if valid else '?'} read as valid), runs: {args.runs}")
    for name, values in (("regexp_replace baseline", base), ("patient_phone_parse", parse)):
        print(f"{name:24} {median(values):6.2f} µs/row (range {min(values):.2f}-{max(values):.2f})")
    print(f"{'extra per row':24} {median(parse) - median(base):6.2f} µs/row (target <= ~5)")
    rates = [1e6 / p for p in parse]
    print(
        f"{'conversion rate':24} {median(rates):,.0f} rows/s"
        f" (range {min(rates):,.0f}-{max(rates):,.0f})"
    )
    del extra


if __name__ == "__main__":
    main()
