"""Rows each service's schema accepts from a given version on, for data-bearing round trips.

Phones are written E.164 here: from patient version 5 on, phone holds nothing else (national
spellings are covered by tests/test_phones.py, test_schemas.py and test_clinical.py)."""

from __future__ import annotations

PATIENT_COLUMNS = (
    "healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, gender, phone, email,"
    " address, city, province_state, postal_code, country, emergency_contact_name,"
    " emergency_contact_phone, blood_type, preferred_language, marital_status, updated_at"
)

SAMPLES: dict[str, list[tuple[int, str]]] = {
    "user": [
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
    ],
    "patient": [
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
    ],
    "appointment": [
        (
            1,
            """
            INSERT INTO appointments (healthcare_entity_id, patient_id, provider_id, starts_at, ends_at, status, reason, updated_at) VALUES
              (1, 1, 10, '2026-12-01 09:00Z', '2026-12-01 09:30Z', 'scheduled', 'check-up', '2025-01-01Z'),
              (1, 2, 10, '2026-12-01 09:30Z', '2026-12-01 10:00Z', 'confirmed', NULL, '2025-01-01Z'),
              (3, 3, 30, '2026-12-01 09:00Z', '2026-12-01 09:45Z', 'cancelled', 'fever', '2025-01-01Z');
        """,
        ),
    ],
}
