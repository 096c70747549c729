"""``-x KEY=VALUE`` arguments for migrations, as plain Alembic's ``-x`` passes them.

A migration reads them with ``alembic_common.online.safe.x_argument(key)`` (Alembic's
``context.get_x_argument``), so ``migrate SERVICE down -x rh_null=NULL`` and
``alembic -c services/SERVICE/alembic.ini -x rh_null=NULL downgrade ...`` mean the same.
``migrate`` hands them over for the duration of one run with ``given(...)``: every Alembic
``Config`` a ``Service`` builds meanwhile carries them as its ``cmd_opts.x``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING

from alembic_common.errors import UsageError

if TYPE_CHECKING:
    from alembic_common.core.services import Migration

_GIVEN: ContextVar[Mapping[str, str]] = ContextVar("x_arguments", default=MappingProxyType({}))


def parse(values: Iterable[str]) -> dict[str, str]:
    """``["rh_null=NULL"]`` -> ``{"rh_null": "NULL"}``; anything without a key is bad usage."""
    parsed: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-x needs KEY=VALUE, got {value!r}")
        parsed[key.strip()] = val
    return parsed


@contextmanager
def given(values: Mapping[str, str]) -> Iterator[None]:
    """Make ``values`` the ``-x`` arguments of every migration run inside the block."""
    token = _GIVEN.set(MappingProxyType(dict(values)))
    try:
        yield
    finally:
        _GIVEN.reset(token)


def current() -> list[str]:
    """The ``-x`` arguments in force, as Alembic's ``cmd_opts.x`` holds them."""
    return [f"{k}={v}" for k, v in _GIVEN.get().items()]


def check(migrations: Iterable[Migration], given: Mapping[str, str]) -> None:
    """Refuse, before anything runs, a -x key no migration of the run reads or a value it
    does not accept (each migration declares ``x_arguments = {"key": ["VALUE", ...]}``)."""
    accepted: dict[str, set[str]] = {}
    for m in migrations:
        for key, values in m.x_arguments.items():
            accepted.setdefault(key, set()).update(v.strip().upper() for v in values)
    for key, value in given.items():
        if key not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise UsageError(f"-x {key}: no migration of this run reads it (it reads: {known})")
        if value.strip().upper() not in accepted[key]:
            choices = " or ".join(sorted(accepted[key]))
            raise UsageError(f"-x {key}={value!r} is not accepted: use {key}={choices}")
