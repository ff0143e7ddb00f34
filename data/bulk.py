"""Bulk loading: plain tuples straight to the driver, shared by ingestion and the demo generator.

Owns the one way Veil writes many rows at once — ``COPY … FROM STDIN`` on PostgreSQL, one
prepared ``INSERT`` run by ``executemany`` on SQLite — inside the caller's transaction, and the
embedded store's page-cache size for such loads. No ORM objects and no SQL compiled per row.

It never commits, never decides which rows may be stored (the caller has: consent, duplicates
and contribution bounds are ``data.ingest``'s, the demo draws bounded rows) and never builds
aggregates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from sqlalchemy.orm import Session

__all__ = ["SQLITE_BATCH_ROWS", "SQLITE_BULK_CACHE_KIB", "bulk_insert"]

#: Rows per SQLite ``executemany`` call when the rows arrive as a stream (bounds memory; a
#: list of at most this many rows goes in as one call).
SQLITE_BATCH_ROWS = 100_000

#: ``PRAGMA cache_size`` for a bulk load on SQLite (negative: KiB, so 256 MB). Random keys (event
#: ids, pseudonyms) make index inserts land on pages all over the indexes; with the default 2 MB
#: cache those pages are evicted and re-read within one transaction.
SQLITE_BULK_CACHE_KIB = -262_144


def bulk_insert(session: Session, table: str, columns: Sequence[str],
                rows: Iterable[tuple]) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table`` in the session's transaction:
    COPY on PostgreSQL, executemany (in batches of ``SQLITE_BATCH_ROWS``) on SQLite."""
    connection = session.connection()
    raw: Any = connection.connection.dbapi_connection
    names = ", ".join(columns)
    if connection.dialect.name == "postgresql":
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    cursor = raw.cursor()
    try:
        if isinstance(rows, list) and len(rows) <= SQLITE_BATCH_ROWS:
            cursor.executemany(sql, rows)
        else:
            for batch in _batches(rows, SQLITE_BATCH_ROWS):
                cursor.executemany(sql, batch)
    finally:
        cursor.close()


def _batches(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch
