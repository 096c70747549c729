"""Rows the appointment service's schema accepts, for the tests: every service folder carries
its own, so a service copied under a new name is tested with no change outside its folder."""

# Data-bearing round trips: (from version, SQL) run at version N and later, then up to head
# and back down to N, rows unchanged.
ROUND_TRIP: list[tuple[int, str]] = [
    (
        1,
        """
        INSERT INTO appointments (healthcare_entity_id, patient_id, provider_id, starts_at, ends_at, status, reason, updated_at) VALUES
          (1, 1, 10, '2026-12-01 09:00Z', '2026-12-01 09:30Z', 'scheduled', 'check-up', '2025-01-01Z'),
          (1, 2, 10, '2026-12-01 09:30Z', '2026-12-01 10:00Z', 'confirmed', NULL, '2025-01-01Z'),
          (3, 3, 30, '2026-12-01 09:00Z', '2026-12-01 09:45Z', 'cancelled', 'fever', '2025-01-01Z');
    """,
    ),
]

# Tenant isolation: a row of entity %(e)s in each tenant table (%(k)s a unique key, %(n)s a
# unique number), and a column every row leaves writable.
TENANT_ROWS = {
    "appointments": "INSERT INTO appointments (healthcare_entity_id, patient_id, provider_id,"
    " starts_at, ends_at) VALUES (%(e)s, 1, %(n)s, '2030-01-01Z', '2030-01-01T01:00Z')",
}
TENANT_SETUP: dict[str, str] = {}
WRITABLE = {"appointments": "reason"}
