"""``-x KEY=VALUE`` arguments for migrations, as plain Alembic's ``-x`` passes them.

A migration reads them with ``alembic_common.safe.x_argument(key)`` (Alembic's
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

from alembic_common.errors import UsageError

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
