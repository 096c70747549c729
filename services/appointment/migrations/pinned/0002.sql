BEGIN;
COMMIT;
DO $$
            BEGIN
                IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE c.relname = 'idx_appointments_entity_patient' AND NOT i.indisvalid) THEN
                    RAISE NOTICE 'dropping invalid index idx_appointments_entity_patient left by an earlier attempt';
                    EXECUTE 'DROP INDEX IF EXISTS idx_appointments_entity_patient';
                END IF;
            END
            $$;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_appointments_entity_patient ON appointments (healthcare_entity_id, patient_id, starts_at);
BEGIN;
COMMIT;
DROP INDEX CONCURRENTLY IF EXISTS idx_appointments_patient;
BEGIN;
UPDATE public.alembic_version SET version_num='0002' WHERE public.alembic_version.version_num = '0001';
INSERT INTO public.schema_migrations (version, description) VALUES (2, 'Lead the patient lookup index with healthcare_entity_id');
COMMIT;
