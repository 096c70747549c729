"""What keeps a run safe: backups and restore (backup), the schema's health (health),
secrets scrubbed from output (redact), the migrating role's powers (privileges) and files
written without following links (files)."""
