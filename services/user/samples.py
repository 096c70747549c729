"""Rows the user service's schema accepts, for the tests: every service folder carries its
own, so a service copied under a new name is tested with no change outside its folder."""

# Data-bearing round trips: (from version, SQL) run at version N and later, then up to head
# and back down to N, rows unchanged.
ROUND_TRIP: list[tuple[int, str]] = [
    (
        1,
        """
        INSERT INTO healthcare_entities (name, type, country, province_state, city, phone, email) VALUES
          ('Clinique du Parc', 'clinic', 'Canada', 'QC', 'Montréal', '(514) 555-0100', 'info@parc.ca'),
          ('Mercy General', 'hospital', 'USA', 'NY', 'New York', '212-555-0199', NULL),
          ('CHU Ibn Sina', 'hospital', 'Morocco', 'Rabat-Salé-Kénitra', 'Rabat', '05 37 67 28 71', NULL),
          ('Hôpital Saint-Louis', 'hospital', 'France', 'Île-de-France', 'Paris', '01 42 49 49 49', NULL);
        INSERT INTO users (healthcare_entity_id, email, password_hash, first_name, last_name, role)
          SELECT id, 'admin@' || lower(country) || '.example', 'x', 'Ada', 'Admin', 'admin'
          FROM healthcare_entities;
        UPDATE healthcare_entities SET updated_at = '2025-01-01T00:00:00Z';
        UPDATE users SET updated_at = '2025-01-01T00:00:00Z';
    """,
    ),
]

# Tenant isolation: a row of entity %(e)s in each tenant table (%(k)s a unique key, %(n)s a
# unique number), what must exist first, and a column every row leaves writable.
TENANT_ROWS = {
    "users": "INSERT INTO users (healthcare_entity_id, email, password_hash, first_name,"
    " last_name, role) VALUES (%(e)s, %(k)s || '@x.test', 'h', 'Ada', 'Admin', 'staff')",
}
TENANT_SETUP = {
    "users": "INSERT INTO healthcare_entities (id, name, type, country) OVERRIDING SYSTEM VALUE"
    " VALUES (%(e)s, 'E', 'clinic', 'Canada') ON CONFLICT DO NOTHING",
}
WRITABLE = {"users": "first_name"}
