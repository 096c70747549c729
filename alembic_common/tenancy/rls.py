"""Tenant isolation by the database: row-level security per healthcare entity, and roles.

Migrations call ``create_roles(service)`` once, then ``isolate(table, service)`` for every
table with ``healthcare_entity_id`` (``lint`` refuses a migration that adds such a table
without row-level security: rule ``tenant-table-without-rls``), and ``grant(table,
service, "SELECT")`` for shared lookup tables. Applications call ``set_entity(conn,
entity_id)`` once per connection, or per transaction with ``local=True``; with no entity
set, a session sees no rows at all (fail closed).

Roles are cluster-wide, databases are not: ``<service>_app`` is made by whichever database
migrates first (concurrent runs on two databases of one server both succeed), and a
downgrade drops it only once no database holds anything of it (``pg_shdepend``).

The owner that migrates keeps a policy of its own (``<table>_owner``, ``TO`` the migrating
role, ``USING (true)``): row-level security is *forced*, so without it the owner's later
backfills would see no rows. The migrating role is the tables' owner and never an
application's login.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alembic_common.errors import StateError, UsageError

if TYPE_CHECKING:
    from alembic_common.core.services import Service
    from alembic_common.core.settings import Settings

SETTING = "app.healthcare_entity_id"
# The entity of the session; NULL (no rows) when unset or reset to ''.
CURRENT_ENTITY = f"nullif(current_setting('{SETTING}', true), '')::bigint"
TENANT_COLUMN = "healthcare_entity_id"
APP_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
OPERATOR_ROLE = "platform_operator"
# Names PostgreSQL reserves for role specifications, or that read as one.
RESERVED_NAMES = frozenset(
    {"public", "none", "current_user", "session_user", "current_role", "user", "all"}
)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def service_of(migration_file: str) -> str:
    """The service a migration file belongs to: the name of its folder,
    ``services/<name>/migrations/versions/``; a service copied under a new name gets its
    own roles with no edit (``SERVICE = tenancy.service_of(__file__)``)."""
    from pathlib import Path

    return Path(migration_file).resolve().parents[2].name


def app_role(service: str) -> str:
    """The NOLOGIN role a service's application logins are members of: ``patient_app``."""
    return plain_identifier(f"{service}_app")


def plain_identifier(name: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier (safe unquoted), else UsageError."""
    if not _IDENTIFIER.match(name):
        raise UsageError(f"{name!r} is not a plain identifier (a-z, 0-9, _; at most 63)")
    return name


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- roles ------------------------------------------------------------------------------------


def create_role_sql(role: str) -> str:
    """Make the NOLOGIN application role unless it exists; refuse one that bypasses RLS.

    Roles are cluster-wide: another database of the same server, or a concurrent run on
    one, may have made it already (its CREATE ROLE then waits for that run's commit and
    fails with a unique violation, which means the role is there)."""
    role = plain_identifier(role)
    return f"""DO $migrate$
BEGIN
    BEGIN
        CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- made before, or meanwhile by a run on another database of this server
    END;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {_literal(role)}
               AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role {role} exists with SUPERUSER or BYPASSRLS: '
            'it would see every entity''s rows'
            USING HINT = 'ALTER ROLE {role} NOSUPERUSER NOBYPASSRLS, then run ''up'' again';
    END IF;
END
$migrate$"""


def create_operator_sql(role: str = OPERATOR_ROLE) -> str:
    """Make the cross-tenant operator role (NOLOGIN BYPASSRLS) when the migrating role may.

    Creating a BYPASSRLS role needs a superuser (PostgreSQL 15; from 16 a CREATEROLE role
    that has BYPASSRLS itself). When the migrating role may not, the step goes on without
    it and says so in a NOTICE ("migrate: ..."), which ``up`` shows as a progress line;
    docs/tenancy.md, "Tenant isolation", gives the manual step (the NOTICE's words stay as
    they were: they are part of what applied tenancy steps ran)."""
    role = plain_identifier(role)
    return f"""DO $migrate$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {_literal(role)}) THEN
        BEGIN
            CREATE ROLE {role} NOLOGIN BYPASSRLS;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- made meanwhile by a run on another database
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'migrate: operator role {role} not created: % may not create a '
                    'BYPASSRLS role (a superuser may); README "Tenant isolation" has the '
                    'one-time manual step', current_user;
        END;
    END IF;
END
$migrate$"""


def _revoke_all_body(role: str) -> str:
    """PL/pgSQL: leave now if ``role`` does not exist, else revoke what this database grants
    it (tables, views, sequences, schemas)."""
    return f"""    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {_literal(role)}) THEN
        RETURN;
    END IF;
    FOR found IN
        SELECT c.oid::pg_catalog.regclass AS rel,
               CASE c.relkind WHEN 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END AS kind
        FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
        WHERE a.grantee = {_literal(role)}::pg_catalog.regrole
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON %s%s FROM {role}', found.kind, found.rel);
    END LOOP;
    FOR found IN
        SELECT n.nspname FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
        WHERE a.grantee = {_literal(role)}::pg_catalog.regrole
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA %I FROM {role}', found.nspname);
    END LOOP;
"""


def revoke_all_sql(role: str) -> str:
    """Revoke whatever this database grants ``role``, if the role exists."""
    role = plain_identifier(role)
    return (
        f"DO $migrate$\nDECLARE\n    found record;\nBEGIN\n{_revoke_all_body(role)}END\n$migrate$"
    )


def drop_role_sql(role: str) -> str:
    """Drop a role once nothing of it is left in any database (grants, ownership, policies).

    Run after this database's policies are gone: what this database still grants the role
    (a view's grant, USAGE on a version schema) is revoked first. Another database that
    uses the role keeps it (``pg_shdepend``; DROP ROLE checks again under its lock); a
    NOTICE says so. Members (logins) lose their membership with the role."""
    role = plain_identifier(role)
    kept = f"RAISE NOTICE 'migrate: role {role} kept: another database of this server uses it'"
    return f"""DO $migrate$
DECLARE
    found record;
BEGIN
{_revoke_all_body(role)}    IF EXISTS (SELECT FROM pg_catalog.pg_shdepend d
               WHERE d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                 AND d.refobjid = {_literal(role)}::pg_catalog.regrole) THEN
        {kept};
        RETURN;
    END IF;
    BEGIN
        DROP ROLE {role};
    EXCEPTION WHEN dependent_objects_still_exist THEN
        {kept};
    END;
END
$migrate$"""


def create_roles(service: str) -> None:
    """From a migration: the service's application role and the operator role."""
    from alembic import op

    op.execute(create_role_sql(app_role(service)))
    op.execute(create_operator_sql())


def drop_roles(service: str) -> None:
    """From a downgrade, after ``release``: the application role goes if no database uses
    it. The operator role is platform-wide (and may have been made by hand): it stays,
    holding nothing in this database."""
    from alembic import op

    op.execute(drop_role_sql(app_role(service)))
    op.execute(revoke_all_sql(OPERATOR_ROLE))


# --- tables -----------------------------------------------------------------------------------


def isolation_sql(
    table: str,
    role: str,
    *,
    key: str = TENANT_COLUMN,
    commands: str = "ALL",
    privileges: str = APP_PRIVILEGES,
) -> list[str]:
    """Statements that make ``table`` show and take only the session's entity's rows.

    ``key`` is the column holding the entity (``id`` for ``healthcare_entities`` itself).
    RLS is enabled and forced; ``<table>_tenant`` binds every role to the session's entity
    (``commands``: ALL, or SELECT for a table applications only read), for reads (USING)
    and writes (WITH CHECK); ``<table>_owner`` lets the migrating role see every row
    (backfills); ``role`` gets ``privileges`` on the table and USAGE on its sequences, and no
    more; the operator role (BYPASSRLS, when it exists) may read it.
    """
    table, role, key = plain_identifier(table), plain_identifier(role), plain_identifier(key)
    check = f" WITH CHECK ({key} = {CURRENT_ENTITY})" if commands != "SELECT" else ""
    statements = [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY {table}_tenant ON {table} AS PERMISSIVE FOR {commands} TO PUBLIC"
        f" USING ({key} = {CURRENT_ENTITY}){check}",
        f"CREATE POLICY {table}_owner ON {table} AS PERMISSIVE FOR ALL TO CURRENT_USER"
        " USING (true) WITH CHECK (true)",
    ]
    return statements + grant_sql(table, role, privileges)


def grant_sql(table: str, role: str, privileges: str) -> list[str]:
    """``privileges`` on ``table`` to ``role``, USAGE on the sequences it writes (with
    INSERT), and SELECT to the operator role when that exists."""
    table, role = plain_identifier(table), plain_identifier(role)
    statements = [f"GRANT {privileges} ON {table} TO {role}"]
    if "INSERT" in privileges.upper():
        statements.append(_sequences_sql(table, f"GRANT USAGE ON SEQUENCE %s TO {role}"))
    statements.append(
        f"""DO $migrate$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {_literal(OPERATOR_ROLE)}) THEN
        GRANT SELECT ON {table} TO {OPERATOR_ROLE};
    END IF;
END
$migrate$"""
    )
    return statements


def _sequences_sql(table: str, statement: str) -> str:
    """Run ``statement`` (``%s``: the sequence) for each identity or serial sequence of
    ``table``."""
    return f"""DO $migrate$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT d.objid::pg_catalog.regclass AS seq FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.refobjid = {_literal(table)}::pg_catalog.regclass AND d.deptype IN ('a', 'i')
    LOOP
        EXECUTE pg_catalog.format({_literal(statement)}, found.seq);
    END LOOP;
END
$migrate$"""


def release_sql(table: str, role: str) -> list[str]:
    """Undo ``isolation_sql`` (or ``grant_sql``): policies, RLS and grants go; rows stay."""
    table, role = plain_identifier(table), plain_identifier(role)
    return [
        f"DROP POLICY IF EXISTS {table}_owner ON {table}",
        f"DROP POLICY IF EXISTS {table}_tenant ON {table}",
        f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        f"REVOKE ALL ON {table} FROM {role}",
        _sequences_sql(table, f"REVOKE ALL ON SEQUENCE %s FROM {role}"),
        f"""DO $migrate$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {_literal(OPERATOR_ROLE)}) THEN
        REVOKE ALL ON {table} FROM {OPERATOR_ROLE};
    END IF;
END
$migrate$""",
    ]


def isolate(table: str, service: str, **options: Any) -> None:
    """From a migration: row-level security on ``table`` for ``service``'s application role."""
    from alembic import op

    for statement in isolation_sql(table, app_role(service), **options):
        op.execute(statement)


def grant(table: str, service: str, privileges: str) -> None:
    """From a migration: ``privileges`` on a table without tenants (a lookup table)."""
    from alembic import op

    for statement in grant_sql(table, app_role(service), privileges):
        op.execute(statement)


def release(table: str, service: str) -> None:
    """From a downgrade: undo ``isolate`` or ``grant``."""
    from alembic import op

    for statement in release_sql(table, app_role(service)):
        op.execute(statement)


# --- applications ----------------------------------------------------------------------------


def set_entity(conn: Any, entity_id: int | None, local: bool = False) -> None:
    """Bind a psycopg connection (or, with ``local``, its current transaction) to one entity.

    ``local=True`` is ``SET LOCAL``: it ends with the transaction, which suits a pool that
    hands the connection to another tenant's request next. ``None`` unsets it (no rows).
    """
    value = "" if entity_id is None else str(int(entity_id))
    conn.execute("SELECT pg_catalog.set_config(%s, %s, %s)", [SETTING, value, local])


# --- logins -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    service: str
    login: str
    role: str
    created: bool  # False: it existed; its password was set and its membership made sure

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "login": self.login,
            "role": self.role,
            "created": self.created,
        }


# What an existing role holds beyond LOGIN and membership of the service's app role, read
# from the catalogs every role may read (pg_shdepend is the server's, for every database).
_POWERS = """
WITH RECURSIVE r AS (SELECT * FROM pg_catalog.pg_roles WHERE rolname = %(name)s),
granted (roleid, admin) AS (  -- every role it is a member of, through any chain
    SELECT m.roleid, m.admin_option FROM pg_catalog.pg_auth_members m, r WHERE m.member = r.oid
    UNION
    SELECT m.roleid, m.admin_option FROM pg_catalog.pg_auth_members m JOIN granted g
      ON m.member = g.roleid
)
SELECT pg_catalog.array_remove(ARRAY[
           CASE WHEN r.rolsuper THEN 'SUPERUSER' END,
           CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
           CASE WHEN r.rolcreatedb THEN 'CREATEDB' END,
           CASE WHEN r.rolreplication THEN 'REPLICATION' END,
           CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END], NULL),
       (SELECT pg_catalog.array_agg(DISTINCT o.rolname::text ORDER BY o.rolname::text)
          FROM granted g JOIN pg_catalog.pg_roles o ON o.oid = g.roleid
         WHERE o.rolname <> %(app)s OR g.admin),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_shdepend d
         WHERE d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
           AND d.refobjid = r.oid AND d.deptype = 'o')
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_database WHERE datdba = r.oid),
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_shdepend d
         WHERE d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
           AND d.refobjid = r.oid AND d.deptype <> 'o'),
       r.rolname = current_user
FROM r"""


def _powers_named(found: Any, app: str) -> str:
    attributes, members, owns, grants, connected = found
    named = []
    if attributes:
        named.append(" ".join(attributes))
    if members:
        named.append(
            "member of "
            + ", ".join(members)
            + (f" (or {app} WITH ADMIN)" if app in members else "")
        )
    if owns:
        named.append(f"owner of {owns} object(s) in the server's databases")
    if grants:
        named.append(f"named in {grants} grant(s) or policies of its own")
    if connected:
        named.append("the role connected")
    return "; ".join(named)


def ensure_login(service: Service, settings: Settings, name: str, password: str) -> LoginResult:
    """Create (or update) the login role ``name`` as a member of ``<service>_app``.

    Idempotent: an existing login gets the password and the membership again. The password
    is hashed here (SCRAM-SHA-256, by libpq) so it never reaches the server's logs in
    clear. Refuses (before any statement that changes anything) a name that is not a plain
    identifier, an empty password, and an existing role that holds anything beyond LOGIN
    and membership of ``<service>_app``: another role attribute, membership of any other
    role through any chain (predefined roles included) or of the app role WITH ADMIN,
    ownership of anything in any database of the server, a grant or policy naming it, or
    being the role connected."""
    from psycopg import errors, sql

    from alembic_common.core import db

    name = plain_identifier(name)
    role = app_role(service.name)
    if (
        name in RESERVED_NAMES
        or name.startswith("pg_")
        or name.endswith("_app")
        or name == OPERATOR_ROLE
    ):
        raise UsageError(
            f"{service.name}: {name!r} cannot be a login: it is reserved, a system role or a "
            "group role of this toolkit (*_app, the operator role)"
        )
    if not password or password != password.strip() or "\n" in password:
        raise UsageError(
            f"{service.name}: the password for {name} is empty or has surrounding whitespace"
        )
    from alembic_common.safety import privileges

    with db.connect(settings) as conn:
        if (
            conn.execute("SELECT FROM pg_catalog.pg_roles WHERE rolname = %s", [role]).fetchone()
            is None
        ):
            raise StateError(
                f"{service.name}: role {role} does not exist: run 'up' first", service=service.name
            )
        found = conn.execute(_POWERS, {"name": name, "app": role}).fetchone()
        if found is not None and any(found):
            raise UsageError(
                f"{service.name}: {name} already exists with more than an application login may "
                f"hold ({_powers_named(found, role)}); an application login holds LOGIN and "
                f"membership of {role}, nothing else: choose another name; nothing was changed",
                service=service.name,
            )
        privileges.may_manage_login(conn, service.name, role, name, found is not None)
        verifier = conn.pgconn.encrypt_password(
            password.encode(), name.encode(), b"scram-sha-256"
        ).decode()
        ident, secret = sql.Identifier(name), sql.Literal(verifier)
        created = False
        with conn.transaction():
            if found is None:
                try:
                    with conn.transaction():
                        conn.execute(
                            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, secret)
                        )
                    created = True
                except (errors.DuplicateObject, errors.UniqueViolation):
                    pass  # made meanwhile by another run
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(ident, secret))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), ident))
    return LoginResult(service.name, name, role, created)
