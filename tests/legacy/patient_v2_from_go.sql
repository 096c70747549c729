-- A patient database exactly as the previous (Go) migration system left it at version 2:
-- its own schema_migrations table (the seed's three columns), no alembic_version, the
-- schema versions 1 and 2 made (seed example 1 included its index), and some data.
CREATE TABLE schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE patients (
    id SERIAL PRIMARY KEY,
    healthcare_entity_id INTEGER NOT NULL,
    patient_id VARCHAR(50) NOT NULL,
    first_name VARCHAR(100) NOT NULL,
    last_name VARCHAR(100) NOT NULL,
    date_of_birth DATE NOT NULL,
    gender VARCHAR(20),
    phone VARCHAR(20),
    email VARCHAR(255),
    address TEXT,
    city VARCHAR(100),
    province_state VARCHAR(100),
    postal_code VARCHAR(20),
    country VARCHAR(100) NOT NULL,
    emergency_contact_name VARCHAR(200),
    emergency_contact_phone VARCHAR(20),
    emergency_contact_relationship VARCHAR(50),
    blood_type VARCHAR(10),
    preferred_language VARCHAR(10),
    marital_status VARCHAR(20),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT patients_healthcare_entity_id_patient_id_key UNIQUE (healthcare_entity_id, patient_id),
    CONSTRAINT patients_blood_type_check CHECK (blood_type IS NULL OR blood_type = '' OR
        blood_type IN ('A+', 'A-', 'B+', 'B-', 'AB+', 'AB-', 'O+', 'O-')),
    CONSTRAINT patients_preferred_language_check CHECK (preferred_language IS NULL OR
        preferred_language = '' OR preferred_language IN ('en', 'fr', 'ar', 'es')),
    CONSTRAINT patients_marital_status_check CHECK (marital_status IS NULL OR marital_status = '' OR
        marital_status IN ('single', 'married', 'divorced', 'widowed', 'separated', 'other'))
);
CREATE INDEX idx_patients_healthcare_entity_id ON patients(healthcare_entity_id);

CREATE OR REPLACE FUNCTION update_updated_at_column() RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = CURRENT_TIMESTAMP;
    RETURN NEW;
END;
$$ language 'plpgsql';
CREATE TRIGGER update_patients_updated_at BEFORE UPDATE ON patients
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

ALTER TABLE patients ADD COLUMN emergency_contact_address TEXT;
CREATE INDEX IF NOT EXISTS idx_patients_emergency_address ON patients(emergency_contact_address);

INSERT INTO schema_migrations (version, description, applied_at) VALUES
    (1, 'Create patients table with multi-tenant support', '2024-01-15 09:30:00'),
    (2, 'Add emergency_contact_address to patients', '2024-06-02 14:05:00');

INSERT INTO patients (healthcare_entity_id, patient_id, first_name, last_name, date_of_birth, phone, country)
VALUES
    (1, 'MTL-0001', 'Amélie', 'Tremblay', '1984-03-02', '(514) 555-0143', 'Canada'),
    (2, 'NYC-0001', 'John', 'Miller', '1979-11-20', '212-555-0187', 'USA'),
    (3, 'CAS-0001', 'Youssef', 'El Amrani', '1991-07-14', '06 61 23 45 67', 'Morocco'),
    (4, 'PAR-0001', 'Claire', 'Dubois', '1966-01-30', '01 42 68 53 00', 'France');
