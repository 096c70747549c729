BEGIN;
DO $$
            DECLARE
                found bigint := (SELECT count(*) FROM (SELECT healthcare_entity_id AS entity, lower(btrim(email)) AS email, array_agg(id ORDER BY id) AS ids FROM users GROUP BY healthcare_entity_id, lower(btrim(email)) HAVING count(*) > 1) AS d);
            BEGIN
                IF found > 0 THEN
                    RAISE EXCEPTION 'user: version 2 refused: % emails are used more than once within an entity, ignoring case and spaces; merge or correct them, then run ''up'' again', found;
                END IF;
            END
            $$;
COMMIT;
DO $$
            BEGIN
                IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE c.relname = 'users_entity_email_ci_key' AND NOT i.indisvalid) THEN
                    RAISE NOTICE 'dropping invalid index users_entity_email_ci_key left by an earlier attempt';
                    EXECUTE 'DROP INDEX IF EXISTS users_entity_email_ci_key';
                END IF;
            END
            $$;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_entity_email_ci_key ON users (healthcare_entity_id, lower(btrim(email)));
BEGIN;
COMMIT;
DROP INDEX CONCURRENTLY IF EXISTS idx_users_email;
BEGIN;
UPDATE public.alembic_version SET version_num='0002' WHERE public.alembic_version.version_num = '0001';
INSERT INTO public.schema_migrations (version, description) VALUES (2, 'Make users'' email unique within an entity ignoring case and spaces; tenant-first lookup');
COMMIT;
