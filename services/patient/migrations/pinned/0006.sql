BEGIN;
DO $migrate$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'v' AND pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE 'migrate: version schema of the patient service%'
    LOOP
        EXECUTE format('DROP VIEW IF EXISTS %I.%I CASCADE', found.nspname, found.relname);
    END LOOP;
END
$migrate$;
DO $$
            DECLARE
                found bigint := (SELECT count(*) FROM patients WHERE patient_country_canonical(country) IS NULL);
            BEGIN
                IF found > 0 THEN
                    RAISE EXCEPTION 'patient: version 6 refused: % patients have a country that is none of Canada, USA, France, Morocco in any known spelling; correct those rows, then run ''up'' again', found;
                END IF;
            END
            $$;
ALTER TABLE patients ADD COLUMN IF NOT EXISTS country_original TEXT;
CREATE OR REPLACE FUNCTION patients_normalise_country() RETURNS trigger
        LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        DECLARE
            canonical TEXT := patient_country_canonical(NEW.country);
        BEGIN
            IF canonical IS NOT NULL AND canonical <> NEW.country THEN
                NEW.country_original := NEW.country;
                NEW.country := canonical;
            END IF;
            RETURN NEW;
        END
        $$;
CREATE OR REPLACE TRIGGER patients_normalise_country BEFORE INSERT OR UPDATE ON patients FOR EACH ROW EXECUTE FUNCTION patients_normalise_country();
DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                           WHERE conrelid = 'patients'::regclass
                             AND conname = 'patients_country_check') THEN
                ALTER TABLE patients ADD CONSTRAINT patients_country_check
                    CHECK (country IN ('Canada', 'USA', 'France', 'Morocco')) NOT VALID;
            END IF;
        END
        $$;
DO $migrate$
DECLARE
    spec jsonb := '{"marker": "migrate: version schema of the patient service%", "schema": "public", "schemas": {"patient_v5": {"comment": "migrate: version schema of the patient service, contract 5 (applied)", "hide": {"patients": ["phone_original"]}}}, "skip": ["alembic_version", "schema_migrations"]}';
    target record;
    rel record;
    acl record;
    columns text;
    body text;
BEGIN
    FOR target IN
        SELECT n.nspname FROM pg_catalog.pg_namespace n
        WHERE pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE spec ->> 'marker'
          AND NOT (spec -> 'schemas') ? n.nspname
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', target.nspname);
    END LOOP;
    FOR target IN SELECT key AS name, value AS v FROM jsonb_each(spec -> 'schemas') LOOP
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', target.name);
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', target.name, target.v ->> 'comment');
        FOR rel IN
            SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(target.name) AND c.relkind = 'v'
              AND pg_catalog.to_regclass(pg_catalog.format('%I.%I', spec ->> 'schema', c.relname)) IS NULL
        LOOP
            EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
        END LOOP;
        FOR rel IN
            SELECT c.oid, c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(spec ->> 'schema')
              AND c.relkind IN ('r', 'p') AND NOT (spec -> 'skip') ? c.relname
              AND c.relname NOT LIKE '\_migrate\_%'
            ORDER BY c.relname
        LOOP
            SELECT pg_catalog.string_agg(pg_catalog.format('%I AS %I', x.attname, x.shown), ', '
                                         ORDER BY x.attnum)
            INTO columns
            FROM (SELECT a.attname, a.attnum,
                         coalesce(target.v #>> ARRAY['rename', rel.relname, a.attname], a.attname) AS shown
                  FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped) x
            WHERE NOT coalesce(target.v #> ARRAY['hide', rel.relname], '[]') ? x.shown;
            body := format('VIEW %I.%I WITH (security_invoker = true) AS SELECT %s FROM %I.%I',
                           target.name, rel.relname, columns, spec ->> 'schema', rel.relname);
            BEGIN
                EXECUTE 'CREATE OR REPLACE ' || body;
            EXCEPTION WHEN invalid_table_definition THEN
                -- a column left or changed its type: the view is made again
                EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
                EXECUTE 'CREATE ' || body;
            END;
            -- The view's grants are its table's (and, security_invoker, so is its RLS).
            FOR acl IN
                SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
                WHERE v.oid = pg_catalog.format('%I.%I', target.name, rel.relname)::pg_catalog.regclass
                  AND a.grantee <> v.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %I.%I FROM %s', target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
            FOR acl IN
                SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_class t, pg_catalog.aclexplode(t.relacl) a
                WHERE t.oid = rel.oid AND a.grantee <> t.relowner
            LOOP
                EXECUTE format('GRANT %s ON %I.%I TO %s', acl.privilege_type, target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
        END LOOP;
        -- USAGE on the schema for exactly those who hold a grant on one of its views.
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
            WHERE n.oid = pg_catalog.to_regnamespace(target.name) AND a.grantee <> n.nspowner
        LOOP
            EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
            WHERE v.relnamespace = pg_catalog.to_regnamespace(target.name) AND a.grantee <> v.relowner
        LOOP
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
    END LOOP;
END
$migrate$;
COMMIT;
CREATE TABLE IF NOT EXISTS _migrate_backfill (
    name TEXT PRIMARY KEY,
    next_key BIGINT NOT NULL,
    rows_done BIGINT NOT NULL DEFAULT 0,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
WITH batch AS (
            UPDATE patients SET country_original = country, country = patient_country_canonical(country)
            WHERE id >= 0 AND id < 1000 AND (country <> patient_country_canonical(country))
            RETURNING 1
        )
        INSERT INTO _migrate_backfill (name, next_key, rows_done)
        VALUES ('0006:patients.country', 1000, (SELECT count(*) FROM batch))
        ON CONFLICT (name) DO UPDATE
            SET next_key = EXCLUDED.next_key,
                rows_done = _migrate_backfill.rows_done + EXCLUDED.rows_done,
                updated_at = now()
        RETURNING rows_done;
BEGIN;
DO $migrate$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'v' AND pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE 'migrate: version schema of the patient service%'
    LOOP
        EXECUTE format('DROP VIEW IF EXISTS %I.%I CASCADE', found.nspname, found.relname);
    END LOOP;
END
$migrate$;
DO $migrate$
DECLARE
    spec jsonb := '{"marker": "migrate: version schema of the patient service%", "schema": "public", "schemas": {"patient_v5": {"comment": "migrate: version schema of the patient service, contract 5 (applied)", "hide": {"patients": ["phone_original"]}}}, "skip": ["alembic_version", "schema_migrations"]}';
    target record;
    rel record;
    acl record;
    columns text;
    body text;
BEGIN
    FOR target IN
        SELECT n.nspname FROM pg_catalog.pg_namespace n
        WHERE pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE spec ->> 'marker'
          AND NOT (spec -> 'schemas') ? n.nspname
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', target.nspname);
    END LOOP;
    FOR target IN SELECT key AS name, value AS v FROM jsonb_each(spec -> 'schemas') LOOP
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', target.name);
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', target.name, target.v ->> 'comment');
        FOR rel IN
            SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(target.name) AND c.relkind = 'v'
              AND pg_catalog.to_regclass(pg_catalog.format('%I.%I', spec ->> 'schema', c.relname)) IS NULL
        LOOP
            EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
        END LOOP;
        FOR rel IN
            SELECT c.oid, c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(spec ->> 'schema')
              AND c.relkind IN ('r', 'p') AND NOT (spec -> 'skip') ? c.relname
              AND c.relname NOT LIKE '\_migrate\_%'
            ORDER BY c.relname
        LOOP
            SELECT pg_catalog.string_agg(pg_catalog.format('%I AS %I', x.attname, x.shown), ', '
                                         ORDER BY x.attnum)
            INTO columns
            FROM (SELECT a.attname, a.attnum,
                         coalesce(target.v #>> ARRAY['rename', rel.relname, a.attname], a.attname) AS shown
                  FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped) x
            WHERE NOT coalesce(target.v #> ARRAY['hide', rel.relname], '[]') ? x.shown;
            body := format('VIEW %I.%I WITH (security_invoker = true) AS SELECT %s FROM %I.%I',
                           target.name, rel.relname, columns, spec ->> 'schema', rel.relname);
            BEGIN
                EXECUTE 'CREATE OR REPLACE ' || body;
            EXCEPTION WHEN invalid_table_definition THEN
                -- a column left or changed its type: the view is made again
                EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
                EXECUTE 'CREATE ' || body;
            END;
            -- The view's grants are its table's (and, security_invoker, so is its RLS).
            FOR acl IN
                SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
                WHERE v.oid = pg_catalog.format('%I.%I', target.name, rel.relname)::pg_catalog.regclass
                  AND a.grantee <> v.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %I.%I FROM %s', target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
            FOR acl IN
                SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_class t, pg_catalog.aclexplode(t.relacl) a
                WHERE t.oid = rel.oid AND a.grantee <> t.relowner
            LOOP
                EXECUTE format('GRANT %s ON %I.%I TO %s', acl.privilege_type, target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
        END LOOP;
        -- USAGE on the schema for exactly those who hold a grant on one of its views.
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
            WHERE n.oid = pg_catalog.to_regnamespace(target.name) AND a.grantee <> n.nspowner
        LOOP
            EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
            WHERE v.relnamespace = pg_catalog.to_regnamespace(target.name) AND a.grantee <> v.relowner
        LOOP
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
    END LOOP;
END
$migrate$;
COMMIT;
BEGIN;
ALTER TABLE patients VALIDATE CONSTRAINT patients_country_check;
COMMIT;
BEGIN;
DO $migrate$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'v' AND pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE 'migrate: version schema of the patient service%'
    LOOP
        EXECUTE format('DROP VIEW IF EXISTS %I.%I CASCADE', found.nspname, found.relname);
    END LOOP;
END
$migrate$;
UPDATE public.alembic_version SET version_num='0006' WHERE public.alembic_version.version_num = '0005';
INSERT INTO public.schema_migrations (version, description) VALUES (6, 'Normalise patients'' countries to Canada, USA, France or Morocco and check them');
DO $migrate$
DECLARE
    spec jsonb := '{"marker": "migrate: version schema of the patient service%", "schema": "public", "schemas": {"patient_v5": {"comment": "migrate: version schema of the patient service, contract 5 (applied)", "hide": {"patients": ["phone_original"]}}}, "skip": ["alembic_version", "schema_migrations"]}';
    target record;
    rel record;
    acl record;
    columns text;
    body text;
BEGIN
    FOR target IN
        SELECT n.nspname FROM pg_catalog.pg_namespace n
        WHERE pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE spec ->> 'marker'
          AND NOT (spec -> 'schemas') ? n.nspname
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', target.nspname);
    END LOOP;
    FOR target IN SELECT key AS name, value AS v FROM jsonb_each(spec -> 'schemas') LOOP
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', target.name);
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', target.name, target.v ->> 'comment');
        FOR rel IN
            SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(target.name) AND c.relkind = 'v'
              AND pg_catalog.to_regclass(pg_catalog.format('%I.%I', spec ->> 'schema', c.relname)) IS NULL
        LOOP
            EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
        END LOOP;
        FOR rel IN
            SELECT c.oid, c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(spec ->> 'schema')
              AND c.relkind IN ('r', 'p') AND NOT (spec -> 'skip') ? c.relname
              AND c.relname NOT LIKE '\_migrate\_%'
            ORDER BY c.relname
        LOOP
            SELECT pg_catalog.string_agg(pg_catalog.format('%I AS %I', x.attname, x.shown), ', '
                                         ORDER BY x.attnum)
            INTO columns
            FROM (SELECT a.attname, a.attnum,
                         coalesce(target.v #>> ARRAY['rename', rel.relname, a.attname], a.attname) AS shown
                  FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped) x
            WHERE NOT coalesce(target.v #> ARRAY['hide', rel.relname], '[]') ? x.shown;
            body := format('VIEW %I.%I WITH (security_invoker = true) AS SELECT %s FROM %I.%I',
                           target.name, rel.relname, columns, spec ->> 'schema', rel.relname);
            BEGIN
                EXECUTE 'CREATE OR REPLACE ' || body;
            EXCEPTION WHEN invalid_table_definition THEN
                -- a column left or changed its type: the view is made again
                EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
                EXECUTE 'CREATE ' || body;
            END;
            -- The view's grants are its table's (and, security_invoker, so is its RLS).
            FOR acl IN
                SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
                WHERE v.oid = pg_catalog.format('%I.%I', target.name, rel.relname)::pg_catalog.regclass
                  AND a.grantee <> v.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %I.%I FROM %s', target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
            FOR acl IN
                SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_class t, pg_catalog.aclexplode(t.relacl) a
                WHERE t.oid = rel.oid AND a.grantee <> t.relowner
            LOOP
                EXECUTE format('GRANT %s ON %I.%I TO %s', acl.privilege_type, target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
        END LOOP;
        -- USAGE on the schema for exactly those who hold a grant on one of its views.
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
            WHERE n.oid = pg_catalog.to_regnamespace(target.name) AND a.grantee <> n.nspowner
        LOOP
            EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
            WHERE v.relnamespace = pg_catalog.to_regnamespace(target.name) AND a.grantee <> v.relowner
        LOOP
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
    END LOOP;
END
$migrate$;
COMMIT;
