"""The count cache: stored events per subject-day a run has read or stored, reused while they hold.

Owns deciding which stored counts a chunk's contribution bounds must read from the store and
which it may take from earlier chunks of the same run (see ``_CountCache``). It never answers
for a store it cannot prove unchanged but for the run's own inserts, and never decides a bound
itself: the pipeline reads the counts (``_sql``) and admission applies them (``_admission``).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, timedelta
from itertools import compress, repeat
from operator import is_, itemgetter
from typing import Any

from sqlalchemy.orm import Session

from data.models import EventVersion

_VERSIONS = EventVersion.__tablename__

Group = tuple[str, str, str]  # (pseudonym, day or month, event type)

_SUBJECT, _TYPE, _DAY, _MONTH = itemgetter(4), itemgetter(3), itemgetter(6), itemgetter(7)


class _CountCache:
    """Stored events per (subject, day, event type) — and per (subject, month, event type) for
    a product with a monthly bound — that a run read or stored, kept while they provably hold.

    Each chunk used to read the stored counts of every subject-day (or subject-month) it holds,
    one index seek each, although a subject appears in many chunks of a large file: on
    PostgreSQL that read was a fifth of a million-event run. Now the first chunk that holds a
    subject reads the subject's stored events over every day (or month) that chunk spans — the
    subject's *span*, one range seek — and later chunks take the counts of days (or months)
    inside a known span from here, adding each chunk's accepted events as it commits. A day or
    month outside its subject's span is read as before (and known from then on).

    The counts hold while nobody else has changed the event table since the run read them:
    the ``event_versions`` counter of the table, which a statement trigger moves in every
    transaction that changes it, whoever writes (migration 0022), is read at the chunk's start,
    after the product lock and before any read; the run's one COPY per chunk moves it by exactly
    one and holds the counter's row until the commit, so a chunk that finds it one above the
    start after its COPY knows nobody else changed the table in between, and leaves that value
    for the next chunk to find. Anything else — another product's chunk, a purge, a tool writing
    events — empties the cache, and the next chunk reads everything again.

    PostgreSQL only: there the read costs the server an index seek per key while the storing
    process waits. On SQLite the same read runs in this process at C speed, and keeping the
    counts in Python measured no cheaper (2.9 s per million events read, 3.6 s kept).

    Bounded: emptied at two million groups.
    """

    _LIMIT = 2_000_000

    def __init__(self, table: str, *, monthly: bool):
        self.table = table
        self.monthly = monthly  # the unit a span covers: months (monthly bound) or days
        # Counters: a chunk's accepted events are added in one C loop (``update``).
        self.days: Counter[Group] = Counter()
        self.months: Counter[Group] = Counter()
        self.spans: dict[str, tuple[str, str]] = {}  # pseudonym → (first, last) unit known
        self.extra: set[tuple[str, str]] = set()  # (pseudonym, unit) known outside its span
        self.met: set[str] = set()  # subjects read by key (their first chunk), no span yet
        self.left: tuple[Any, int] | None = None  # the counter as the last chunk left it
        self.start: tuple[Any, int] | None = None  # the counter as this chunk found it
        self.reads = 0  # subject spans and units read from the store (tests look at it)
        self._last: tuple[list[tuple], list[Group], list[Group] | None] | None = None

    # --- validity ------------------------------------------------------------------------------

    def begin(self, session: Session) -> None:
        """Call at the chunk's start, after its lock and before any read: keeps the counts only
        if the store is as the last chunk left it."""
        self.start = now = self._state(session)
        left = self.left
        if not (left is not None and now[0] is left[0] and now[1:] == left[1:]
                and len(self.days) < self._LIMIT):
            self.clear()

    def chunk_written(self, session: Session, events: list[tuple], refused: set[int], *,
                      inserted: bool) -> None:
        """Note the store as this chunk leaves it and count its accepted events — ``events``
        but the indexes in ``refused`` (call inside the transaction, after its inserts;
        ``inserted``: whether it inserted any event)."""
        start = self.start
        if start is None:
            self.left = None
        elif not inserted:
            self.left = start
        else:
            now = self._state(session)
            # Our COPY moved it by one; more means another writer came in between.
            self.left = now if now[1] == start[1] + 1 and now[0] is start[0] else None
        days_groups, month_groups = self._groups(events)
        if refused:
            kept = [True] * len(events)
            for i in refused:
                kept[i] = False
            days_groups = compress(days_groups, kept)
            if month_groups is not None:
                month_groups = compress(month_groups, kept)
        self.days.update(days_groups)
        if month_groups is not None:
            self.months.update(month_groups)
        self._last = None  # the chunk is done: let its events go

    def forget(self) -> None:
        """A chunk was rolled back: nothing it read or counted is confirmed by a commit."""
        self.clear()
        self.left = self.start = None

    def clear(self) -> None:
        self._last = None
        self.days.clear()
        self.months.clear()
        self.spans.clear()
        self.extra.clear()
        self.met.clear()

    def _state(self, session: Session) -> tuple[Any, int]:
        raw: Any = session.connection().connection.dbapi_connection
        with raw.cursor() as cursor:
            found = cursor.execute(f"SELECT version FROM {_VERSIONS} WHERE name = %s",
                                   (self.table,)).fetchall()
        # no counter row: nothing proves the counts still hold
        return (None, found[0][0]) if found else (object(), 0)

    # --- what a chunk must read ----------------------------------------------------------------

    def unknown(self, subjects: list[str], events: list[tuple], keys: str
                ) -> tuple[list[str], list[str], tuple[str, str] | None, set[str]]:
        """For a chunk's ``subjects`` (sorted, distinct), ``events`` and "pseudonym|unit" keys
        (one JSON array): the subjects met before but never read over a span (to read over
        this chunk's span), the keys to read one by one — those of subjects met for the first
        time and those of known subjects outside their span —, the chunk's span (first, last
        unit; None without events), and the subjects met for the first time."""
        if not events:
            return [], [], None, set()
        units = list(map(_MONTH if self.monthly else _DAY, events))
        first, last = min(units), max(units)
        spans, met = self.spans, self.met
        # C loops over the subjects: a run's spans are a few shared tuples (one per chunk
        # that read), so whether each covers this chunk is decided once per span.
        found = list(map(spans.get, subjects))
        unspanned = list(compress(subjects, map(is_, found, repeat(None))))
        again = list(compress(unspanned, map(met.__contains__, unspanned)))
        firsts = set(unspanned).difference(met) if len(again) < len(unspanned) else set()
        short = {span for span in set(found)
                 if span is not None and not (span[0] <= first and last <= span[1])}
        # known subjects whose span does not cover the chunk's
        partly = set(compress(subjects, map(short.__contains__, found))) if short else set()
        by_key: list[str] = []
        if firsts or partly:
            extra = self.extra
            for key in json.loads(keys):
                pseudonym, unit = key.split("|", 1)
                if pseudonym in firsts:
                    by_key.append(key)
                elif pseudonym in partly:
                    span = spans[pseudonym]
                    if not (span[0] <= unit <= span[1]) and (pseudonym, unit) not in extra:
                        by_key.append(key)
        return again, by_key, (first, last), firsts

    def span_end(self, last: str) -> str:
        """The first day after the unit ``last`` (ISO): the exclusive end of a span's read."""
        day = date.fromisoformat(last)
        if not self.monthly:
            return (day + timedelta(days=1)).isoformat()
        return (date(day.year + 1, 1, 1) if day.month == 12
                else date(day.year, day.month + 1, 1)).isoformat()

    def fill(self, read: dict[Group, int], *, new: list[str], span: tuple[str, str] | None,
             outside: list[str], met: set[str]) -> None:
        """Record what the chunk read: the stored (pseudonym, day, type) counts ``read`` of the
        ``new`` subjects over ``span`` and of the ``outside`` keys (absent groups: none), and
        the subjects ``met`` for the first time. A read gives whole days (whole months for a
        monthly bound) as stored now, the run's own earlier chunks included, so its counts
        replace what was known of them."""
        self.reads += len(new) + len(outside)
        dict.update(self.days, read)  # replace (Counter.update would add)
        if self.monthly:
            sums: Counter[Group] = Counter()
            for (pseudonym, day, event_type), n in read.items():
                sums[(pseudonym, day[:8] + "01", event_type)] += n
            dict.update(self.months, sums)
        if span is not None:
            self.spans.update(dict.fromkeys(new, span))
        self.extra.update(tuple(key.split("|", 1)) for key in outside)
        self.met.update(met)

    def counts_for(self, events: list[tuple]) -> tuple[dict[Group, int], dict[Group, int] | None]:
        """The stored counts of the chunk's groups (copies: admission adds to them), daily and,
        for a monthly bound, monthly; groups with none are absent. The loops are C's (map,
        compress): this runs for every event of a run."""
        day_groups, month_groups = self._groups(events)
        found = list(map(self.days.get, day_groups))
        daily = dict(compress(zip(day_groups, found), found))
        if month_groups is None:
            return daily, None
        found = list(map(self.months.get, month_groups))
        return daily, dict(compress(zip(month_groups, found), found))

    def _groups(self, events: list[tuple]) -> tuple[list[Group], list[Group] | None]:
        """Each event's (pseudonym, day, type) and, for a monthly bound, (pseudonym, month,
        type) group, in step with ``events``; the last chunk's are kept for its commit."""
        last = self._last
        if last is not None and last[0] is events:
            return last[1], last[2]
        subjects, types = list(map(_SUBJECT, events)), list(map(_TYPE, events))
        days = list(zip(subjects, map(_DAY, events), types))
        months = list(zip(subjects, map(_MONTH, events), types)) if self.monthly else None
        self._last = (events, days, months)
        return days, months
