BEGIN;
DO $migrate$
BEGIN
    BEGIN
        CREATE ROLE user_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- made before, or meanwhile by a run on another database of this server
    END;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'user_app'
               AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role user_app exists with SUPERUSER or BYPASSRLS: '
            'it would see every entity''s rows'
            USING HINT = 'ALTER ROLE user_app NOSUPERUSER NOBYPASSRLS, then run ''up'' again';
    END IF;
END
$migrate$;
DO $migrate$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'platform_operator') THEN
        BEGIN
            CREATE ROLE platform_operator NOLOGIN BYPASSRLS;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- made meanwhile by a run on another database
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'migrate: operator role platform_operator not created: % may not create a '
                    'BYPASSRLS role (a superuser may); README "Tenant isolation" has the '
                    'one-time manual step', current_user;
        END;
    END IF;
END
$migrate$;
ALTER TABLE healthcare_entities ENABLE ROW LEVEL SECURITY;
ALTER TABLE healthcare_entities FORCE ROW LEVEL SECURITY;
CREATE POLICY healthcare_entities_tenant ON healthcare_entities AS PERMISSIVE FOR SELECT TO PUBLIC USING (id = nullif(current_setting('app.healthcare_entity_id', true), '')::bigint);
CREATE POLICY healthcare_entities_owner ON healthcare_entities AS PERMISSIVE FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true);
GRANT SELECT ON healthcare_entities TO user_app;
DO $migrate$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'platform_operator') THEN
        GRANT SELECT ON healthcare_entities TO platform_operator;
    END IF;
END
$migrate$;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_tenant ON users AS PERMISSIVE FOR ALL TO PUBLIC USING (healthcare_entity_id = nullif(current_setting('app.healthcare_entity_id', true), '')::bigint) WITH CHECK (healthcare_entity_id = nullif(current_setting('app.healthcare_entity_id', true), '')::bigint);
CREATE POLICY users_owner ON users AS PERMISSIVE FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON users TO user_app;
DO $migrate$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT d.objid::pg_catalog.regclass AS seq FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.refobjid = 'users'::pg_catalog.regclass AND d.deptype IN ('a', 'i')
    LOOP
        EXECUTE pg_catalog.format('GRANT USAGE ON SEQUENCE %s TO user_app', found.seq);
    END LOOP;
END
$migrate$;
DO $migrate$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'platform_operator') THEN
        GRANT SELECT ON users TO platform_operator;
    END IF;
END
$migrate$;
UPDATE public.alembic_version SET version_num='0003' WHERE public.alembic_version.version_num = '0002';
INSERT INTO public.schema_migrations (version, description) VALUES (3, 'Isolate tenants by the database: row-level security on users and entities, user_app role');
COMMIT;
