"""The demo's determinism check: a content hash of its tables, the same on either store.

Owns ``demo_digest``. Read-only; meant for tests on small and medium demos.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from data.engine import Store
from data.models import VERTICAL_EVENT_MODELS, ConsentEvent, Registration, Subject, SubjectConsent

_DIGEST_TABLES = (
    *(m.__table__ for m in VERTICAL_EVENT_MODELS.values()),
    Subject.__table__,
    ConsentEvent.__table__,
    SubjectConsent.__table__,
    Registration.__table__,
)


def demo_digest(store: Store) -> str:
    """SHA-256 over the demo tables' rows in a canonical order, independent of the back end.

    Surrogate keys (consent event ids) are left out: they depend on the store's sequence
    history, not on the data. Rows are sorted in Python rather than by ORDER BY, because string
    collation differs between SQLite and PostgreSQL; both return the same Python values
    (str, int, float, date, datetime, None), so ``repr`` is a canonical form. It holds one
    table's rows as text in memory at a time: meant for tests on small and medium demos.
    """
    total = hashlib.sha256()
    with store.read() as session:
        for table in _DIGEST_TABLES:
            columns = [c for c in table.columns if c.name != "id"]
            result = session.execute(select(*columns).execution_options(yield_per=50_000))
            rows = sorted(repr(tuple(row)) for row in result)
            total.update(f"{table.name}:{len(rows)}\n".encode())
            for row in rows:
                total.update(row.encode())
                total.update(b"\n")
    return total.hexdigest()
