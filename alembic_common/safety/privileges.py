"""What the migrating role may do, checked before a command changes anything.

On managed PostgreSQL (RDS, Cloud SQL, Azure) the role that migrates owns the database
and may create roles, but is no superuser. Some of what the toolkit does needs more than
ownership; each check here refuses in one line that names the grant which would cure it
(``PrivilegeError``, exit 1), before any change:

* seeing every session (the contract gate, ``restore``): ``pg_read_all_stats``;
* ending other roles' sessions (``restore --force``): ``pg_signal_backend``;
* reading every row (``backup``, a production ``up``): see ``backup.readable``;
* creating roles (``login``, a step that calls ``tenancy.create_roles``): ``CREATEROLE``,
  and from PostgreSQL 16 the ADMIN option on the group role a login joins.

docs/reference.md's "The migrating role" (under "Production") lists them per command. Whether
the role sees every session is read with the sessions themselves (``releases.sessions``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg

from alembic_common.errors import PrivilegeError


class Role(NamedTuple):
    """The connected role's attributes and the predefined roles whose rights it uses."""

    name: str
    superuser: bool
    createrole: bool
    signals: bool  # pg_signal_backend
    server: int  # server_version_num


def role(conn: psycopg.Connection[Any]) -> Role:
    """The connected role, as the server judges it (membership through any chain counts
    when it is inherited, as PostgreSQL's own checks count it)."""
    row = conn.execute(
        "SELECT r.rolname, r.rolsuper, r.rolcreaterole,"
        " pg_catalog.pg_has_role('pg_signal_backend', 'USAGE')"
        " FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
    ).fetchone()
    assert row is not None
    name, superuser, createrole, signals = row
    return Role(
        str(name), bool(superuser), bool(createrole), bool(signals), conn.info.server_version
    )


def see_sessions(user: str, member: bool = False) -> str:
    """Why the gate is blind, and the grant that lets it see (a member that does not
    inherit the role's rights needs to inherit them, not another grant)."""
    cure = (
        f"ALTER ROLE {user} INHERIT (it is a member of pg_read_all_stats without using its "
        "rights; from PostgreSQL 16 the membership's own INHERIT option must be true too)"
        if member
        else f"GRANT pg_read_all_stats TO {user}"
    )
    return f"the role {user} cannot see other roles' sessions: {cure}"


def _admin_of(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(
        "SELECT pg_catalog.pg_has_role(%s, 'MEMBER WITH ADMIN OPTION')", [name]
    ).fetchone()
    return bool(row and row[0])


def may_create_roles(conn: psycopg.Connection[Any], service: str, why: str) -> None:
    """Refuse unless the role may create roles (``CREATE ROLE`` checks that before it looks
    whether the role exists, so a step that creates one needs it every time)."""
    me = role(conn)
    if me.superuser or me.createrole:
        return
    raise PrivilegeError(
        f"{service}: {why} creates roles, and the role {me.name} may not: ALTER ROLE "
        f"{me.name} CREATEROLE (as a superuser); nothing was changed",
        service=service,
    )


def may_manage_login(
    conn: psycopg.Connection[Any], service: str, group: str, login: str, exists: bool
) -> None:
    """Refuse unless the role may create (or alter) the login ``login`` and make it a
    member of ``group``: CREATEROLE, and from PostgreSQL 16 the ADMIN option on both."""
    me = role(conn)
    if me.superuser:
        return
    if not me.createrole:
        raise PrivilegeError(
            f"{service}: login creates and alters roles, and the role {me.name} may not: "
            f"ALTER ROLE {me.name} CREATEROLE (as a superuser); nothing was changed",
            service=service,
        )
    if me.server < 160000:
        return
    for name in (group, login) if exists else (group,):
        if not _admin_of(conn, name):
            raise PrivilegeError(
                f"{service}: login needs the ADMIN option on {name}, and the role {me.name} "
                f"lacks it: GRANT {name} TO {me.name} WITH ADMIN OPTION; nothing was changed",
                service=service,
            )
