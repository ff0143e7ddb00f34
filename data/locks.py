"""The PostgreSQL advisory lock every writer of one (tenant, product)'s raw events takes first.

Ingestion's chunks take it before reading what their decisions depend on; a retention run takes
it before purging, so a purge and a chunk of the same product never interleave. SQLite needs no
lock of its own: ``BEGIN IMMEDIATE`` already serialises its writers.
"""

from __future__ import annotations

import hashlib

__all__ = ["product_lock"]

#: The first half of the two-integer key of the PostgreSQL advisory lock a chunk takes before it
#: reads anything its decisions depend on ("veil" in ASCII; the second half is
#: ``product_lock``). Each contribution bound (per day, and per month when declared) is
#: "count what is stored, then insert up to the bound", and the duplicate check is "read which
#: ids are stored, then insert the rest"; under READ COMMITTED two transactions doing either at
#: once both see the same stored state and both insert (issue 14: eight concurrent batches of
#: three events of one person-day, bound 3, stored 21). So every chunk that stores events of a
#: product takes this transaction-scoped lock on (tenant, product) first: writers of one product
#: take turns, exactly as SQLite's ``BEGIN IMMEDIATE`` makes all writers take turns, and each
#: one's reads (a new snapshot per statement, taken after the lock is granted) see everything
#: the previous holder committed; the lock goes with the commit or rollback, and a crashed
#: holder's with its connection. Chosen over the alternatives because it is correct by
#: construction for both checks and costs one round trip per chunk: locks per hashed subject
#: bucket would let writers of one product overlap but not make the duplicate check safe (an
#: event id does not determine its subject), and take up to a bucket count of slots in the
#: server's shared lock table per chunk; a counter row per subject-day would be a second copy of
#: the counts to keep in step with every delete, written for every group of every chunk;
#: SERIALIZABLE would abort and redo whole 50,000-row chunks. Writers of different products (or
#: tenants) do not wait for each other, short of a 32-bit hash collision, which only makes them
#: take turns. One lock per transaction, always taken before anything else, so it cannot
#: deadlock with itself.
_LOCK_CLASS = 0x7665696C


def product_lock(tenant: str, product: str) -> tuple[int, int]:
    """The advisory lock's two-integer key for (tenant, product): the class above and a stable
    signed 32-bit hash of the pair (``hash()`` differs between processes)."""
    digest = hashlib.blake2b(f"{tenant}\x1f{product}".encode(), digest_size=4).digest()
    return _LOCK_CLASS, int.from_bytes(digest, "big", signed=True)
