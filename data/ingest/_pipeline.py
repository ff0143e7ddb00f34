"""The ingestion pipeline: chunks of checked rows → consent, duplicates, bounds → the store.

Owns the run: the public entry points (``ingest_rows``, ``ingest_file``), one transaction per
chunk, and the order of the steps inside it — take the product's lock, read what the chunk's
decisions depend on, decide, insert, write the quarantine, subjects, cube marks and the batch's
new position. The steps themselves live in the modules it drives: the batch record and report
(``_batches``), the decisions (``_admission``), the driver SQL per dialect (``_sql``, over the
shared ``data.bulk`` loader), the consent and count caches (``_consent_cache``,
``_count_cache``) and the store's tuning for a bulk run (``_tuning``).

The rows arrive checked by the rules (``_checking``; for a large file in a worker process that
runs ahead while this one stores). A chunk is atomic: its events, quarantined rows, subjects,
cube marks and the batch's new position and counts commit together or not at all. Resuming
after the last committed position therefore stores every event exactly once and quarantines
every rejected row exactly once.

It must never store an event of a subject without a "granted" consent for the product's
vertical at the event's time, never store more than the product's
``max_events_per_subject_per_day`` events of one event type per subject and UTC day, nor, when
the product declares it, more than ``max_events_per_subject_per_month`` per subject and UTC
calendar month (the privacy unit's bounds, per metric: every metric counts one event type; both
apply) — also when several batches of one product are ingested at once (see
``_BOUND_LOCK_CLASS``) — and never drop a row silently:
each ends accepted, duplicate (counted, skipped), bounded (quarantined) or rejected
(quarantined with its reason and a redacted copy).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.catalog import Catalog
from data.engine import Store
from data.errors import InvalidInput, StoreError, VeilError
from data.ingest._admission import _KEY, _MONTH, _admit, _first_accepted, _Outcome
from data.ingest._batches import (
    ACCEPTED,
    BOUNDED,
    DUPLICATE,
    REJECTED,
    IngestReport,
    RowResult,
    _advance_batch,
    _create_batch,
    _describe,
    _final_report,
    _finish_batch,
    _previous_batch,
    _report,
    _restart_batch,
    _utcnow,
)
from data.ingest._checking import CheckedChunk, check_chunks, checked_file_chunks
from data.ingest._consent_cache import _ConsentCache
from data.ingest._count_cache import _CountCache
from data.ingest._rules import Rules
from data.ingest._sources import FileSource, fingerprint
from data.ingest._sql import _Sql
from data.locks import product_lock
from data.retention import closed_before
from data.ingest._tuning import _BulkSettings, _Statistics
from data.models import VERTICAL_EVENT_MODELS, CubePending, IngestBatch, QuarantinedRow

_PENDING = CubePending.__tablename__
_QUARANTINE = QuarantinedRow.__tablename__

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "IngestReport",
    "Progress",
    "RowResult",
    "ingest_file",
    "ingest_rows",
]

#: Rows per chunk transaction. The event tables' indexes have random keys (hashes), so a chunk
#: dirties index pages all over them and the cost of a commit grows with the table, not the
#: chunk: bigger chunks write each page for more rows (10,000-row chunks measured 1.6× slower
#: than 50,000 on SQLite). 50,000 holds the embedded store's write lock for a second or two.
DEFAULT_CHUNK_ROWS = 50_000

#: Progress callback: (bytes done, bytes total, rows done).
Progress = Callable[[int, int, int], None]

# --- public entry points ---------------------------------------------------------------------


def ingest_rows(store: Store, catalog: Catalog, rows: Iterable[Any], *, tenant: str,
                product: str, secret: str, source: str = "python",
                chunk_rows: int = DEFAULT_CHUNK_ROWS, with_results: bool = False,
                now: datetime | None = None) -> IngestReport:
    """Ingest already-parsed rows (mappings; anything else is quarantined as malformed).

    Positions are 1-based indexes into ``rows``. Each chunk of ``chunk_rows`` commits on its
    own; a batch that fits one chunk (an API request) is all-or-nothing. With ``with_results``
    the report lists every row's outcome.
    """
    size = _chunk_size(chunk_rows)
    rules = Rules(catalog, tenant=tenant, product=product, secret=secret, now=now,
                  closed_before=closed_before(store, catalog, tenant=tenant, product=product,
                                              now=now))
    run = _Run(store, rules, source=source, fingerprint=None, with_results=with_results)
    return run.execute(check_chunks(rules, enumerate(rows, 1), size))


def ingest_file(store: Store, catalog: Catalog, path: Any, *, tenant: str, product: str,
                secret: str, format: str | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                progress: Progress | None = None, now: datetime | None = None) -> IngestReport:
    """Ingest a CSV or JSONL file as a stream, resuming an interrupted run of the same file.

    The file is identified by its SHA-256: a re-run after a crash continues after the last
    committed chunk; a re-run of a file already ingested in full changes nothing and returns
    that batch's report with ``already_ingested``. A large file is read and checked by a
    worker process while this one stores (``_checking``); the result is the same.
    """
    size = _chunk_size(chunk_rows)
    rules = Rules(catalog, tenant=tenant, product=product, secret=secret, now=now,
                  closed_before=closed_before(store, catalog, tenant=tenant, product=product,
                                              now=now))
    source = FileSource(path, format=format)
    digest = fingerprint(source.path)
    previous = _previous_batch(store, tenant=rules.tenant, product=rules.product,
                               fingerprint=digest)
    if previous is not None and previous.status == "succeeded":
        return _report(previous, seconds=0.0, already_ingested=True)
    run = _Run(store, rules, source=str(source.path), fingerprint=digest, with_results=False,
               resume=previous)
    with checked_file_chunks(source, rules, after=run.position, chunk_rows=size) as chunks:
        return run.execute(chunks, progress=progress, size=source.size)


def _chunk_size(chunk_rows: int) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise InvalidInput(f"chunk size must be a positive number of rows, got {chunk_rows!r}")
    return chunk_rows


# --- one run of a batch ----------------------------------------------------------------------


class _Run:
    """One pass over a source: creates (or resumes) the batch, then commits chunk by chunk."""

    def __init__(self, store: Store, rules: Rules, *, source: str, fingerprint: str | None,
                 with_results: bool, resume: IngestBatch | None = None):
        self.store, self.rules = store, rules
        self.model = VERTICAL_EVENT_MODELS[rules.spec.vertical]
        self.table = self.model.__tablename__
        self.sql = _Sql(store.dialect)
        # The hot path talks to the driver directly (see _Sql): its errors count as store errors.
        self.store_errors = (SQLAlchemyError, store.engine.dialect.loaded_dbapi.Error)
        self.bound = rules.spec.max_events_per_subject_per_day
        self.month_bound = rules.spec.max_events_per_subject_per_month  # None: not declared
        # SQLite needs no lock of its own: BEGIN IMMEDIATE already serialises its writers.
        self.bound_lock = (product_lock(rules.tenant, rules.product)
                           if store.dialect == "postgresql" else None)
        self.with_results = with_results
        self.results: list[RowResult] = []
        self.subjects_seen: set[str] = set()
        self.subjects_pending: Iterable[str] = ()
        self.statistics = _Statistics(store, self.table)
        self.consent_cache = _ConsentCache(store.dialect)
        # PostgreSQL: stored counts carried between chunks (see _CountCache for why not SQLite)
        self.count_cache = (_CountCache(self.table, monthly=self.month_bound is not None)
                            if store.dialect == "postgresql" else None)
        self.optimistic = True  # see _decide_and_insert
        self.bulk = _BulkSettings(store)
        self.started = time.perf_counter()
        if resume is not None:
            self.batch_id = resume.id
            self.position = self.resumed_after = resume.position
            self.counts = Counter({name: getattr(resume, name) for name in
                                   ("rows", ACCEPTED, DUPLICATE, BOUNDED, REJECTED)})
            self.reasons = Counter(resume.reasons)
            _restart_batch(store, self.batch_id)
        else:
            self.batch_id = str(uuid.uuid4())
            self.position = self.resumed_after = 0
            self.counts = Counter()
            self.reasons = Counter()
            _create_batch(store, self.batch_id, tenant=rules.tenant, product=rules.product,
                          source=source, fingerprint=fingerprint)
        self.label = f"{source} (batch {self.batch_id[:8]})"[:512]

    def execute(self, chunks: Iterable[CheckedChunk], *, progress: Progress | None = None,
                size: int = 0) -> IngestReport:
        # No writer thread: one overlapping the checks was measured slower, because the driver
        # releases and re-takes the GIL for every row it inserts. The overlap that pays is the
        # rules in another process (``_checking``), which brings its own interpreter.
        try:
            try:
                done = 0
                if progress is not None:
                    progress(0, size, self.counts["rows"])
                for chunk in chunks:
                    self.statistics.before_chunk()
                    self.statistics.after_chunk(self._store(chunk))
                    if progress is not None:
                        done = chunk.bytes_read
                        progress(done, size, self.counts["rows"])
                if progress is not None and done < size:
                    progress(size, size, self.counts["rows"])
            finally:
                self.bulk.restore()
            self.statistics.after_run()
            self._finish("succeeded", None)
        except BaseException as exc:
            self._finish("failed", _describe(exc))
            if isinstance(exc, VeilError) or not isinstance(exc, (SQLAlchemyError, OSError)):
                raise
            raise StoreError(
                f"Ingest batch {self.batch_id} stopped at position {self.position}: "
                f"{_describe(exc)}. Every chunk up to that position is stored; run the same "
                f"command again to continue after it.") from exc
        return _final_report(self.store, self.batch_id,
                             seconds=time.perf_counter() - self.started,
                             resumed_after=self.resumed_after, results=self.results)

    def _finish(self, status: str, error: str | None) -> None:
        _finish_batch(self.store, self.batch_id, status, error)

    # --- one chunk -----------------------------------------------------------------------------

    def _store(self, chunk: CheckedChunk) -> int:
        """Decide and write one chunk in one transaction; returns the events stored."""
        try:
            with self.store.write.begin() as session:
                self.bulk.begin(session)
                if self.bound_lock is not None and chunk.events:
                    # Before the first read the decisions depend on: see _BOUND_LOCK_CLASS.
                    self.sql.lock_product(session, self.bound_lock)
                if self.count_cache is not None:
                    self.count_cache.begin(session)  # after the lock, before any read
                outcome = self._decide_and_insert(session, chunk)
                self._write(session, chunk, outcome)
                self.consent_cache.chunk_written(session)
                if self.count_cache is not None:
                    self.count_cache.chunk_written(session, chunk.events, outcome.refused,
                                                   inserted=bool(outcome.accepted))
        except self.store_errors as exc:
            self.consent_cache.forget()
            if self.count_cache is not None:
                self.count_cache.forget()
            raise StoreError(
                f"Ingest batch {self.batch_id}: the chunk ending at position {chunk.last} could "
                f"not be stored and was rolled back: {_describe(exc)}. Every earlier chunk is "
                f"stored; run the same command again to continue.") from exc
        except BaseException:
            self.consent_cache.forget()
            if self.count_cache is not None:
                self.count_cache.forget()
            raise
        self.bulk.committed()
        self.position = chunk.last
        if len(self.subjects_seen) > 1_000_000:  # bound memory on very large runs
            self.subjects_seen.clear()
        self.subjects_seen.update(self.subjects_pending)
        self.subjects_pending = ()
        self.counts["rows"] += chunk.rows
        for name in (ACCEPTED, DUPLICATE, BOUNDED, REJECTED):
            self.counts[name] += outcome.counts[name]
        self.reasons.update(outcome.reasons)
        if outcome.results is not None:
            self.results.extend(sorted(outcome.results, key=lambda r: r.position))
        return len(outcome.accepted)

    def _decide_and_insert(self, session: Session, chunk: CheckedChunk) -> _Outcome:
        """Decide the chunk's events and insert the accepted ones.

        The decision first assumes that none of the chunk's event ids is stored yet — the usual
        case, which saves a read of one index seek per event — and then proves it: the ids of
        the events it did not accept (few: over a bound, no consent, or repeated here) are
        read, and the accepted ones are inserted inside a savepoint by a statement that cannot
        store an id twice: ``INSERT OR IGNORE`` on the embedded store (which ignores exactly
        the rows whose id is stored, and says how many went in), ``COPY`` on PostgreSQL (which
        fails whole on the event-id primary key if any id is stored). Every id of the chunk is
        in one of the two sets. If either finds a stored id, the savepoint is rolled back and
        the chunk decided again with the stored ids read first. The run then reads them first
        for the rest of its chunks: a source that re-sends one chunk's events usually re-sends
        the next.
        """
        events = chunk.events
        if self.optimistic and events:
            outcome = self._decided(session, chunk, stored=set())
            refused = outcome.refused
            others: list[str] = []
            if refused:  # the ids only refused events carry (a repeated id may be accepted)
                kept = {events[i][0] for i in chunk.repeated if i not in refused}
                others = sorted({events[i][0] for i in refused} - kept)
            if not (others and self.sql.existing_events(session, self.table, others)) \
                    and self.sql.insert_new_events(session, self.table, outcome.accepted):
                return outcome
            self.optimistic = False
        stored = (self.sql.existing_events(session, self.table, sorted(map(_KEY, events)))
                  if events else set())
        outcome = self._decided(session, chunk, stored=stored)
        if outcome.accepted:
            # In the chunk's order, (pseudonym, time): the subject index takes its inserts in
            # key order.
            self.sql.insert_events(session, self.table, outcome.accepted)
        return outcome

    def _decided(self, session: Session, chunk: CheckedChunk, *, stored: set[str]) -> _Outcome:
        """The chunk's outcome: the rules' refusals, then ``_admit`` after the set-based reads
        of consent and daily (and monthly) counts (``stored``: the chunk's event ids already
        stored)."""
        outcome = _Outcome([] if self.with_results else None)
        for position, why, raw in chunk.rejected:
            outcome.reject(position, why, raw)
        if chunk.events:
            granted = self._consent(session, chunk.subjects)
            counts, month_counts = self._stored_counts(session, chunk)
            _admit(chunk, outcome, stored=stored, granted=granted, counts=counts,
                   bound=self.bound, vertical=self.rules.spec.vertical,
                   month_counts=month_counts, month_bound=self.month_bound)
        outcome.settle()
        return outcome

    # --- stored counts: the cache, then set-based reads of the store (see _CountCache) ----------

    def _stored_counts(self, session: Session, chunk: CheckedChunk
                       ) -> tuple[dict[tuple[str, str, str], int],
                                  dict[tuple[str, str, str], int] | None]:
        """Stored events per (pseudonym, day, event type) of the chunk's groups and, for a
        monthly bound, per (pseudonym, month, event type); absent: none. On PostgreSQL a subject
        met for the first time is read by its days (or months) here, one seek each, as before;
        met again, over this chunk's whole span (one range seek); after that only its days or
        months outside that span are read, and the rest come from the count cache. On SQLite
        every subject-day (or subject-month) is read, one seek each."""
        cache = self.count_cache
        monthly = self.month_bound is not None
        tenant, product = self.rules.tenant, self.rules.product
        if cache is None:
            if not monthly:
                return self.sql.daily_counts(session, self.table, tenant=tenant,
                                             product=product,
                                             subject_days=chunk.subject_days), None
            # one read gives both: every subject-day lies in a subject-month
            return self.sql.day_and_month_counts(session, self.table, tenant=tenant,
                                                 product=product,
                                                 subject_months=chunk.subject_months)
        new, outside, span, firsts = cache.unknown(
            chunk.subjects, chunk.events, chunk.subject_months if monthly else chunk.subject_days)
        read: dict[tuple[str, str, str], int] = {}
        if new and span is not None:
            read.update(self.sql.span_counts(
                session, self.table, tenant=tenant, product=product,
                pseudonyms=self.sql.values(new), first=span[0], end=cache.span_end(span[1])))
        if outside:
            if monthly:  # every day of those subject-months
                days, _ = self.sql.day_and_month_counts(
                    session, self.table, tenant=tenant, product=product,
                    subject_months=self.sql.values(outside))
            else:
                days = self.sql.daily_counts(session, self.table, tenant=tenant,
                                             product=product,
                                             subject_days=self.sql.values(outside))
            read.update(days)
        cache.fill(read, new=new, span=span, outside=outside, met=firsts)
        return cache.counts_for(chunk.events)

    # --- consent: the cache, then one read of the store (see _Sql) ---------------------------------

    def _consent(self, session: Session, pseudonyms: list[str]) -> Mapping[str, float | None]:
        """pseudonym → epoch seconds since which consent is granted (absent or None: no
        consent), for at least ``pseudonyms`` (sorted). Answers the store gave for earlier
        chunks of this run are reused while they provably hold — on the embedded store while
        nothing else has been committed to it, on PostgreSQL while no consent has changed
        (``_ConsentCache``, whose answers are returned as they are)."""
        if not pseudonyms:
            return {}
        cache = self.consent_cache
        missing = cache.missing(pseudonyms) if cache.valid(session) else pseudonyms
        granted = (self.sql.granted_consent(session, tenant=self.rules.tenant,
                                            vertical=self.rules.spec.vertical,
                                            pseudonyms=missing) if missing else {})
        cache.fill(granted, missing)
        return cache.answers

    # --- writes --------------------------------------------------------------------------------

    def _write(self, session: Session, chunk: CheckedChunk, outcome: _Outcome) -> None:
        rows, last = chunk.rows, chunk.last
        now = _utcnow()
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        accepted = outcome.accepted
        tenant, product = self.rules.tenant, self.rules.product
        if accepted:  # (the events themselves are in: _decide_and_insert)
            # Subjects seen earlier in this run are known to exist; the rest are inserted
            # if missing, with the district and time of their first accepted event here (the
            # first of theirs in the chunk's order).
            new = _first_accepted(chunk, outcome.refused, skip=self.subjects_seen)
            self.sql.insert_subjects(session, tenant, new)
            self.subjects_pending = [pseudonym for pseudonym, _ in new]
            self.sql.insert(session, _PENDING, ("tenant_id", "product_id", "month",
                                                      "reason", "marked_at"),
                            [(tenant, product, month, "ingest", stamp)
                             for month in sorted(set(map(_MONTH, accepted)))])
        if outcome.quarantine:
            self.sql.insert(session, _QUARANTINE, ("tenant_id", "product_id", "source",
                                                    "position", "reason", "raw", "at"),
                            [(tenant, product, self.label, position, reason[:512], raw, stamp)
                             for position, reason, raw in outcome.quarantine])
        _advance_batch(session, self.batch_id, position=self.position, last=last, rows=rows,
                       counts=outcome.counts, reasons=self.reasons + outcome.reasons)
