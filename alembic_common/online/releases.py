"""Old and new releases side by side: who announces which version, and version schemas.

A release announces the schema version it was built for in ``application_name``, as
``<service>@<version>`` (``patient@3``). A contract step V of a service runs by itself
once no session on the database announces a version below V; unannounced sessions are
listed, never counted (see ``plan.split_held``).

While contract V is the next step, the schema ``<service>_v<V>`` holds one view per table
presenting the table as it will look after the contract, from the step's declaration::

    phase = "contract"
    contract = {"patients": {"rename": {"phone": "phone_original", "phone_e164": "phone"},
                             "hide": ["phone_original"]}}

A release built for V sets ``search_path`` to ``<service>_v<V>`` and runs before the
contract. After it, the views stay as pass-through views (a renamed column keeps its
view column, PostgreSQL tracks columns by number), so that release goes on with no
redeploy; the schema is dropped when a later contract step is applied, and when a
downgrade goes back below its expand step. The views are ``security_invoker`` (row-level
security applies through them) and simple enough to be auto-updatable; each has its
table's grants, and whoever holds one has USAGE on the schema (tenancy.py's roles).

The schemas are rebuilt by the history recorder after every step, in the step's own
transaction, by one SQL block that reads the catalogs: online and in offline plans alike.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from alembic_common.errors import ScriptError

if TYPE_CHECKING:
    import psycopg

    from alembic_common.core.services import Migration, Service

# What our own sessions call themselves (a URL's application_name still wins).
OWN_APPLICATION = "migrate"
MARKER = "migrate: version schema of the"  # begins the comment on every version schema
# PgBouncer's application_name_add_host appends " - host:port" to a client's name.
_ANNOUNCED = re.compile(r"^([a-z][a-z0-9_]*)@(\d{1,9})(?: - \S*)?$")


class Session(NamedTuple):
    """Another session on the service's database, as ``pg_stat_activity`` (or, for a
    client of a pooler, the pooler's ``SHOW CLIENTS``) shows it."""

    pid: int | None  # None for a pooler's client: it has no backend of its own
    application_name: str
    client: str | None  # address (or 'local'); None when our role may not see it
    since: datetime | None
    announced: int | None  # the version it announces for this service, None: unannounced
    pooler: str | None = None  # host:port of the pooler it is connected through

    def __str__(self) -> str:
        name = self.application_name or "no application_name"
        who = f"pid {self.pid}" if self.pid is not None else "a client"
        where = f" from {self.client}" if self.client else ""
        via = f" via the pooler {self.pooler}" if self.pooler else ""
        since = f" since {self.since:%Y-%m-%d %H:%M:%S}" if self.since else ""
        return f"{who} ({name}){where}{via}{since}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "application_name": self.application_name,
            "client": self.client,
            "since": self.since.isoformat() if self.since else None,
            "announced": self.announced,
            "pooler": self.pooler,
        }


class Seen(NamedTuple):
    """The other sessions on a database, and why some may be missing from them."""

    sessions: list[Session]
    blind: str | None = None  # None: every session is seen
    grant: bool = False  # the blindness is the role's: a grant would cure it


def announced(service: str, application_name: str | None) -> int | None:
    """The version ``application_name`` announces for ``service`` (``patient@3`` -> 3)."""
    found = _ANNOUNCED.match(application_name or "")
    return int(found.group(2)) if found and found.group(1) == service else None


# One round trip: whether the role may see other roles' sessions (their backend_type,
# application_name and address read as NULL otherwise), and the client sessions.
_SESSIONS = """
SELECT v.sees, a.pid, coalesce(a.application_name, ''),
       CASE WHEN a.client_addr IS NOT NULL THEN host(a.client_addr)
            WHEN a.backend_start IS NOT NULL THEN 'local' END,
       a.backend_start, a.client_port, current_user, v.member
FROM (SELECT pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE') AS sees,
             pg_catalog.pg_has_role('pg_read_all_stats', 'MEMBER') AS member) v
LEFT JOIN pg_catalog.pg_stat_activity a
  ON a.datname = pg_catalog.current_database()
 AND a.pid <> pg_catalog.pg_backend_pid()
 AND a.backend_type = 'client backend'
 AND (%(ours)s OR coalesce(a.application_name, '') <> %(own)s)
ORDER BY a.backend_start NULLS LAST, a.pid
"""


def sessions(
    conn: psycopg.Connection[Any], service: str, *, ours: bool = False, connect_timeout: int = 10
) -> Seen:
    """The client sessions on this database other than this one: directly on the server,
    and through every pooler of ``MIGRATE_POOLER_URLS`` (whose own server connections are
    left out, since a transaction pool's carry a stale application_name). Other ``migrate``
    runs are left out unless ``ours``. ``blind`` says why some may be missing: the role
    may not see other roles' sessions, or a pooler could not be read."""
    rows = conn.execute(_SESSIONS, {"ours": ours, "own": OWN_APPLICATION}).fetchall()
    sees, user, member = bool(rows[0][0]), str(rows[0][6]), bool(rows[0][7])
    direct = [(p, n, c, s, port) for _, p, n, c, s, port, _, _ in rows if p is not None]
    blind = None
    if not sees:
        from alembic_common.safety.privileges import see_sessions

        blind = see_sessions(user, member)
    found = [Session(p, n, c, s, announced(service, n)) for p, n, c, s, _ in direct]
    from alembic_common.fleets import poolers

    consoles = poolers.configured()
    if not consoles:
        return Seen(found, blind, blind is not None)
    pooled = poolers.look(conn.info.dbname, consoles, connect_timeout)
    # A pooler's server connection is the session whose pid AND client port are the ones
    # the pooler lists for it: a pid alone may be another server's (a pooler in front of a
    # replica, another tenant's), and a socket session (no port) is never left out.
    found = [
        s
        for s, (_, _, _, _, port) in zip(found, direct, strict=True)
        if not (port is not None and port > 0 and (s.pid, port) in pooled.servers)
    ]
    found += [
        Session(
            None,
            c.application_name,
            c.client,
            c.since,
            announced(service, c.application_name),
            c.pooler,
        )
        for c in pooled.clients
        if ours or c.application_name != OWN_APPLICATION
    ]
    problems = [p for p in (blind, pooled.problem) if p]
    return Seen(found, "; ".join(problems) or None, blind is not None)


def holding(contract: int, found: list[Session]) -> list[Session]:
    """The sessions that hold contract step ``contract`` back: they announce an older version."""
    return [s for s in found if s.announced is not None and s.announced < contract]


def unannounced(found: list[Session]) -> list[Session]:
    return [s for s in found if s.announced is None]


def describe(found: list[Session], limit: int = 5) -> str:
    """Sessions in one line, the first few named."""
    shown = "; ".join(map(str, found[:limit]))
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    return shown + more


# --- for applications ------------------------------------------------------------------------


def schema_name(service: str, contract: int) -> str:
    """The version schema of ``service``'s contract step ``contract``: ``patient_v5``."""
    return f"{service}_v{contract}"


def release_url(url: str, service: str, version: int, *, version_schema: bool = False) -> str:
    """``url`` for a release built for ``version``: it announces itself in application_name,
    and with ``version_schema`` reads and writes through ``<service>_v<version>``.

    >>> release_url("postgresql://app@db/patient", "patient", 5, version_schema=True)
    'postgresql://app@db/patient?application_name=patient%405&options=-csearch_path%3Dpatient_v5'
    """
    params = [f"application_name={quote(f'{service}@{version}', safe='')}"]
    if version_schema:
        options = f"-csearch_path={schema_name(service, version)}"
        params.append(f"options={quote(options, safe='-')}")
    return url + ("&" if "?" in url else "?") + "&".join(params)


# --- version schemas -------------------------------------------------------------------------


def check_declaration(name: str, value: Any) -> None:
    """Refuse a malformed ``contract`` declaration, naming the file."""
    usage = (
        f"{name}: contract must map each table to its 'rename' (old column -> new) and "
        "'hide' (columns not shown), e.g. contract = "
        '{"patients": {"rename": {"phone": "phone_original"}, "hide": ["phone_original"]}}'
    )
    if not isinstance(value, dict):
        raise ScriptError(usage)
    for table, spec in value.items():
        if (
            not isinstance(table, str)
            or not isinstance(spec, dict)
            or set(spec) - {"rename", "hide"}
        ):
            raise ScriptError(usage)
        rename, hide = spec.get("rename", {}), spec.get("hide", [])
        if not isinstance(rename, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in rename.items()
        ):
            raise ScriptError(usage)
        if not isinstance(hide, list) or not all(isinstance(c, str) for c in hide):
            raise ScriptError(usage)
        if len(set(rename.values())) != len(rename):
            raise ScriptError(f"{name}: contract renames two columns of {table} to one name")


def contract_steps(migrations: list[Migration]) -> list[tuple[Migration, int | None]]:
    """Each contract step, oldest first, with the version just before it."""
    return [
        (m, migrations[i - 1].version if i else None)
        for i, m in enumerate(migrations)
        if m.phase == "contract"
    ]


def wanted(steps: list[tuple[Migration, int | None]], current: int | None) -> dict[int, str]:
    """Which version schemas a database at ``current`` has: contract version -> its state.

    ``pending``: the contract is the next step (its expand step is applied); ``applied``:
    it ran and no later contract step has retired it.
    """
    if current is None:
        return {}
    contracts = [m.version for m, _ in steps]
    found = {}
    for m, before in steps:
        v = m.version
        if before == current:
            found[v] = "pending"
        elif v <= current and not any(v < w <= current for w in contracts):
            found[v] = "applied"
    return found


# One block reads the catalogs and (re)builds the version schemas from a JSON spec:
# online it runs in the step's transaction, offline it is part of the plan's SQL.
_SYNC = """DO $migrate$
DECLARE
    spec jsonb := %s;
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
        EXECUTE format('DROP SCHEMA %%I CASCADE', target.nspname);
    END LOOP;
    FOR target IN SELECT key AS name, value AS v FROM jsonb_each(spec -> 'schemas') LOOP
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %%I', target.name);
        EXECUTE format('COMMENT ON SCHEMA %%I IS %%L', target.name, target.v ->> 'comment');
        FOR rel IN
            SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(target.name) AND c.relkind = 'v'
              AND pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', spec ->> 'schema', c.relname)) IS NULL
        LOOP
            EXECUTE format('DROP VIEW %%I.%%I', target.name, rel.relname);
        END LOOP;
        FOR rel IN
            SELECT c.oid, c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(spec ->> 'schema')
              AND c.relkind IN ('r', 'p') AND NOT (spec -> 'skip') ? c.relname
              AND c.relname NOT LIKE '\\_migrate\\_%%'
            ORDER BY c.relname
        LOOP
            SELECT pg_catalog.string_agg(pg_catalog.format('%%I AS %%I', x.attname, x.shown), ', '
                                         ORDER BY x.attnum)
            INTO columns
            FROM (SELECT a.attname, a.attnum,
                         coalesce(target.v #>> ARRAY['rename', rel.relname, a.attname], a.attname) AS shown
                  FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped) x
            WHERE NOT coalesce(target.v #> ARRAY['hide', rel.relname], '[]') ? x.shown;
            body := format('VIEW %%I.%%I WITH (security_invoker = true) AS SELECT %%s FROM %%I.%%I',
                           target.name, rel.relname, columns, spec ->> 'schema', rel.relname);
            BEGIN
                EXECUTE 'CREATE OR REPLACE ' || body;
            EXCEPTION WHEN invalid_table_definition THEN
                -- a column left or changed its type: the view is made again
                EXECUTE format('DROP VIEW %%I.%%I', target.name, rel.relname);
                EXECUTE 'CREATE ' || body;
            END;
            -- The view's grants are its table's (and, security_invoker, so is its RLS).
            FOR acl IN
                SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
                WHERE v.oid = pg_catalog.format('%%I.%%I', target.name, rel.relname)::pg_catalog.regclass
                  AND a.grantee <> v.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %%I.%%I FROM %%s', target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
            FOR acl IN
                SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_class t, pg_catalog.aclexplode(t.relacl) a
                WHERE t.oid = rel.oid AND a.grantee <> t.relowner
            LOOP
                EXECUTE format('GRANT %%s ON %%I.%%I TO %%s', acl.privilege_type, target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
        END LOOP;
        -- USAGE on the schema for exactly those who hold a grant on one of its views.
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
            WHERE n.oid = pg_catalog.to_regnamespace(target.name) AND a.grantee <> n.nspowner
        LOOP
            EXECUTE format('REVOKE ALL ON SCHEMA %%I FROM %%s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
            WHERE v.relnamespace = pg_catalog.to_regnamespace(target.name) AND a.grantee <> v.relowner
        LOOP
            EXECUTE format('GRANT USAGE ON SCHEMA %%I TO %%s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
    END LOOP;
END
$migrate$"""


# Before each step, in its transaction: the views go, so the step may change any column
# they show; the recorder makes them again at the step's end (other sessions see the old
# views until the step commits). The schemas stay, and so does a release's search_path.
_CLEAR = """DO $migrate$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'v' AND pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE %s
    LOOP
        EXECUTE format('DROP VIEW IF EXISTS %%I.%%I CASCADE', found.nspname, found.relname);
    END LOOP;
END
$migrate$"""


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def clear_sql(service: Service) -> str | None:
    """The SQL that drops the views of ``service``'s version schemas (None: it has none)."""
    if not service.contract_steps:
        return None
    return _CLEAR % _quoted(_like(service.name))


def _like(service: str) -> str:
    return _marker(service).replace("_", "\\_") + "%"


def _marker(service: str) -> str:
    return f"{MARKER} {service} service"


def sync_sql(service: Service, current: int | None, skip: frozenset[str]) -> str | None:
    """The SQL that leaves the version schemas right for a database now at ``current``.

    None for a service without contract steps: nothing to build and nothing to drop.
    """
    steps = service.contract_steps  # read once per process: this runs once per step
    if not steps:
        return None
    by_version = {m.version: m for m, _ in steps}
    schemas = {}
    for v, state in wanted(steps, current).items():
        declared = by_version[v].contract
        spec: dict[str, Any] = {
            "comment": f"{_marker(service.name)}, contract {v} ({state})",
            "hide": {t: s.get("hide", []) for t, s in declared.items()},
        }
        if state == "pending":
            spec["rename"] = {t: s.get("rename", {}) for t, s in declared.items()}
        schemas[schema_name(service.name, v)] = spec
    document = {
        "marker": _like(service.name),
        "schema": service.schema,
        "skip": sorted(skip),
        "schemas": schemas,
    }
    return _SYNC % _quoted(json.dumps(document, sort_keys=True))
