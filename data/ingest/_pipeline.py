"""The ingestion pipeline: chunks of checked rows → consent, duplicates, bounds → the store.

Owns everything between a validated row and a committed one: the batch record and its running
report, per-chunk transactions, set-based duplicate, consent and contribution-bound checks (one
query per chunk, never per row), bulk inserts (executemany on SQLite, COPY on PostgreSQL), the
quarantine, the subjects table and the marks that tell incremental materialisation which months
changed.

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

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from types import MappingProxyType
from typing import Any

import psycopg
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.catalog import Catalog
from data.engine import Store
from data.errors import InvalidInput, StoreError, VeilError
from data.ingest._checking import CheckedChunk, check_chunks, checked_file_chunks
from data.ingest._rules import EVENT_COLUMNS, Rejection, Rules
from data.ingest._sources import FileSource, fingerprint
from data.models import (
    VERTICAL_EVENT_MODELS,
    CubePending,
    IngestBatch,
    QuarantinedRow,
    Subject,
    SubjectConsent,
)

_SUBJECTS = Subject.__tablename__
_CONSENT = SubjectConsent.__tablename__
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
_MAX_ERROR_CHARS = 2_000

#: Progress callback: (bytes done, bytes total, rows done).
Progress = Callable[[int, int, int], None]

#: The first half of the two-integer key of the PostgreSQL advisory lock a chunk takes before it
#: reads anything its decisions depend on ("veil" in ASCII; the second half is
#: ``_bound_lock_key``). Each contribution bound (per day, and per month when declared) is
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
_BOUND_LOCK_CLASS = 0x7665696C


def _bound_lock_key(tenant: str, product: str) -> int:
    """The second half of the advisory lock's key: a stable signed 32-bit hash of (tenant,
    product) (``hash()`` differs between processes)."""
    digest = hashlib.blake2b(f"{tenant}\x1f{product}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


ACCEPTED, DUPLICATE, BOUNDED, REJECTED = "accepted", "duplicate", "bounded", "rejected"
NO_CONSENT = "no consent"
OVER_BOUND = "over contribution bound"
OVER_MONTH_BOUND = "over monthly contribution bound"


@dataclass(frozen=True, slots=True)
class RowResult:
    """What happened to one row: its source position, status and, unless accepted, why."""

    position: int
    status: str  # accepted | duplicate | bounded | rejected
    reason: str | None = None


@dataclass(frozen=True)
class IngestReport:
    """A batch's report: accepted / duplicate / bounded / rejected (by reason), cumulative over
    resumed runs of the same file."""

    batch_id: str
    tenant: str
    product: str
    source: str
    status: str
    rows: int
    accepted: int
    duplicate: int
    bounded: int
    rejected: int
    reasons: Mapping[str, int]
    seconds: float
    resumed_after: int = 0
    already_ingested: bool = False
    results: tuple[RowResult, ...] = field(default=(), repr=False)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _describe(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


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
    rules = Rules(catalog, tenant=tenant, product=product, secret=secret, now=now)
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
    rules = Rules(catalog, tenant=tenant, product=product, secret=secret, now=now)
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


def _previous_batch(store: Store, *, tenant: str, product: str,
                    fingerprint: str) -> IngestBatch | None:
    try:
        with store.read() as session:
            return session.scalars(
                select(IngestBatch)
                .where(IngestBatch.tenant_id == tenant, IngestBatch.product_id == product,
                       IngestBatch.fingerprint == fingerprint)
                .order_by(IngestBatch.started_at.desc(), IngestBatch.id)
                .limit(1)).first()
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot read earlier ingest batches: {_describe(exc)}") from exc


def _report(batch: IngestBatch, *, seconds: float, already_ingested: bool = False,
            resumed_after: int = 0, results: Sequence[RowResult] = ()) -> IngestReport:
    return IngestReport(
        batch_id=batch.id, tenant=batch.tenant_id, product=batch.product_id,
        source=batch.source, status=batch.status, rows=batch.rows, accepted=batch.accepted,
        duplicate=batch.duplicate, bounded=batch.bounded, rejected=batch.rejected,
        reasons=MappingProxyType(dict(sorted(batch.reasons.items()))), seconds=seconds,
        resumed_after=resumed_after, already_ingested=already_ingested, results=tuple(results))


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
        self.bound_lock = ((_BOUND_LOCK_CLASS, _bound_lock_key(rules.tenant, rules.product))
                           if store.dialect == "postgresql" else None)
        self.with_results = with_results
        self.results: list[RowResult] = []
        self.subjects_seen: set[str] = set()
        self.subjects_pending: Iterable[str] = ()
        self.statistics = _Statistics(store, self.table)
        self.consent_cache = _ConsentCache(store.dialect == "sqlite")
        self.optimistic = True  # see _decide_and_insert
        self.insert_new = (_copy_new_events if store.dialect == "postgresql"
                           else _insert_new_events)
        self.bulk = _BulkSettings(store)
        self.started = time.perf_counter()
        if resume is not None:
            self.batch_id = resume.id
            self.position = self.resumed_after = resume.position
            self.counts = Counter({name: getattr(resume, name) for name in
                                   ("rows", ACCEPTED, DUPLICATE, BOUNDED, REJECTED)})
            self.reasons = Counter(resume.reasons)
            self._restart()
        else:
            self.batch_id = str(uuid.uuid4())
            self.position = self.resumed_after = 0
            self.counts = Counter()
            self.reasons = Counter()
            self._create(source, fingerprint)
        self.label = f"{source} (batch {self.batch_id[:8]})"[:512]

    def _create(self, source: str, fingerprint: str | None) -> None:
        try:
            with self.store.write.begin() as session:
                session.add(IngestBatch(
                    id=self.batch_id, tenant_id=self.rules.tenant,
                    product_id=self.rules.product, source=source[:512],
                    fingerprint=fingerprint, status="running", started_at=_utcnow(),
                    position=0, rows=0, accepted=0, duplicate=0, bounded=0, rejected=0,
                    reasons={}))
        except SQLAlchemyError as exc:
            raise StoreError(f"Cannot start an ingest batch: {_describe(exc)}") from exc

    def _restart(self) -> None:
        try:
            with self.store.write.begin() as session:
                session.execute(update(IngestBatch).where(IngestBatch.id == self.batch_id)
                                .values(status="running", finished_at=None, error=None))
        except SQLAlchemyError as exc:
            raise StoreError(f"Cannot resume ingest batch {self.batch_id}: "
                             f"{_describe(exc)}") from exc

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
        with self.store.read() as session:
            batch = session.get(IngestBatch, self.batch_id)
            assert batch is not None
            return _report(batch, seconds=time.perf_counter() - self.started,
                           resumed_after=self.resumed_after, results=self.results)

    def _finish(self, status: str, error: str | None) -> None:
        try:
            with self.store.write.begin() as session:
                session.execute(update(IngestBatch).where(IngestBatch.id == self.batch_id).values(
                    status=status, finished_at=_utcnow(),
                    error=None if error is None else error[:_MAX_ERROR_CHARS]))
        except SQLAlchemyError:
            if status == "succeeded":
                raise
            # Recording a failure must not hide the failure itself; the batch stays "running"
            # and a re-run resumes it all the same.

    # --- one chunk -----------------------------------------------------------------------------

    def _store(self, chunk: CheckedChunk) -> int:
        """Decide and write one chunk in one transaction; returns the events stored."""
        try:
            with self.store.write.begin() as session:
                self.bulk.begin(session)
                if self.bound_lock is not None and chunk.events:
                    # Before the first read the decisions depend on: see _BOUND_LOCK_CLASS.
                    # For this transaction only: no sequential scans (see _Statistics), and
                    # no JIT compilation (a chunk's reads look costly, and compiling them took
                    # longer than running them).
                    self.sql.run(session, "SELECT pg_advisory_xact_lock(%s, %s), "
                                 "set_config('enable_seqscan', 'off', true), "
                                 "set_config('jit', 'off', true)", self.bound_lock)
                outcome = self._decide_and_insert(session, chunk)
                self._write(session, chunk, outcome)
                self.consent_cache.chunk_written(session)
        except self.store_errors as exc:
            self.consent_cache.forget()
            raise StoreError(
                f"Ingest batch {self.batch_id}: the chunk ending at position {chunk.last} could "
                f"not be stored and was rolled back: {_describe(exc)}. Every earlier chunk is "
                f"stored; run the same command again to continue.") from exc
        except BaseException:
            self.consent_cache.forget()
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
            if not (others and self._existing_events(session, others)) \
                    and self.insert_new(session, self.table, outcome.accepted):
                return outcome
            self.optimistic = False
        stored = (self._existing_events(session, sorted(map(_KEY, events))) if events
                  else set())
        outcome = self._decided(session, chunk, stored=stored)
        if outcome.accepted:
            # In the chunk's order, (pseudonym, time): the subject index takes its inserts in
            # key order.
            _bulk_insert(session, self.table, EVENT_COLUMNS, outcome.accepted)
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
            counts = self._daily_counts(session, chunk)
            month_counts = (self._monthly_counts(session, chunk)
                            if self.month_bound is not None else None)
            _admit(chunk, outcome, stored=stored, granted=granted, counts=counts,
                   bound=self.bound, vertical=self.rules.spec.vertical,
                   month_counts=month_counts, month_bound=self.month_bound)
        outcome.settle()
        return outcome

    # --- set-based reads (one statement per chunk; see _Sql) --------------------------------------

    def _existing_events(self, session: Session, keys: list[str]) -> set[str]:
        """The ``keys`` (sorted, so the index is walked in order) already stored."""
        if not keys:
            return set()
        sql = self.sql
        if sql.postgres:
            statement = f"SELECT event_id FROM {self.table} WHERE {sql.in_list('event_id')}"
        else:  # the key list as the outer loop: one ordered index seek per key, no temp index
            statement = (f"SELECT e.event_id FROM json_each(?) AS k CROSS JOIN {self.table} AS e "
                         f"ON e.event_id = k.value")
        return {key for (key,) in sql.run(session, statement, (sql.values(keys),))}

    def _consent(self, session: Session, pseudonyms: list[str]) -> Mapping[str, float | None]:
        """pseudonym → epoch seconds since which consent is granted (absent or None: no
        consent), for at least ``pseudonyms`` (sorted). Answers the embedded store gave for
        earlier chunks of this run are reused while nothing else has been committed to it
        (``_ConsentCache``, whose answers are returned as they are)."""
        if not pseudonyms:
            return {}
        cache = self.consent_cache
        missing = cache.missing(pseudonyms) if cache.valid(session) else pseudonyms
        granted = self._read_consent(session, missing) if missing else {}
        cache.fill(granted, missing)
        return cache.answers if cache.enabled else granted

    def _read_consent(self, session: Session, pseudonyms: list[str]) -> dict[str, float]:
        sql, p = self.sql, self.sql.p
        tenant, vertical = self.rules.tenant, self.rules.spec.vertical
        if sql.postgres:
            rows = sql.run(session, (
                f"SELECT pseudonym, changed_at FROM {_CONSENT} WHERE tenant_id = {p} "
                f"AND vertical = {p} AND status = 'granted' AND {sql.in_list('pseudonym')}"),
                (tenant, vertical, sql.values(pseudonyms)))
        else:
            # The list as the outer loop: one primary-key seek per subject. Left to itself,
            # SQLite reads every granted consent of the tenant through the withdrawals index
            # and filters it, which grows with the number of subjects, not with the chunk.
            rows = sql.run(session, (
                f"SELECT c.pseudonym, c.changed_at FROM json_each(?) AS k CROSS JOIN {_CONSENT} "
                f"AS c ON c.tenant_id = ? AND c.pseudonym = k.value AND c.vertical = ? "
                f"WHERE c.status = 'granted'"), (sql.values(pseudonyms), tenant, vertical))
        epochs: dict[Any, float] = {}  # grants recorded in bulk share their times
        granted = {}
        for pseudonym, changed_at in rows:
            epoch = epochs.get(changed_at)
            if epoch is None:
                epoch = epochs[changed_at] = _epoch(changed_at)
            granted[pseudonym] = epoch
        return granted

    def _daily_counts(self, session: Session,
                      chunk: CheckedChunk) -> dict[tuple[str, str, str], int]:
        """Stored events per (pseudonym, day, event type) for exactly the chunk's subject-days
        ("pseudonym|day", sorted): one index seek per subject-day on (tenant, pseudonym, day),
        never a subject's history. Groups without stored events are absent."""
        subject_days = chunk.subject_days
        if subject_days == "[]":
            return {}
        table, p = self.table, self.sql.p
        if self.sql.postgres:
            statement = (
                f"SELECT e.pseudonym, e.day, e.event_type, count(*) "
                f"FROM unnest({p}::text[], {p}::date[]) AS k(pseudonym, day) "
                f"JOIN {table} AS e ON e.tenant_id = {p} AND e.pseudonym = k.pseudonym "
                f"AND e.day = k.day WHERE e.product_id = {p} "
                f"GROUP BY e.pseudonym, e.day, e.event_type")
            pairs = [key.split("|") for key in json.loads(subject_days)]
            params: tuple = ([pseudonym for pseudonym, _ in pairs], [day for _, day in pairs],
                             self.rules.tenant, self.rules.product)
        else:
            # CROSS JOIN keeps the key list as the outer loop (SQLite's way to fix join order).
            statement = (
                f"SELECT e.pseudonym, e.day, e.event_type, count(*) "
                f"FROM json_each({p}) AS k CROSS JOIN {table} AS e "
                f"ON e.tenant_id = {p} AND e.pseudonym = substr(k.value, 1, 32) "
                f"AND e.day = substr(k.value, 34) WHERE e.product_id = {p} "
                f"GROUP BY e.pseudonym, e.day, e.event_type")
            params = (subject_days, self.rules.tenant, self.rules.product)
        return {(pseudonym, day if isinstance(day, str) else day.isoformat(), event_type): n
                for pseudonym, day, event_type, n in self.sql.run(session, statement, params)}

    def _monthly_counts(self, session: Session,
                        chunk: CheckedChunk) -> dict[tuple[str, str, str], int]:
        """Stored events per (pseudonym, month, event type) for exactly the chunk's
        subject-months ("pseudonym|YYYY-MM-01", sorted): one range seek per subject-month on
        the same (tenant, pseudonym, day) index as the daily counts (the month's days), never
        a subject's history. Groups without stored events are absent."""
        subject_months = chunk.subject_months
        if subject_months == "[]":
            return {}
        table, p = self.table, self.sql.p
        if self.sql.postgres:
            statement = (
                f"SELECT e.pseudonym, k.month, e.event_type, count(*) "
                f"FROM unnest({p}::text[], {p}::date[]) AS k(pseudonym, month) "
                f"JOIN {table} AS e ON e.tenant_id = {p} AND e.pseudonym = k.pseudonym "
                f"AND e.day >= k.month AND e.day < (k.month + interval '1 month')::date "
                f"WHERE e.product_id = {p} GROUP BY e.pseudonym, k.month, e.event_type")
            pairs = [key.split("|") for key in json.loads(subject_months)]
            params: tuple = ([pseudonym for pseudonym, _ in pairs],
                             [month for _, month in pairs], self.rules.tenant,
                             self.rules.product)
        else:
            statement = (
                f"SELECT e.pseudonym, substr(k.value, 34), e.event_type, count(*) "
                f"FROM json_each({p}) AS k CROSS JOIN {table} AS e "
                f"ON e.tenant_id = {p} AND e.pseudonym = substr(k.value, 1, 32) "
                f"AND e.day >= substr(k.value, 34) "
                f"AND e.day < date(substr(k.value, 34), '+1 month') WHERE e.product_id = {p} "
                f"GROUP BY e.pseudonym, substr(k.value, 34), e.event_type")
            params = (subject_months, self.rules.tenant, self.rules.product)
        return {(pseudonym, month if isinstance(month, str) else month.isoformat(), event_type): n
                for pseudonym, month, event_type, n in self.sql.run(session, statement, params)}

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
            if self.sql.postgres and new:  # one statement for all, not one per subject
                self.sql.run(session, (
                    f"INSERT INTO {_SUBJECTS} (tenant_id, pseudonym, district, created_at) "
                    f"SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::timestamp[]) "
                    f"ON CONFLICT DO NOTHING"), (
                    tenant, [pseudonym for pseudonym, _ in new], [row[9] for _, row in new],
                    [row[5] for _, row in new]), fetch=False)
            else:
                self.sql.insert(session, _SUBJECTS, ("tenant_id", "pseudonym", "district",
                                                      "created_at"),
                                [(tenant, pseudonym, row[9], row[5]) for pseudonym, row in new],
                                on_conflict_do_nothing=True)
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
        reasons = self.reasons + outcome.reasons
        done = session.execute(
            update(IngestBatch)
            .where(IngestBatch.id == self.batch_id, IngestBatch.position == self.position)
            .values(position=last, rows=IngestBatch.rows + rows,
                    accepted=IngestBatch.accepted + outcome.counts[ACCEPTED],
                    duplicate=IngestBatch.duplicate + outcome.counts[DUPLICATE],
                    bounded=IngestBatch.bounded + outcome.counts[BOUNDED],
                    rejected=IngestBatch.rejected + outcome.counts[REJECTED],
                    reasons=dict(sorted(reasons.items())))
            .execution_options(synchronize_session=False))
        if done.rowcount != 1:
            raise InvalidInput(
                f"ingest batch {self.batch_id} was advanced by another process while this one "
                f"ran (is the same file being ingested twice at once?); nothing from this "
                f"chunk was stored. Let the other run finish, then re-run to see its report.")


_KEY, _SUBJECT, _MONTH = itemgetter(0), itemgetter(4), itemgetter(7)


def _first_accepted(chunk: CheckedChunk, refused: set[int],
                    skip: set[str]) -> list[tuple[str, tuple]]:
    """(pseudonym, first accepted event) of each subject of the chunk not in ``skip`` that has
    an accepted event, in pseudonym order (``refused``: indexes of the events not accepted)."""
    events = chunk.events
    if not refused:
        return [(subject, events[i]) for subject, i in zip(chunk.subjects, chunk.first_rows)
                if subject not in skip]
    ends = [*chunk.first_rows[1:], len(events)]
    found = []
    for subject, i, end in zip(chunk.subjects, chunk.first_rows, ends):
        if subject in skip:
            continue
        while i < end and i in refused:
            i += 1
        if i < end:
            found.append((subject, events[i]))
    return found


def _admit(chunk: CheckedChunk, outcome: _Outcome, *, stored: set[str],
           granted: Mapping[str, float | None], counts: dict[tuple[str, str, str], int],
           bound: int, vertical: str,
           month_counts: dict[tuple[str, str, str], int] | None = None,
           month_bound: int | None = None) -> None:
    """Decide a chunk's valid events: duplicate, no consent, over a bound, or accepted.

    ``stored``: the chunk's event ids already in the store; ``granted``: pseudonym → epoch
    seconds since which consent is granted (absent or None: not granted); ``counts``: stored
    events per (pseudonym, day, event type), for at least every group of a subject with
    consent (absent: none stored); ``month_counts`` the same per (pseudonym, month, event
    type) when the product declares ``month_bound`` (None: no monthly bound).

    The rule is sequential — events are decided one by one in source order (``_decide_each``)
    — but most events cannot be refused whatever comes before them: their id occurs once in
    the chunk and is not stored, their subject's consent predates all of the subject's events
    here, and their (subject, day, event type) group — and (subject, month, event type) group —
    stays within its bound even if every one of its events here were stored. Those are
    accepted as they are. The rest — and with them every event that shares an id, a doubtful
    subject or a group at risk — are decided one by one, which gives every event exactly the
    answer deciding all of them one by one would (tests/unit/test_ingest_admit.py checks this
    against that one-by-one decision). A group at risk has all its events decided one by one,
    so its running count is exact; a group not at risk cannot reach its bound, so the events
    decided one by one for another reason may undercount it without changing any answer.
    """
    events = chunk.events
    doubtful = [subject for subject, first in zip(chunk.subjects, chunk.first_ats)
                if (since := granted.get(subject)) is None or first < since]
    if bound < 1 or (month_bound is not None and month_bound < 1):
        # the catalog requires >= 1; were it 0, every group would be at risk
        careful = set(range(len(events)))
    else:
        careful = set(chunk.repeated)
        if stored:
            careful.update(i for i, key in enumerate(map(_KEY, events)) if key in stored)
        for subject in doubtful:
            careful.update(_rows_of(events, subject))
        for subject, day, event_type in _at_risk(counts, chunk.crowded, bound):
            careful.update(i for i in _rows_of(events, subject)
                           if events[i][6] == day and events[i][3] == event_type)
        if month_bound is not None:
            for subject, month, event_type in _at_risk(month_counts or {},
                                                       chunk.crowded_months, month_bound):
                careful.update(i for i in _rows_of(events, subject)
                               if events[i][7] == month and events[i][3] == event_type)
    refused = (_decide_each(sorted(careful, key=chunk.positions.__getitem__), chunk, outcome,
                            stored=stored, granted=granted, counts=counts, bound=bound,
                            vertical=vertical, month_counts=month_counts,
                            month_bound=month_bound)
               if careful else set())
    outcome.refused = refused
    outcome.accepted = _without(events, refused) if refused else events
    if outcome.results is not None:
        outcome.results.extend(RowResult(position, ACCEPTED)
                               for i, position in enumerate(chunk.positions) if i not in refused)


def _at_risk(counts: dict[tuple[str, str, str], int], crowded: dict[tuple[str, str, str], int],
             bound: int) -> list[tuple[str, str, str]]:
    """The groups that could reach ``bound`` here: stored events plus the chunk's (a group
    absent from ``crowded`` has at most one event in the chunk) above the bound."""
    return [group for group in counts.keys() | crowded.keys()
            if counts.get(group, 0) + crowded.get(group, 1) > bound]


def _decide_each(order: list[int], chunk: CheckedChunk, outcome: _Outcome, *,
                 stored: set[str], granted: Mapping[str, float | None],
                 counts: dict[tuple[str, str, str], int], bound: int, vertical: str,
                 month_counts: dict[tuple[str, str, str], int] | None = None,
                 month_bound: int | None = None) -> set[int]:
    """Decide the events at ``order`` (indexes into ``chunk.events``, in source order) one by
    one; returns the indexes not admitted. Updates ``counts`` (and ``month_counts``) with the
    admitted events. The daily bound is checked first: an event over both is counted as over
    the daily one."""
    events, positions, ats = chunk.events, chunk.positions, chunk.ats
    refused: set[int] = set()
    # Duplicates of stored events; duplicates within the chunk are settled below, so that a
    # repeat of a row that was not admitted is judged like that row, as it would be in a later
    # chunk.
    fresh = []
    for i in order:
        if events[i][0] in stored:
            outcome.duplicate(positions[i])
            refused.add(i)
        else:
            fresh.append(i)
    # Consent: granted for the vertical, and granted no later than the event happened.
    consenting = []
    for i in fresh:
        since = granted.get(events[i][4])
        if since is None or ats[i] < since:
            outcome.reject(positions[i], Rejection(NO_CONSENT, (
                f"the subject has no granted consent for {vertical} at the event's time")),
                _deidentified_copy(events[i]))
            refused.add(i)
        else:
            consenting.append(i)
    # Contribution bounds per subject, UTC day (and month) and event type, counting stored
    # events first.
    admitted: set[str] = set()
    if month_counts is None:
        month_counts = {}
    for i in consenting:
        row = events[i]
        if row[0] in admitted:
            outcome.duplicate(positions[i])
            refused.add(i)
            continue
        key = (row[4], row[6], row[3])
        used = counts.get(key, 0)
        if used >= bound:
            outcome.bounded(positions[i], Rejection(OVER_BOUND, (
                f"the subject already has {bound} {row[3]} event(s) on {row[6]} "
                f"(at most {bound} per subject per day)")), _deidentified_copy(row))
            refused.add(i)
            continue
        if month_bound is not None:
            month_key = (row[4], row[7], row[3])
            used_in_month = month_counts.get(month_key, 0)
            if used_in_month >= month_bound:
                outcome.bounded(positions[i], Rejection(OVER_MONTH_BOUND, (
                    f"the subject already has {month_bound} {row[3]} event(s) in "
                    f"{row[7][:7]} (at most {month_bound} per subject per month)")),
                    _deidentified_copy(row))
                refused.add(i)
                continue
            month_counts[month_key] = used_in_month + 1
        counts[key] = used + 1
        admitted.add(row[0])
    return refused


def _without(items: list, dropped: set[int]) -> list:
    """``items`` without the (few) indexes in ``dropped``, copied slice by slice."""
    kept: list = []
    start = 0
    for i in sorted(dropped):
        kept += items[start:i]
        start = i + 1
    kept += items[start:]
    return kept


def _rows_of(events: list[tuple], subject: str) -> range:
    """Indexes of ``subject``'s events in a chunk's events (sorted by subject)."""
    return range(bisect_left(events, subject, key=_SUBJECT),
                 bisect_right(events, subject, key=_SUBJECT))


def _epoch(moment: datetime | str) -> float:
    if isinstance(moment, str):  # SQLite hands back the stored text
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC).timestamp()


class _Sql:
    """The hot path's few statements as driver SQL: a whole chunk's keys go in as ONE
    parameter (a JSON array read by ``json_each`` on SQLite, an array for ``= ANY`` on
    PostgreSQL), so a chunk costs one statement per check instead of a compiled IN list of
    thousands of bound parameters."""

    def __init__(self, dialect: str):
        if dialect not in {"sqlite", "postgresql"}:
            raise StoreError(f"ingestion supports sqlite and postgresql stores, not {dialect}")
        self.postgres = dialect == "postgresql"
        self.p = "%s" if self.postgres else "?"

    def in_list(self, column: str) -> str:
        if self.postgres:
            return f"{column} = ANY({self.p})"
        return f"{column} IN (SELECT value FROM json_each({self.p}))"

    def values(self, values: Sequence[str]) -> Any:
        return list(values) if self.postgres else json.dumps(list(values))

    def run(self, session: Session, statement: str, params: tuple, *,
            fetch: bool = True) -> list[tuple]:
        # The driver's cursor, like the inserts: plain tuples, no result objects per row (a
        # consent read returns a row per subject in the chunk).
        raw: Any = session.connection().connection.dbapi_connection
        cursor = raw.cursor()
        try:
            cursor.execute(statement, params)
            return cursor.fetchall() if fetch else []
        finally:
            cursor.close()

    def insert(self, session: Session, table: str, columns: Sequence[str], rows: list[tuple],
               *, on_conflict_do_nothing: bool = False) -> None:
        if not rows:
            return
        statement = (f"INSERT INTO {table} ({', '.join(columns)}) "
                     f"VALUES ({', '.join([self.p] * len(columns))})")
        if on_conflict_do_nothing:
            statement += " ON CONFLICT DO NOTHING"
        raw: Any = session.connection().connection.dbapi_connection
        cursor = raw.cursor()
        try:
            cursor.executemany(statement, rows)
        finally:
            cursor.close()


#: The event table's columns a chunk's reads filter on.
_CHECKED_COLUMNS = "event_id, tenant_id, product_id, pseudonym, day"


class _Statistics:
    """Keeps PostgreSQL's planner statistics in step with the tables a run reads and grows.

    Bulk inserts do not update statistics and autovacuum gets to them late. Without column
    statistics every equality looks equally selective, and the planner may read a chunk's
    keys through the wrong index — the tenant's granted consents, or a product's events, per
    key — and ingestion turns quadratic (measured: a few hundred rows/s once the table held
    100,000 rows). The chunk's reads are index seeks per key, with sequential scans off for the
    chunk's transaction, and they stay right as long as the statistics are within a factor of
    two of the table. So the consent and event tables are
    analysed when a run starts if they changed by more than their analysed size (and 10,000
    rows) since they were last analysed, and the event table again whenever the run has added
    as many rows as it held when last analysed: a doubling schedule, five times for a million
    rows into an empty table, where analysing after almost every chunk had cost an eighth of
    the run. When a run that added 10,000 rows and a fifth of the table's size ends, the table
    is analysed once more for the queries that come after it (materialisation). Small runs (an
    API request) never trigger it; autovacuum covers them. SQLite plans these queries from the
    index definitions alone.
    """

    def __init__(self, store: Store, table: str):
        self.store, self.table = store, table
        self.enabled = store.dialect == "postgresql"
        self.rows_at_last = 0
        self.added = 0
        self.checked = False

    def before_chunk(self) -> None:
        """At the run's first chunk: analyse what changed a lot since it was last analysed."""
        if not self.enabled or self.checked:
            return
        self.checked = True
        with self.store.engine.connect() as connection:
            stale = [name for name, rows, changed in connection.exec_driver_sql(
                "SELECT c.relname, c.reltuples, s.n_mod_since_analyze FROM pg_class c "
                "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname IN (%s, %s)",
                (self.table, _CONSENT)).all()
                if (changed or 0) >= max(10_000, rows or 0)]
            for name in stale:
                connection.exec_driver_sql(f"ANALYZE {name}")
            self.rows_at_last = self._rows(connection)
            connection.commit()

    def after_chunk(self, inserted: int) -> None:
        if not self.enabled:
            return
        self.added += inserted
        if self.added >= max(10_000, self.rows_at_last):
            # During the run only the columns the chunk's reads filter on: less to compute.
            self._analyze(f"{self.table} ({_CHECKED_COLUMNS})")

    def after_run(self) -> None:
        if self.enabled and self.added >= max(10_000, self.rows_at_last // 5):
            self._analyze(self.table)

    def _analyze(self, target: str) -> None:
        with self.store.engine.connect() as connection:
            connection.exec_driver_sql(f"ANALYZE {target}")
            self.rows_at_last = self._rows(connection)
            connection.commit()
        self.added = 0

    def _rows(self, connection: Any) -> int:
        rows = connection.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE relname = %s", (self.table,)).scalar()
        return max(int(rows or 0), 0)  # -1: never analysed


class _ConsentCache:
    """Consent answers of earlier chunks of a run on the embedded store, reused while nothing
    else has been committed to it.

    A run reads consent inside each chunk's write transaction, and a subject usually appears
    in many chunks (measured: reading only the new ones takes a fifth off a million-row run).
    An answer read in an earlier chunk still holds when nobody has written to the store since
    that chunk committed, which SQLite tells exactly: ``PRAGMA data_version`` changes on a
    connection when another connection has committed since it last looked, and the
    connection's ``total_changes`` counts the rows it has itself written, so a write made
    through the same pooled connection by someone else between two chunks shows too. Both are
    read inside the chunk's write transaction, which holds the only write lock. Any other write
    at all — a withdrawal, but also an audit entry — empties the cache and the whole chunk is
    read again. Not used on PostgreSQL, whose writers do not take turns like this. Bounded:
    emptied at a million subjects.
    """

    _LIMIT = 1_000_000

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.answers: dict[str, float | None] = {}  # None: asked, no granted consent
        self.left: tuple[Any, int, int] | None = None  # the store as the last chunk left it
        self.reads = 0  # subjects read from the store (tests look at it)

    def valid(self, session: Session) -> bool:
        """Whether the answers still hold; empties them when they may not."""
        left = self.left
        if self.enabled and left is not None and len(self.answers) < self._LIMIT:
            now = self._state(session)
            if now[0] is left[0] and now[1:] == left[1:]:
                return True
        self.answers.clear()
        return False

    def chunk_written(self, session: Session) -> None:
        """Note the store as this chunk leaves it (call inside the transaction, last)."""
        if self.enabled:
            self.left = self._state(session)

    def forget(self) -> None:
        """A chunk was rolled back: what it read was never confirmed by a commit."""
        self.left = None

    @staticmethod
    def _state(session: Session) -> tuple[Any, int, int]:
        raw: Any = session.connection().connection.dbapi_connection
        cursor = raw.cursor()
        try:
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
        if self.enabled:
            self.answers.update((pseudonym, granted.get(pseudonym)) for pseudonym in asked)


class _BulkSettings:
    """The embedded store's settings for a bulk run, put back as they were when the run ends:
    a 256 MB page cache, and WAL checkpoints in a background thread instead of in the commit.

    A chunk's inserts land on pages all over the random-key indexes. With SQLite's default
    2 MB cache those pages are evicted and re-read within one transaction, and a cache reset
    between chunks makes every chunk re-read them all (measured: half the insert rate at a
    million rows). The cache belongs to the pooled connection; a run uses one connection at a
    time, which the pool hands back to it for every chunk.

    A commit that takes the WAL past 1,000 pages (every chunk does) would also copy the WAL
    into the database and wait for two fsyncs before the next chunk could start. Instead the
    run's connection does not checkpoint, and after each commit a thread with its own
    connection checkpoints PASSIVE (never waiting for or blocking the writer) while the next
    chunk is prepared: the driver lets go of the GIL for the whole call. SQLite rewinds the WAL
    only when a write transaction begins after a complete checkpoint, so once the WAL holds
    more than ``_WAL_BYTES`` the next chunk waits for the running checkpoint first,
    which keeps the WAL file under that size plus one chunk's pages (measured: 484 MB at a
    million rows in 50,000-row chunks; SQLite removes the file when the last connection
    closes). Durability is not touched: a chunk is committed once its WAL frames are written,
    checkpointed or not, and each checkpoint still syncs the WAL first. When the run ends the
    connection checkpoints again as usual.
    """

    _CACHE_KIB = -262_144
    _WAL_BYTES = 256 << 20
    _PRAGMAS = (("cache_size", _CACHE_KIB), ("wal_autocheckpoint", 0))

    def __init__(self, store: Store):
        database = store.engine.url.database if store.dialect == "sqlite" else None
        self.enabled = store.dialect == "sqlite"
        self.store = store
        self.previous: dict[str, int] = {}
        self.path = database if database and database != ":memory:" else None
        self.wake, self.idle = threading.Event(), threading.Event()
        self.idle.set()
        self.wal_frames = 0
        self.page_bytes = 0  # the store's page size, read by the checkpoint thread
        self.stopping = False
        self.thread: threading.Thread | None = None

    def begin(self, session: Session) -> None:
        """Start a chunk's transaction with the bulk settings (waiting first, if the WAL has
        grown past its bound, for the checkpoint that lets it rewind)."""
        if not self.enabled:
            return
        # Before the transaction begins: only a transaction begun after the checkpoint rewinds.
        if self.wal_frames * self.page_bytes > self._WAL_BYTES:
            self.idle.wait(timeout=60)  # bounded: a stuck checkpoint only costs WAL size
        connection = session.connection()
        for name, value in self._PRAGMAS:
            if name == "wal_autocheckpoint" and self.path is None:
                continue
            current = int(connection.exec_driver_sql(f"PRAGMA {name}").scalar())
            if current != value:
                self.previous.setdefault(name, current)
                connection.exec_driver_sql(f"PRAGMA {name} = {value}")

    def committed(self) -> None:
        """A chunk is committed: checkpoint in the background (at most one at a time)."""
        if not self.enabled or self.path is None:
            return
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._checkpoints, daemon=True,
                                           name="veil-ingest-checkpoint")
            self.thread.start()
        self.idle.clear()
        self.wake.set()

    def _checkpoints(self) -> None:
        try:
            connection = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error:
            self.wal_frames = 0
            self.idle.set()
            return
        try:
            try:
                [(self.page_bytes,)] = connection.execute("PRAGMA page_size").fetchall()
            except sqlite3.Error:
                pass  # 0: the WAL is left unbounded, as if checkpoints kept up
            while True:
                self.wake.wait()
                self.wake.clear()
                if self.stopping:
                    return
                try:
                    [(_, self.wal_frames, _)] = connection.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    self.wal_frames = 0  # best effort: the connection checkpoints after the run
                if not self.wake.is_set():  # else a newer commit is waiting for a checkpoint
                    self.idle.set()
        finally:
            connection.close()
            self.idle.set()

    def restore(self) -> None:
        if not self.enabled:
            return
        if self.thread is not None:
            self.stopping = True
            self.wake.set()
            self.thread.join()
            self.thread, self.stopping = None, False
        if not self.previous:
            return
        try:
            with self.store.write() as session:
                connection = session.connection()
                for name, value in self.previous.items():
                    connection.exec_driver_sql(f"PRAGMA {name} = {value}")
                session.commit()
        except SQLAlchemyError:
            pass  # best effort: a larger cache costs memory, never correctness
        self.previous = {}


@dataclass
class _Outcome:
    """One chunk's decisions, gathered before anything is written. ``results`` (per-row
    outcomes) is kept only when the caller asked for them."""

    results: list[RowResult] | None = None
    accepted: list[tuple] = field(default_factory=list)  # stored rows, in insert order
    refused: set[int] = field(default_factory=set)  # indexes of the valid events not accepted
    quarantine: list[tuple[int, str, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)

    def duplicate(self, position: int) -> None:
        self.counts[DUPLICATE] += 1
        if self.results is not None:
            self.results.append(RowResult(position, DUPLICATE, "event id seen before"))

    def bounded(self, position: int, why: Rejection, raw: str) -> None:
        self.counts[BOUNDED] += 1
        self.quarantine.append((position, why.reason, raw))
        if self.results is not None:
            self.results.append(RowResult(position, BOUNDED, why.reason))

    def reject(self, position: int, why: Rejection, raw: str) -> None:
        self.counts[REJECTED] += 1
        self.reasons[why.code] += 1
        self.quarantine.append((position, why.reason, raw))
        if self.results is not None:
            self.results.append(RowResult(position, REJECTED, why.reason))

    def settle(self) -> None:
        """Count the accepted rows (kept as a list while deciding, counted once)."""
        self.counts[ACCEPTED] = len(self.accepted)


def _deidentified_copy(stored: tuple) -> str:
    """The quarantine copy of a valid row that was not admitted: its de-identified form,
    without the subject's pseudonym."""
    row = dict(zip(EVENT_COLUMNS, stored))
    for hidden in ("event_id", "pseudonym", "tenant_id", "product_id"):
        del row[hidden]
    return json.dumps(row, ensure_ascii=True)


_SAVEPOINT = "veil_chunk_events"


def _insert_new_events(session: Session, table: str, rows: list[tuple]) -> bool:
    """Insert event rows none of whose ids should be stored yet (SQLite). True when every row
    went in; False, with nothing inserted, when the store already held one of the ids."""
    if not rows:
        return True
    raw: Any = session.connection().connection.dbapi_connection
    cursor = raw.cursor()
    try:
        cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
        cursor.executemany(
            f"INSERT OR IGNORE INTO {table} ({', '.join(EVENT_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})", rows)
        complete = cursor.rowcount == len(rows)
        if not complete:
            cursor.execute(f"ROLLBACK TO {_SAVEPOINT}")
        cursor.execute(f"RELEASE {_SAVEPOINT}")
        return complete
    finally:
        cursor.close()


def _copy_new_events(session: Session, table: str, rows: list[tuple]) -> bool:
    """COPY event rows none of whose ids should be stored yet (PostgreSQL). True when every row
    went in; False, with nothing inserted, when the store already held one of the ids (the
    primary key refuses the COPY whole; the savepoint takes the transaction back to before
    it)."""
    if not rows:
        return True
    raw: Any = session.connection().connection.dbapi_connection
    with raw.cursor() as cursor:
        cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        _bulk_insert(session, table, EVENT_COLUMNS, rows)
    except psycopg.errors.UniqueViolation:
        with raw.cursor() as cursor:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return False
    with raw.cursor() as cursor:
        cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return True


def _bulk_insert(session: Session, table: str, columns: Sequence[str],
                 rows: list[tuple]) -> None:
    """Plain tuples straight to the driver: COPY on PostgreSQL, executemany on SQLite."""
    connection = session.connection()
    raw: Any = connection.connection.dbapi_connection
    names = ", ".join(columns)
    if connection.dialect.name == "postgresql":
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    cursor = raw.cursor()
    try:
        cursor.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)
    finally:
        cursor.close()
