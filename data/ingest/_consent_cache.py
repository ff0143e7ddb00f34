"""The consent cache: answers of earlier chunks of a run, reused while consent is unchanged.

Owns deciding when a consent answer read for an earlier chunk may be reused instead of read
again (see ``_ConsentCache``). It never answers for a store it cannot prove unchanged since the
answer was read, and never decides consent itself: the pipeline reads it (``_sql``) and
admission applies it (``_admission``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session


class _ConsentCache:
    """Consent answers of earlier chunks of a run, reused while they provably still hold.

    A run reads consent inside each chunk's write transaction, and a subject usually appears
    in many chunks (measured: reading only the new ones takes a fifth off a million-row run).
    An answer read in an earlier chunk still holds when nobody has written to the store since
    that chunk committed, which SQLite tells exactly: ``PRAGMA data_version`` changes on a
    connection when another connection has committed since it last looked, and the
    connection's ``total_changes`` counts the rows it has itself written, so a write made
    through the same pooled connection by someone else between two chunks shows too. Both are
    read inside the chunk's write transaction, which holds the only write lock. Any other write
    at all — a withdrawal, but also an audit entry — empties the cache and the whole chunk is
    read again.

    PostgreSQL's writers do not take turns like this, so there the proof is narrower: the
    ``consent_versions`` counter, which a trigger moves in every transaction that changes
    ``subject_consent`` (migration 0020), replication sessions included (0021: a trigger
    ``ENABLE ALWAYS`` fires under ``session_replication_role = replica`` too). Each chunk reads it *before* it reads consent
    (``valid``), and the chunk leaves the value it read then, not one read at its end: a change
    committed between a chunk's consent read and its end would otherwise be taken as seen. While
    the counter has not moved, no consent has changed since the earliest answer was read, and
    the chunk decides on consent as it stood when it read the counter — as a chunk that read
    everything would decide on consent as it stood at its read (under READ COMMITTED a change
    may commit during either). Other writes leave the answers alone here.

    Bounded: emptied at a million subjects.
    """

    _LIMIT = 1_000_000

    def __init__(self, dialect: str):
        # the pipeline's stores (``_Sql`` refuses others): PostgreSQL, else SQLite
        self.postgres = dialect == "postgresql"
        self.answers: dict[str, float | None] = {}  # None: asked, no granted consent
        self.left: tuple[Any, int, int] | None = None  # the store as the last chunk left it
        self.seen: tuple[Any, int, int] | None = None  # PostgreSQL: the counter as last read
        self.reads = 0  # subjects read from the store (tests look at it)

    def valid(self, session: Session) -> bool:
        """Whether the answers still hold; empties them when they may not. Call before the
        chunk's consent read."""
        left = self.left
        now = None
        if left is not None or self.postgres:
            now = self._state(session)
        if self.postgres:
            self.seen = now
        if (now is not None and left is not None and len(self.answers) < self._LIMIT
                and now[0] is left[0] and now[1:] == left[1:]):
            return True
        self.answers.clear()
        return False

    def chunk_written(self, session: Session) -> None:
        """Note the store as this chunk leaves it (call inside the transaction, last)."""
        if self.postgres:
            self.left = self.seen  # as it was before this chunk read consent (see above)
        else:
            self.left = self._state(session)

    def forget(self) -> None:
        """A chunk was rolled back: what it read was never confirmed by a commit."""
        self.left = self.seen = None

    def _state(self, session: Session) -> tuple[Any, int, int]:
        raw: Any = session.connection().connection.dbapi_connection
        cursor = raw.cursor()
        try:
            if self.postgres:
                found = cursor.execute(
                    "SELECT version FROM consent_versions WHERE id = 1").fetchall()
                # no counter row: nothing proves an answer still holds
                return (None, found[0][0], 0) if found else (object(), 0, 0)
            [(version,)] = cursor.execute("PRAGMA data_version").fetchall()
        finally:
            cursor.close()
        return raw, version, raw.total_changes

    def missing(self, pseudonyms: list[str]) -> list[str]:
        answers = self.answers
        return [pseudonym for pseudonym in pseudonyms if pseudonym not in answers]

    def fill(self, granted: dict[str, float], asked: list[str]) -> None:
        """Record the answers for ``asked`` (``granted``: those with consent, and since when)."""
        self.reads += len(asked)
        self.answers.update((pseudonym, granted.get(pseudonym)) for pseudonym in asked)
