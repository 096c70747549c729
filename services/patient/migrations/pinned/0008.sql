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
                found bigint := (SELECT count(*) FROM patients WHERE date_of_birth > current_date);
            BEGIN
                IF found > 0 THEN
                    RAISE EXCEPTION 'patient: version 8 refused: % patients have a date of birth in the future; correct them, then run ''up'' again', found;
                END IF;
            END
            $$;
DO $migrate$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = 'patients'::regclass AND conname = 'patients_date_of_birth_check') THEN ALTER TABLE patients ADD CONSTRAINT patients_date_of_birth_check CHECK (date_of_birth <= current_date) NOT VALID; END IF; END $migrate$;
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
ALTER TABLE patients VALIDATE CONSTRAINT patients_date_of_birth_check;
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
UPDATE public.alembic_version SET version_num='0008' WHERE public.alembic_version.version_num = '0007';
INSERT INTO public.schema_migrations (version, description) VALUES (8, 'Refuse dates of birth in the future');
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
