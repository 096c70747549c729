"""Roles are cluster-wide: two databases of one server share <service>_app, concurrently
made, and the last downgrade drops it. Its own module, so that no module-scoped database
of test_tenancy.py holds the role while this runs."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import (
    ROOT,
    create_database,
    drop_database,
    migrate_cmd,
    peer_env,
    peers,
    query,
    settings,
)
from test_tenancy import CONTRACT, rls_version

from alembic_common.core import runner, services
from alembic_common.tenancy import rls as tenancy


def _users_of(server: str, role: str) -> int:
    """How many databases hold something of ``role`` (pg_shdepend is cluster-wide)."""
    rows = query(
        server,
        "SELECT DISTINCT dbid FROM pg_shdepend WHERE refobjid ="
        " (SELECT oid FROM pg_roles WHERE rolname = %s)",
        [role],
    )
    return len(rows)


def _role_exists(server: str, role: str) -> bool:
    return bool(query(server, "SELECT 1 FROM pg_roles WHERE rolname = %s", [role]))


def test_two_databases_share_the_role_and_the_last_downgrade_drops_it(server: str) -> None:
    name = "appointment"  # no session-wide peer database holds appointment_app
    role = tenancy.app_role(name)
    if _users_of(server, role):
        pytest.skip(f"another database on this server uses {role}")
    if _role_exists(server, role):
        query(server, f"DROP ROLE {role}")
    service = services.get(name, ROOT)
    step = rls_version(name)
    urls = [create_database(server), create_database(server)]
    try:
        for url in urls:
            runner.up(service, settings(name, url), target=step - 1, peers=peers)
        # Both databases make the role at once (Alembic's proxies are per process).
        runs = [
            subprocess.Popen(
                migrate_cmd(name, "up", "--contract", "--url", url),
                env={**os.environ, **peer_env()},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for url in urls
        ]
        outcomes = [(r.wait(timeout=120), r.communicate()[1]) for r in runs]
        assert [code for code, _ in outcomes] == [0, 0], outcomes
        assert _role_exists(server, role) and _users_of(server, role) == 2
        runner.down(service, settings(name, urls[0]), step)
        assert _role_exists(server, role), "dropped while another database uses it"
        assert _users_of(server, role) == 1
        runner.down(service, settings(name, urls[1]), step)
        assert not _role_exists(server, role), "left behind by the last downgrade"
        runner.up(service, settings(name, urls[1]), options=CONTRACT, peers=peers)
        assert _role_exists(server, role)  # and made again
    finally:
        for url in urls:
            drop_database(server, url)
