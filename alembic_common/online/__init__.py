"""Changes made while the service runs: old and new releases side by side (releases), steps
that commit in parts (partial), batched backfills (backfill), and safe DDL sequences (safe,
ddl)."""
