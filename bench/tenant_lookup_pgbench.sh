#!/usr/bin/env bash
# One patient by patient_id within its entity, measured by pgbench (the bare anchor): a
# login in patient_app under RLS against the owner without it, p50 and p99 per round. Each
# transaction, as a request would, sets app.healthcare_entity_id and then looks up.
#   BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres bash bench/tenant_lookup_pgbench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
server="${BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
db="bench_rls_$$"
url="${server%/*}/$db"
work="$(mktemp -d)"
trap 'psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "DROP ROLE IF EXISTS $db"; rm -rf "$work"' EXIT
psql "$server" -qc "CREATE DATABASE $db"
python scripts/migrate.py patient up --url "$url" >/dev/null 2>&1
psql "$url" -qc "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,
  date_of_birth, country) SELECT 1 + i % 1000, 'P-' || i, 'Ana', 'Roy', '1980-01-01', 'France'
  FROM generate_series(1, 1000000) i" -c "VACUUM ANALYZE patients" \
  -c "CREATE ROLE $db LOGIN IN ROLE patient_app" -c "ALTER ROLE $db SET role = 'patient_app'"
cat > "$work/owner.sql" <<'SQL'
\set n random(1, 1000000)
SELECT set_config('app.healthcare_entity_id', (1 + :n % 1000)::text, false);
SELECT * FROM patients WHERE healthcare_entity_id = 1 + :n % 1000 AND patient_id = 'P-' || :n;
SQL
cat > "$work/app.sql" <<'SQL'
\set n random(1, 1000000)
SELECT set_config('app.healthcare_entity_id', (1 + :n % 1000)::text, false);
SELECT * FROM patients WHERE healthcare_entity_id = 1 + :n % 1000 AND patient_id = 'P-' || :n;
SQL
user="$(psql "$server" -Atc 'SELECT current_user')"
for round in 1 2 3 4 5; do
  for who in owner app; do
    login=$([ "$who" = owner ] && echo "$user" || echo "$db")
    pgbench -n -M prepared -f "$work/$who.sql" -T 4 -U "$login" -l \
      --log-prefix="$work/$who.$round" "$url" >/dev/null 2>&1
  done
done
python3 - "$work" <<'PY'
import glob, statistics, sys
work = sys.argv[1]
ratios = []
for r in range(1, 6):
    got = {}
    for who in ("owner", "app"):
        lat = sorted(int(l.split()[2]) for f in glob.glob(f"{work}/{who}.{r}.*") for l in open(f))
        got[who] = (lat[len(lat) // 2], lat[int(len(lat) * 0.99)])
    ratios.append(got["app"][1] / got["owner"][1])
    print(f"round {r}: owner p50 {got['owner'][0]}us p99 {got['owner'][1]}us | patient_app"
          f" p50 {got['app'][0]}us p99 {got['app'][1]}us | p99 ratio {ratios[-1]:.2f}x")
print(f"p99 ratio median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x"
      " (target <= 1.1x); each transaction sets the entity, then looks the patient up")
PY
