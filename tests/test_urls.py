"""Database URLs: the query's keywords are the linked libpq's."""

from __future__ import annotations

from psycopg import pq

from alembic_common import urls


def test_the_keywords_are_the_linked_libpqs() -> None:
    """The query's keywords come from the linked libpq, not from a list kept by hand."""
    linked = {o.keyword.decode() for o in pq.Conninfo.get_defaults()}
    assert linked == urls.KNOWN_PARAMS
    assert "sslmode" in urls.KNOWN_PARAMS


def test_every_secret_keyword_of_the_linked_libpq_is_masked() -> None:
    """libpq marks a secret option with the display character '*': each must be masked."""
    secret = {o.keyword.decode() for o in pq.Conninfo.get_defaults() if o.dispchar == b"*"}
    assert "password" in secret
    assert secret <= set(urls.SECRET_KEYS)
