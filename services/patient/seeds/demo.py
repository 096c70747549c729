"""Demo data: two patients per demo entity, with that country's phone format, address and
language. Written for schema version 4 (international phone numbers).

healthcare_entity_id refers to the user service's demo entities 1001-1004.
"""

schema_version = 4
tables = ["patients"]
statements = [
    """
    INSERT INTO patients
        (id, healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, gender,
         phone, email, address, city, province_state, postal_code, country,
         emergency_contact_name, emergency_contact_phone, emergency_contact_relationship,
         blood_type, preferred_language, marital_status)
    VALUES
        (3001, 1001, 'SP-0001', 'Élodie', 'Tremblay', '1985-04-12', 'female',
         '+15145550143', 'elodie.t@example.ca', '1200 avenue du Mont-Royal Est', 'Montréal', 'QC',
         'H2J 1Y4', 'Canada', 'Marc Tremblay', '+15145550144', 'spouse', 'O+', 'fr', 'married'),
        (3002, 1001, 'SP-0002', 'Liam', 'Wilson', '1992-09-30', 'male',
         '+14385550177', NULL, '88 rue Sherbrooke Ouest', 'Montréal', 'QC',
         'H2X 1X3', 'Canada', NULL, NULL, NULL, 'A-', 'en', 'single'),
        (3003, 1002, 'BFH-0001', 'Olivia', 'Johnson', '1978-01-22', 'female',
         '+17185550188', 'olivia.j@example.com', '455 Court St', 'Brooklyn', 'NY',
         '11231', 'USA', 'Noah Johnson', '+17185550189', 'son', 'B+', 'en', 'divorced'),
        (3004, 1002, 'BFH-0002', 'Mateo', 'Garcia', '2001-06-05', 'male',
         '+13475550122', NULL, '77 Smith St', 'Brooklyn', 'NY',
         '11201', 'USA', NULL, NULL, NULL, '', 'es', ''),
        (3005, 1003, 'ATL-0001', 'Salma', 'El Idrissi', '1990-03-18', 'female',
         '+212612345678', 'salma.e@example.ma', '25 Rue Ibn Batouta', 'Casablanca', 'Casablanca-Settat',
         '20250', 'Morocco', 'Karim El Idrissi', '+212661234567', 'brother', 'AB+', 'ar', 'married'),
        (3006, 1003, 'ATL-0002', 'Mehdi', 'Tazi', '1969-11-02', 'male',
         '+212522334455', NULL, '9 Avenue Hassan II', 'Casablanca', 'Casablanca-Settat',
         '20000', 'Morocco', NULL, NULL, NULL, 'Rh-null', 'fr', 'widowed'),
        (3007, 1004, 'HL-0001', 'Chloé', 'Dubois', '1988-12-24', 'female',
         '+33612345678', 'chloe.d@example.fr', '14 rue de la République', 'Lyon', 'Auvergne-Rhône-Alpes',
         '69002', 'France', 'Julien Dubois', '+33698765432', 'partner', 'O-', 'fr', 'separated'),
        (3008, 1004, 'HL-0002', 'Lucas', 'Moreau', '1955-07-14', 'male',
         '+33478123456', NULL, '5 place Bellecour', 'Lyon', 'Auvergne-Rhône-Alpes',
         '69002', 'France', NULL, NULL, NULL, NULL, 'fr', NULL)
    ON CONFLICT DO NOTHING
    """,
]
