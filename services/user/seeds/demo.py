"""Demo data: one healthcare entity per country (Canada, USA, Morocco, France) and its staff.

Fixed ids (entities 1001-1004, users 2001-2008) let the patient and appointment seeds
refer to them across databases, and make every insert idempotent.
"""

schema_version = 1
tables = ["healthcare_entities", "users"]
statements = [
    """
    INSERT INTO healthcare_entities
        (id, name, type, country, province_state, city, address, postal_code, phone, email)
    VALUES
        (1001, 'Clinique Santé Plateau', 'clinic', 'Canada', 'QC', 'Montréal',
         '4567 rue Saint-Denis', 'H2J 2L3', '+1 514-555-0101', 'accueil@sante-plateau.ca'),
        (1002, 'Brooklyn Family Health', 'clinic', 'USA', 'NY', 'Brooklyn',
         '210 Atlantic Ave', '11201', '+1 718-555-0102', 'frontdesk@bfh.example'),
        (1003, 'Clinique Atlas', 'clinic', 'Morocco', 'Casablanca-Settat', 'Casablanca',
         '12 Boulevard Zerktouni', '20250', '+212 522-555010', 'contact@clinique-atlas.ma'),
        (1004, 'Hôpital Lumière', 'hospital', 'France', 'Auvergne-Rhône-Alpes', 'Lyon',
         '3 quai Claude Bernard', '69007', '+33 4 72 55 01 04', 'contact@hopital-lumiere.fr')
    ON CONFLICT DO NOTHING
    """,
    """
    INSERT INTO users (id, healthcare_entity_id, email, password_hash, first_name, last_name, role)
    VALUES
        (2001, 1001, 'm.gagnon@sante-plateau.ca', '!demo', 'Marie', 'Gagnon', 'doctor'),
        (2002, 1001, 'l.roy@sante-plateau.ca', '!demo', 'Louis', 'Roy', 'receptionist'),
        (2003, 1002, 'j.carter@bfh.example', '!demo', 'James', 'Carter', 'doctor'),
        (2004, 1002, 'e.nguyen@bfh.example', '!demo', 'Emily', 'Nguyen', 'nurse'),
        (2005, 1003, 'y.alaoui@clinique-atlas.ma', '!demo', 'Youssef', 'Alaoui', 'doctor'),
        (2006, 1003, 'f.benali@clinique-atlas.ma', '!demo', 'Fatima', 'Benali', 'admin'),
        (2007, 1004, 'c.martin@hopital-lumiere.fr', '!demo', 'Camille', 'Martin', 'doctor'),
        (2008, 1004, 'h.bernard@hopital-lumiere.fr', '!demo', 'Hugo', 'Bernard', 'nurse')
    ON CONFLICT DO NOTHING
    """,
]
