BEGIN;
DO $$
            DECLARE
                found bigint := (SELECT count(*) FROM patients WHERE date_of_birth > current_date);
            BEGIN
                IF found > 0 THEN
                    RAISE EXCEPTION 'patient: version 8 refused: % patients have a date of birth in the future; correct them, then run ''up'' again', found;
                END IF;
            END
            $$;
ALTER TABLE patients ADD CONSTRAINT patients_date_of_birth_check CHECK (date_of_birth <= current_date) NOT VALID;
COMMIT;
BEGIN;
ALTER TABLE patients VALIDATE CONSTRAINT patients_date_of_birth_check;
COMMIT;
BEGIN;
UPDATE public.alembic_version SET version_num='0008' WHERE public.alembic_version.version_num = '0007';
INSERT INTO public.schema_migrations (version, description) VALUES (8, 'Refuse dates of birth in the future');
COMMIT;
