"""Writing and reviewing migrations: new revisions and comparisons (revisions), what a run
would send (offline), lint, checksums, schema snapshots (schema) and seed data (seeding)."""
