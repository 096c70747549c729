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
DO $install$
BEGIN
    IF current_setting('server_version_num')::int >= 180000 THEN
        EXECUTE 'CREATE OR REPLACE FUNCTION identity_fold(value text) RETURNS text'
            ' LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE'
            ' RETURN casefold(value COLLATE pg_unicode_fast)';
    ELSIF EXISTS (SELECT FROM pg_collation WHERE collname = 'und-x-icu') THEN
        EXECUTE 'CREATE OR REPLACE FUNCTION identity_fold(value text) RETURNS text'
            ' LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE'
            ' RETURN lower(value COLLATE "und-x-icu")';
    ELSE
        RAISE EXCEPTION 'identity_key needs PostgreSQL 18 or later, or a server built with ICU'
            USING HINT = 'this server has neither casefold() nor the und-x-icu collation';
    END IF;
END
$install$;
CREATE OR REPLACE FUNCTION identity_key_slow(value text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    n text := normalize(value, NFKC);
BEGIN
    IF current_setting('server_version_num')::int >= 180000 THEN
        n := casefold(n COLLATE pg_unicode_fast);
    ELSE  -- ICU's full lowercase, then where case folding differs from it
        n := lower(n COLLATE "und-x-icu");
        IF n ~ '[µßŉſǰͅΐΰςϐϑϕϖϰϱϵևᏸᏹᏺᏻᏼᏽᲀᲁᲂᲃᲄᲅᲆᲇᲈẖẗẘẙẚẛὐὒὔὖᾀᾁᾂᾃᾄᾅᾆᾇᾐᾑᾒᾓᾔᾕᾖᾗᾠᾡᾢᾣᾤᾥᾦᾧᾲᾳᾴᾶᾷιῂῃῄῆῇῒΐῖῗῢΰῤῦῧῲῳῴῶῷꭰꭱꭲꭳꭴꭵꭶꭷꭸꭹꭺꭻꭼꭽꭾꭿꮀꮁꮂꮃꮄꮅꮆꮇꮈꮉꮊꮋꮌꮍꮎꮏꮐꮑꮒꮓꮔꮕꮖꮗꮘꮙꮚꮛꮜꮝꮞꮟꮠꮡꮢꮣꮤꮥꮦꮧꮨꮩꮪꮫꮬꮭꮮꮯꮰꮱꮲꮳꮴꮵꮶꮷꮸꮹꮺꮻꮼꮽꮾꮿﬀﬁﬂﬃﬄﬅﬆﬓﬔﬕﬖﬗ]' THEN
            n := translate(n, 'µſͅςϐϑϕϖϰϱϵᏸᏹᏺᏻᏼᏽᲀᲁᲂᲃᲄᲅᲆᲇᲈẛιꭰꭱꭲꭳꭴꭵꭶꭷꭸꭹꭺꭻꭼꭽꭾꭿꮀꮁꮂꮃꮄꮅꮆꮇꮈꮉꮊꮋꮌꮍꮎꮏꮐꮑꮒꮓꮔꮕꮖꮗꮘꮙꮚꮛꮜꮝꮞꮟꮠꮡꮢꮣꮤꮥꮦꮧꮨꮩꮪꮫꮬꮭꮮꮯꮰꮱꮲꮳꮴꮵꮶꮷꮸꮹꮺꮻꮼꮽꮾꮿ',
                              'μsισβθφπκρεᏰᏱᏲᏳᏴᏵвдосттъѣꙋṡιᎠᎡᎢᎣᎤᎥᎦᎧᎨᎩᎪᎫᎬᎭᎮᎯᎰᎱᎲᎳᎴᎵᎶᎷᎸᎹᎺᎻᎼᎽᎾᎿᏀᏁᏂᏃᏄᏅᏆᏇᏈᏉᏊᏋᏌᏍᏎᏏᏐᏑᏒᏓᏔᏕᏖᏗᏘᏙᏚᏛᏜᏝᏞᏟᏠᏡᏢᏣᏤᏥᏦᏧᏨᏩᏪᏫᏬᏭᏮᏯ');
            n := replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(n, 'ß', 'ss'), 'ŉ', 'ʼn'), 'ǰ', 'ǰ'), 'ΐ', 'ΐ'), 'ΰ', 'ΰ'), 'և', 'եւ'), 'ẖ', 'ẖ'), 'ẗ', 'ẗ'), 'ẘ', 'ẘ'), 'ẙ', 'ẙ'), 'ẚ', 'aʾ'), 'ὐ', 'ὐ'), 'ὒ', 'ὒ'), 'ὔ', 'ὔ'), 'ὖ', 'ὖ'), 'ᾀ', 'ἀι'), 'ᾁ', 'ἁι'), 'ᾂ', 'ἂι'), 'ᾃ', 'ἃι'), 'ᾄ', 'ἄι'), 'ᾅ', 'ἅι'), 'ᾆ', 'ἆι'), 'ᾇ', 'ἇι'), 'ᾐ', 'ἠι'), 'ᾑ', 'ἡι'), 'ᾒ', 'ἢι'), 'ᾓ', 'ἣι'), 'ᾔ', 'ἤι'), 'ᾕ', 'ἥι'), 'ᾖ', 'ἦι'), 'ᾗ', 'ἧι'), 'ᾠ', 'ὠι'), 'ᾡ', 'ὡι'), 'ᾢ', 'ὢι'), 'ᾣ', 'ὣι'), 'ᾤ', 'ὤι'), 'ᾥ', 'ὥι'), 'ᾦ', 'ὦι'), 'ᾧ', 'ὧι'), 'ᾲ', 'ὰι'), 'ᾳ', 'αι'), 'ᾴ', 'άι'), 'ᾶ', 'ᾶ'), 'ᾷ', 'ᾶι'), 'ῂ', 'ὴι'), 'ῃ', 'ηι'), 'ῄ', 'ήι'), 'ῆ', 'ῆ'), 'ῇ', 'ῆι'), 'ῒ', 'ῒ'), 'ΐ', 'ΐ'), 'ῖ', 'ῖ'), 'ῗ', 'ῗ'), 'ῢ', 'ῢ'), 'ΰ', 'ΰ'), 'ῤ', 'ῤ'), 'ῦ', 'ῦ'), 'ῧ', 'ῧ'), 'ῲ', 'ὼι'), 'ῳ', 'ωι'), 'ῴ', 'ώι'), 'ῶ', 'ῶ'), 'ῷ', 'ῶι'), 'ﬀ', 'ff'), 'ﬁ', 'fi'), 'ﬂ', 'fl'), 'ﬃ', 'ffi'), 'ﬄ', 'ffl'), 'ﬅ', 'st'), 'ﬆ', 'st'), 'ﬓ', 'մն'), 'ﬔ', 'մե'), 'ﬕ', 'մի'), 'ﬖ', 'վն'), 'ﬗ', 'մխ');
        END IF;
    END IF;
    n := btrim(n, E'\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u1680\u2028\u2029');
    IF n ~ '[\u0009\u000a\u000b\u000c\u000d\u0085\u1680\u2028\u2029]|  ' THEN
        n := regexp_replace(n, '[\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u1680\u2028\u2029]+', ' ', 'g');
    END IF;
    RETURN n;
END
$fn$;
CREATE OR REPLACE FUNCTION identity_key(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN octet_length(value) = length(value) AND value COLLATE "C" !~ '[\t-\r]|  '
        THEN btrim(lower(value COLLATE "C"), ' ')
    WHEN value COLLATE "C" ~ '[\u0009-\u000d\u0085\u00a0\u00b5\u00df\u0149\u017f\u01f0\u0345\u0390\u03a3\u03b0\u03c2\u03d0-\u03d1\u03d5-\u03d6\u03f0-\u03f1\u03f5\u0587\u13a0-\u13f5\u13f8-\u13fd\u1680\u1c80-\u1c88\u1e96-\u1e9b\u1e9e\u1f50\u1f52\u1f54\u1f56\u1f80-\u1faf\u1fb2-\u1fb4\u1fb6-\u1fb7\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fc7\u1fcc\u1fd2-\u1fd3\u1fd6-\u1fd7\u1fe2-\u1fe4\u1fe6-\u1fe7\u1ff2-\u1ff4\u1ff6-\u1ff7\u1ffc\u2000-\u200a\u2028-\u2029\u202f\u205f\u3000\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17]|  '
        OR value IS NOT NFKC NORMALIZED THEN identity_key_slow(value)
    ELSE btrim(identity_fold(value), ' ')
END;
DO $$
            DECLARE
                found bigint := (SELECT count(*) FROM (SELECT healthcare_entity_id AS entity, array_agg(id ORDER BY id) AS ids FROM patients GROUP BY healthcare_entity_id, identity_key(patient_id) HAVING count(*) > 1) AS d);
            BEGIN
                IF found > 0 THEN
                    RAISE EXCEPTION 'patient: version 10 refused: % patient codes are the same identifier (Unicode NFKC, case folding, spaces) within an entity; merge the duplicates or correct one of each, then run the command again', found;
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
DO $$
            BEGIN
                IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE c.relname = 'patients_entity_patient_id_identity_key' AND NOT i.indisvalid) THEN
                    RAISE NOTICE 'dropping invalid index patients_entity_patient_id_identity_key left by an earlier attempt';
                    EXECUTE 'DROP INDEX IF EXISTS patients_entity_patient_id_identity_key';
                END IF;
            END
            $$;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS patients_entity_patient_id_identity_key ON patients (healthcare_entity_id, identity_key(patient_id));
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
DROP INDEX CONCURRENTLY IF EXISTS patients_entity_patient_id_ci_key;
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
UPDATE public.alembic_version SET version_num='0010' WHERE public.alembic_version.version_num = '0009';
INSERT INTO public.schema_migrations (version, description) VALUES (10, 'Make patient_id unique within an entity as the same identifier, whatever the locale');
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
