"""Demo data: appointments between the demo patients (3001-3008) and doctors (2001-2007)."""

schema_version = 1
tables = ["appointments"]
statements = [
    """
    INSERT INTO appointments
        (id, healthcare_entity_id, patient_id, provider_id, starts_at, ends_at, status, reason)
    VALUES
        (4001, 1001, 3001, 2001, '2026-12-01 09:00-05', '2026-12-01 09:30-05', 'scheduled', 'Bilan annuel'),
        (4002, 1001, 3002, 2001, '2026-12-01 09:30-05', '2026-12-01 10:00-05', 'confirmed', 'Vaccination'),
        (4003, 1002, 3003, 2003, '2026-12-02 14:00-05', '2026-12-02 14:45-05', 'scheduled', 'Follow-up'),
        (4004, 1003, 3005, 2005, '2026-12-03 10:00+01', '2026-12-03 10:30+01', 'confirmed', 'Consultation'),
        (4005, 1004, 3007, 2007, '2026-12-04 08:30+01', '2026-12-04 09:00+01', 'completed', 'Contrôle'),
        (4006, 1004, 3008, 2007, '2026-12-04 09:00+01', '2026-12-04 09:20+01', 'cancelled', 'Résultats')
    ON CONFLICT DO NOTHING
    """,
]
