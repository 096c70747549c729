BEGIN;
ALTER TABLE patients ADD COLUMN emergency_contact_address TEXT;
UPDATE public.alembic_version SET version_num='0002' WHERE public.alembic_version.version_num = '0001';
INSERT INTO public.schema_migrations (version, description) VALUES (2, 'Add emergency_contact_address to patients');
COMMIT;
