"""Tenant isolation: row-level security per healthcare entity and its roles (rls), and
clinical identity (identity).

``from alembic_common import tenancy`` then ``tenancy.isolate(...)`` is how migrations
written before :mod:`alembic_common.migration` call these helpers; it keeps working.
"""

from alembic_common.tenancy.rls import *  # noqa: F403
