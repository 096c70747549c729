BEGIN;
ALTER TABLE patients ADD COLUMN IF NOT EXISTS phone_international TEXT;
CREATE OR REPLACE FUNCTION patient_phone_international(phone TEXT, country TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT CASE WHEN phone IS NULL OR btrim(phone) = '' THEN phone WHEN btrim(phone) LIKE '+%' THEN '+' || regexp_replace(phone, '[^0-9]', '', 'g') WHEN country = 'Canada' THEN '+1' || regexp_replace(regexp_replace(phone, '[^0-9]', '', 'g'), '^(001|1(?=[0-9]{10}$))', '') WHEN country = 'USA' THEN '+1' || regexp_replace(regexp_replace(phone, '[^0-9]', '', 'g'), '^(001|1(?=[0-9]{10}$))', '') WHEN country = 'Morocco' THEN '+212' || regexp_replace(regexp_replace(phone, '[^0-9]', '', 'g'), '^(00212|212|0)', '') WHEN country = 'France' THEN '+33' || regexp_replace(regexp_replace(phone, '[^0-9]', '', 'g'), '^(0033|33|0)', '') ELSE phone END $$;
CREATE OR REPLACE FUNCTION patient_phone_national(phone TEXT, country TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT CASE WHEN phone IS NULL OR phone NOT LIKE '+%' THEN phone WHEN country = 'Canada' AND phone LIKE '+1%' THEN substr(phone, 3) WHEN country = 'USA' AND phone LIKE '+1%' THEN substr(phone, 3) WHEN country = 'Morocco' AND phone LIKE '+212%' THEN '0' || substr(phone, 5) WHEN country = 'France' AND phone LIKE '+33%' THEN '0' || substr(phone, 4) ELSE phone END $$;
CREATE OR REPLACE FUNCTION patients_fill_phone_international() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.phone_international := patient_phone_international(NEW.phone, NEW.country);
            RETURN NEW;
        END
        $$;
CREATE OR REPLACE TRIGGER patients_fill_phone_international BEFORE INSERT OR UPDATE OF phone, country ON patients FOR EACH ROW EXECUTE FUNCTION patients_fill_phone_international();
COMMIT;
CREATE TABLE IF NOT EXISTS _migrate_backfill (
    name TEXT PRIMARY KEY,
    next_key BIGINT NOT NULL,
    rows_done BIGINT NOT NULL DEFAULT 0,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
WITH batch AS (
            UPDATE patients SET phone_international = patient_phone_international(phone, country)
            WHERE id >= 0 AND id < 1000 AND (phone_international IS NULL AND phone IS NOT NULL)
            RETURNING 1
        )
        INSERT INTO _migrate_backfill (name, next_key, rows_done)
        VALUES ('base:patients', 1000, (SELECT count(*) FROM batch))
        ON CONFLICT (name) DO UPDATE
            SET next_key = EXCLUDED.next_key,
                rows_done = _migrate_backfill.rows_done + EXCLUDED.rows_done,
                updated_at = now()
        RETURNING rows_done;
BEGIN;
UPDATE public.alembic_version SET version_num='0004' WHERE public.alembic_version.version_num = '0003';
INSERT INTO public.schema_migrations (version, description) VALUES (4, 'Add phone_international, filled by a trigger and a batched backfill');
COMMIT;
