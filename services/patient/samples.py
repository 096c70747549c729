"""Rows the patient service's schema accepts, for the tests: every service folder carries its
own, so a service copied under a new name is tested with no change outside its folder.

Phones are written E.164 here: from version 5 on, phone holds nothing else (national
spellings are covered by tests/test_phones.py, test_schemas.py and test_clinical.py)."""

PATIENT_COLUMNS = (
    "healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, gender, phone, email,"
    " address, city, province_state, postal_code, country, emergency_contact_name,"
    " emergency_contact_phone, blood_type, preferred_language, marital_status, updated_at"
)

# Data-bearing round trips: (from version, SQL) run at version N and later, then up to head
# and back down to N, rows unchanged.
ROUND_TRIP: list[tuple[int, str]] = [
    (
        1,
        f"""
        INSERT INTO patients ({PATIENT_COLUMNS}) VALUES
          (1, 'MTL-1', 'Amélie', 'Tremblay', '1984-03-02', 'female', '+15145550143', 'a@x.ca',
           '1 rue Sainte-Catherine', 'Montréal', 'QC', 'H2X 1Y4', 'Canada', 'Luc', '514-555-0144',
           'O+', 'fr', 'married', '2025-01-01Z'),
          (2, 'NYC-1', 'John', 'Miller', '1979-11-20', 'male', '+12125550187', NULL,
           NULL, 'New York', 'NY', '10001', 'USA', NULL, NULL, '', 'en', '', '2025-01-01Z'),
          (3, 'CAS-1', 'Youssef', 'El Amrani', '1991-07-14', NULL, '+212661234567', NULL,
           NULL, 'Casablanca', NULL, '20000', 'Morocco', NULL, NULL, NULL, 'ar', NULL, '2025-01-01Z'),
          (4, 'PAR-1', 'Claire', 'Dubois', '1966-01-30', 'female', '+33142685300', NULL,
           NULL, 'Paris', NULL, '75011', 'France', NULL, NULL, 'AB-', 'fr', 'widowed', '2025-01-01Z'),
          (4, 'PAR-2', 'Ana', 'García', '1990-05-05', NULL, '+34612345678', NULL,
           NULL, 'Paris', NULL, '75011', 'France', NULL, NULL, NULL, 'es', NULL, '2025-01-01Z'),
          (4, 'PAR-3', 'Nobody', 'Phone', '2001-01-01', NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, 'France', NULL, NULL, NULL, NULL, NULL, '2025-01-01Z');
    """,
    ),
    (
        2,
        "UPDATE patients SET emergency_contact_address = '10 rue de Rivoli, Paris' WHERE patient_id = 'PAR-1'",
    ),
    (
        3,
        f"""
        INSERT INTO patients ({PATIENT_COLUMNS}) VALUES
          (1, 'MTL-2', 'Rare', 'Blood', '1970-02-02', NULL, '+15145550111', NULL, NULL, NULL, NULL,
           NULL, 'Canada', NULL, NULL, 'Rh-null', NULL, NULL, '2025-01-01Z')
    """,
    ),
    (
        4,
        f"""
        INSERT INTO patients ({PATIENT_COLUMNS}) VALUES
          (3, 'RBA-1', 'Sara', 'Bennani', '1999-09-09', NULL, '+212612345678', NULL, NULL, NULL,
           NULL, NULL, 'Morocco', NULL, NULL, NULL, 'ar', NULL, '2025-01-01Z')
    """,
    ),
]

# Tenant isolation: a row of entity %(e)s in each tenant table (%(k)s a unique key, %(n)s a
# unique number), and a column every row leaves writable.
TENANT_ROWS = {
    "patients": "INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name,"
    " date_of_birth, country) VALUES (%(e)s, %(k)s, 'Ana', 'Roy', '1980-01-01', 'Canada')",
}
TENANT_SETUP: dict[str, str] = {}
WRITABLE = {"patients": "first_name"}
