BEGIN;
DROP TRIGGER IF EXISTS patients_fill_phone_international ON patients;
ALTER TABLE patients RENAME COLUMN phone TO phone_original;
ALTER TABLE patients RENAME COLUMN phone_international TO phone;
UPDATE public.alembic_version SET version_num='0005' WHERE public.alembic_version.version_num = '0004';
INSERT INTO public.schema_migrations (version, description) VALUES (5, 'Swap in the international phone numbers');
COMMIT;
