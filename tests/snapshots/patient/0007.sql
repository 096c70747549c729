BEGIN;
DO $$
            DECLARE
                found bigint := (SELECT count(*) FROM (SELECT healthcare_entity_id AS entity, lower(btrim(patient_id)) AS code, array_agg(id ORDER BY id) AS ids FROM patients GROUP BY healthcare_entity_id, lower(btrim(patient_id)) HAVING count(*) > 1) AS d);
            BEGIN
                IF found > 0 THEN
                    RAISE EXCEPTION 'patient: version 7 refused: % patient codes are used more than once within an entity, ignoring case and spaces; merge or rename them, then run ''up'' again', found;
                END IF;
            END
            $$;
COMMIT;
DO $$
            BEGIN
                IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE c.relname = 'patients_entity_patient_id_ci_key' AND NOT i.indisvalid) THEN
                    RAISE NOTICE 'dropping invalid index patients_entity_patient_id_ci_key left by an earlier attempt';
                    EXECUTE 'DROP INDEX IF EXISTS patients_entity_patient_id_ci_key';
                END IF;
            END
            $$;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS patients_entity_patient_id_ci_key ON patients (healthcare_entity_id, lower(btrim(patient_id)));
BEGIN;
COMMIT;
DO $$
            BEGIN
                IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE c.relname = 'idx_patients_entity_email' AND NOT i.indisvalid) THEN
                    RAISE NOTICE 'dropping invalid index idx_patients_entity_email left by an earlier attempt';
                    EXECUTE 'DROP INDEX IF EXISTS idx_patients_entity_email';
                END IF;
            END
            $$;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_patients_entity_email ON patients (healthcare_entity_id, email);
BEGIN;
COMMIT;
DROP INDEX CONCURRENTLY IF EXISTS idx_patients_email;
BEGIN;
UPDATE public.alembic_version SET version_num='0007' WHERE public.alembic_version.version_num = '0006';
INSERT INTO public.schema_migrations (version, description) VALUES (7, 'Make patient_id unique within an entity ignoring case and spaces; tenant-first email index');
COMMIT;
