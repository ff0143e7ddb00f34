"""Ingestion into real stores (SPEC B2, B4): consent, duplicates, bounds, quarantine, reports.

Every test runs on the embedded store and, with VEIL_TEST_POSTGRES_URL, on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, text, update

import data.ingest._checking as checking
import data.ingest._consent_cache as consent_cache_module
import data.ingest._pipeline as pipeline_module
import data.ingest._sql as sql_module
from data.bootstrap import init_store
from data.config import load_settings
from data.consent import record_consent, withdraw_consent
from data.engine import open_store
from data.errors import InvalidInput, StoreError
from data.ingest import ingest_file, ingest_rows
from data.models import CubePending, IngestBatch, Subject, SubjectConsent
from data.pseudonym import pseudonym
from tests.conftest import STORES
from ingest_support import (PRODUCT, SECRET, TENANT, daily_only, event, event_count, grant,
                            quarantined, stored_events, write_jsonl)



@pytest.fixture
def catalog(catalog):
    """The daily bound as the only contribution bound: these tests spread one subject's events
    over days of one month (the person-month bound: tests/system/test_ingest_month_bound.py)."""
    return daily_only(catalog)

def ingest(store, catalog, rows, **kwargs):
    return ingest_rows(store, catalog, rows, tenant=TENANT, product=PRODUCT, secret=SECRET,
                       with_results=True, **kwargs)


def test_a_malformed_row_between_two_valid_ones_is_quarantined_with_its_line(store, catalog,
                                                                             tmp_path):
    """Lines 1 and 3 land; line 2 is quarantined as malformed with its line number."""
    grant(store, catalog, "person-1")
    path = write_jsonl(tmp_path / "events.jsonl",
                       [event(1), '{"event_id": "ev-2", "subject_id": ', event(3)])
    report = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET)
    assert (report.rows, report.accepted, report.rejected) == (3, 2, 1)
    assert dict(report.reasons) == {"malformed row": 1}
    assert event_count(store) == 2
    [bad] = quarantined(store)
    assert bad.position == 2 and bad.reason.startswith("malformed row: not valid JSON")
    assert str(path) in bad.source and bad.tenant_id == TENANT and bad.product_id == PRODUCT


def test_a_csv_file_lands_the_same_way(store, catalog, tmp_path):
    """CSV rows are checked like JSONL; the bad record is quarantined with its line."""
    grant(store, catalog, "person-1")
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,subject_id,event_type,timestamp,age,category,postal_code\n"
        "ev-1,person-1,vaccination,2025-03-04T10:07:30Z,4,polio,10215\n"
        "ev-2,person-1,vaccination,2025-03-04T10:07:30Z,4,+250 788 123 456,10215\n"
        "ev-3,person-1,vaccination,2025-03-04T11:00:00+02:00,4,dtp,10215\n")
    report = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET)
    assert (report.accepted, report.rejected) == (2, 1)
    [bad] = quarantined(store)
    assert (bad.position, bad.reason) == (3, "PII value: 'category' holds a phone number")
    assert {e.district for e in stored_events(store)} == {"KGL-GAS"}


def test_every_event_is_de_identified_as_stored(store, catalog):
    """Stored: keyed pseudonym, floored UTC time, H3 cell, age bucket — nothing raw."""
    grant(store, catalog, "person-1")
    ingest(store, catalog, [event(1, timestamp="2025-03-04T10:14:59+02:00", age=37)])
    [stored] = stored_events(store)
    assert stored.pseudonym == pseudonym(SECRET, "person-1")
    assert stored.ts == datetime(2025, 3, 4, 8, 0)
    assert (stored.day, stored.month) == (date(2025, 3, 4), date(2025, 3, 1))
    assert (stored.age_bucket, stored.district, len(stored.h3_cell)) == ("36-60", "KGL-NYR", 15)
    assert stored.event_id != "ev-1" and len(stored.event_id) == 32


def test_ingestion_writes_the_subject_and_marks_the_month(store, catalog):
    """A new subject gets a Subject row; the touched month is marked for materialisation."""
    grant(store, catalog, "person-1")
    ingest(store, catalog, [event(1), event(2, timestamp="2025-04-01T09:00:00Z")])
    with store.read() as session:
        subject = session.get(Subject, (TENANT, pseudonym(SECRET, "person-1")))
        months = set(session.scalars(select(CubePending.month).where(
            CubePending.tenant_id == TENANT, CubePending.product_id == PRODUCT)))
    assert subject is not None and subject.district == "KGL-NYR"
    assert subject.created_at == datetime(2025, 3, 4, 8, 0)
    assert months == {date(2025, 3, 1), date(2025, 4, 1)}


def test_a_subject_row_takes_its_first_accepted_event_not_a_refused_one(store, catalog):
    """The subject's earliest event here came before its consent and is refused: the Subject
    row takes the district and time of the first event that was stored. A subject none of
    whose events is stored gets no row."""
    grant(store, catalog, "person-1", at=datetime(2025, 3, 10, tzinfo=UTC))
    report = ingest(store, catalog, [
        event(1, timestamp="2025-03-04T10:07:30Z"),  # before the grant: no consent
        event(2, timestamp="2025-03-12T09:20:00Z", lat=..., lng=..., district="KGL-GAS"),
        event(3, timestamp="2025-03-14T09:20:00Z"),
        event(4, subject="person-2"),
    ])
    assert (report.accepted, report.rejected) == (2, 2)
    with store.read() as session:
        subjects = {s.pseudonym: (s.district, s.created_at)
                    for s in session.scalars(select(Subject))}
    assert subjects == {pseudonym(SECRET, "person-1"): ("KGL-GAS", datetime(2025, 3, 12, 9, 15))}


def test_an_event_id_seen_before_is_a_duplicate_counted_and_skipped(store, catalog):
    """Within a batch and across batches, a repeated event id is stored once."""
    grant(store, catalog, "person-1")
    first = ingest(store, catalog, [event(1), event(1), event(2)])
    second = ingest(store, catalog, [event(2), event(3)])
    assert (first.accepted, first.duplicate) == (2, 1)
    assert (second.accepted, second.duplicate) == (1, 1)
    assert [r.status for r in first.results] == ["accepted", "duplicate", "accepted"]
    assert event_count(store) == 3
    assert quarantined(store) == []  # duplicates are counted, not quarantined


def test_an_over_bound_subject_keeps_n_events_a_day_and_the_excess_is_recorded(store, catalog):
    """health.vaccinations allows 3 per subject per day: the 4th is bounded and quarantined."""
    grant(store, catalog, "person-1", "person-2")
    rows = [event(i, timestamp=f"2025-03-04T0{i}:00:00Z") for i in range(1, 5)]
    rows.append(event(5, timestamp="2025-03-05T09:00:00Z"))
    rows.append(event(6, subject="person-2"))
    report = ingest(store, catalog, rows)
    assert (report.accepted, report.bounded, report.rejected) == (5, 1, 0)
    assert [r.status for r in report.results] == [
        "accepted", "accepted", "accepted", "bounded", "accepted", "accepted"]
    [excess] = quarantined(store)
    assert excess.position == 4 and excess.reason.startswith("over contribution bound")
    assert "person-1" not in excess.raw and json.loads(excess.raw)["day"] == "2025-03-04"
    # A later batch counts the stored events: the day is full.
    later = ingest(store, catalog, [event(7, timestamp="2025-03-04T23:59:00Z")])
    assert (later.accepted, later.bounded) == (0, 1)


def test_the_bound_is_per_utc_day(store, catalog):
    """01:00+02:00 on the 5th is 23:00 UTC on the 4th: it counts towards the 4th."""
    grant(store, catalog, "person-1")
    rows = [event(i, timestamp=f"2025-03-04T1{i}:00:00Z") for i in range(3)]
    rows.append(event(9, timestamp="2025-03-05T01:00:00+02:00"))
    assert ingest(store, catalog, rows).bounded == 1


def test_events_without_consent_are_quarantined_not_stored(store, catalog):
    """No consent at all, consent for another vertical, or an event before the grant."""
    grant(store, catalog, "person-2", vertical="education")
    grant(store, catalog, "person-3", at=datetime(2025, 3, 5, tzinfo=UTC))
    report = ingest(store, catalog, [event(1, subject="person-1"), event(2, subject="person-2"),
                                     event(3, subject="person-3"),
                                     event(4, subject="person-3",
                                           timestamp="2025-03-06T09:00:00Z")])
    assert (report.accepted, report.rejected) == (1, 3)
    assert dict(report.reasons) == {"no consent": 3}
    assert [q.position for q in quarantined(store)] == [1, 2, 3]


def test_a_withdrawn_subject_is_refused_from_then_on(store, catalog):
    """After a withdrawal, the subject's events are quarantined with 'no consent'."""
    grant(store, catalog, "person-1")
    assert ingest(store, catalog, [event(1)]).accepted == 1
    withdraw_consent(store, catalog, tenant=TENANT, pseudonym=pseudonym(SECRET, "person-1"),
                     vertical="health")
    report = ingest(store, catalog, [event(2)])
    assert (report.accepted, report.rejected) == (0, 1)
    assert report.results[0].reason.startswith("no consent")
    assert event_count(store) == 1


def test_a_nested_pii_key_and_a_phone_in_a_category_store_nothing(store, catalog):
    """Both rows are quarantined; neither the phone number nor the key's value is stored."""
    grant(store, catalog, "person-1")
    report = ingest(store, catalog, [
        event(1, metadata={"visit": {"contact": {"Phone": "0788 123 456"}}}),
        event(2, category="+250 788 123 456"),
    ])
    assert (report.accepted, report.rejected) == (0, 2)
    assert dict(report.reasons) == {"PII key": 1, "PII value": 1}
    assert event_count(store) == 0
    for row in quarantined(store):
        assert "788" not in row.raw and "788" not in row.reason
        assert "person-1" not in row.raw


def test_the_batch_report_is_stored_with_counts_by_reason(store, catalog):
    """accepted / duplicate / bounded / rejected by reason, on the batch row too."""
    grant(store, catalog, "person-1")
    report = ingest(store, catalog, [event(1), event(1), event(2, category="covid"),
                                     event(3, event_type="x"), event(4, subject="nobody")],
                    source="python:test")
    with store.read() as session:
        batch = session.get(IngestBatch, report.batch_id)
    assert (batch.status, batch.rows, batch.accepted, batch.duplicate, batch.bounded,
            batch.rejected) == ("succeeded", 5, 1, 1, 0, 3)
    assert batch.reasons == {"no consent": 1, "unknown category": 1, "unknown event type": 1}
    assert batch.finished_at >= batch.started_at and batch.source == "python:test"


def test_a_file_ingested_in_full_is_not_ingested_again(store, catalog, tmp_path):
    """Same bytes, same tenant and product: the earlier report, nothing new stored."""
    grant(store, catalog, "person-1")
    path = write_jsonl(tmp_path / "e.jsonl", [event(1), "garbage"])
    first = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET)
    again = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET)
    assert again.already_ingested and again.batch_id == first.batch_id
    assert (again.accepted, again.rejected) == (1, 1)
    assert len(quarantined(store)) == 1 and event_count(store) == 1


def test_a_run_that_fails_mid_file_resumes_after_its_last_chunk(store, catalog, tmp_path,
                                                                monkeypatch):
    """Chunks commit one by one; the re-run continues where the failed one stopped."""
    grant(store, catalog, "person-1")
    rows = [event(i, timestamp=f"2025-03-{1 + i % 28:02d}T0{i % 3}:00:00Z") for i in range(50)]
    rows[7] = "garbage"
    path = write_jsonl(tmp_path / "e.jsonl", rows)
    original = pipeline_module._Run._write
    calls = {"n": 0}

    def failing_write(self, session, chunk, outcome):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("power cut (simulated)")
        return original(self, session, chunk, outcome)

    monkeypatch.setattr(pipeline_module._Run, "_write", failing_write)
    with pytest.raises(RuntimeError, match="power cut"):
        ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET,
                    chunk_rows=10)
    assert event_count(store) == 19  # two chunks of ten, one of them holding the bad line
    monkeypatch.setattr(pipeline_module._Run, "_write", original)
    report = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET,
                         chunk_rows=10)
    assert report.resumed_after == 20
    assert (report.rows, report.accepted, report.duplicate, report.rejected) == (50, 49, 0, 1)
    assert event_count(store) == 49
    assert [q.position for q in quarantined(store)] == [8]


def test_a_store_failure_is_reported_with_where_to_resume(store, catalog, monkeypatch):
    """Driver errors become StoreError naming the batch and position; the batch is failed."""
    grant(store, catalog, "person-1")
    from sqlalchemy.exc import OperationalError

    def broken(*args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(sql_module, "_bulk_insert", broken)
    monkeypatch.setattr(sql_module, "_insert_new_events", broken)  # SQLite's first try
    with pytest.raises(StoreError, match=r"chunk ending at position 1 .*rolled back"):
        ingest(store, catalog, [event(1)])
    with store.read() as session:
        [batch] = session.scalars(select(IngestBatch)).all()
    assert batch.status == "failed" and "disk I/O error" in batch.error
    assert event_count(store) == 0


def test_unknown_tenant_product_or_chunk_size_is_refused(store, catalog):
    """Bad arguments are refused before anything is written."""
    with pytest.raises(InvalidInput, match="unknown tenant 'atlantis'; known: kigali-east"):
        ingest_rows(store, catalog, [], tenant="atlantis", product=PRODUCT, secret=SECRET)
    with pytest.raises(InvalidInput, match="unknown product 'health.x'; event products: health"):
        ingest_rows(store, catalog, [], tenant=TENANT, product="health.x", secret=SECRET)
    with pytest.raises(InvalidInput, match="chunk size"):
        ingest_rows(store, catalog, [], tenant=TENANT, product=PRODUCT, secret=SECRET,
                    chunk_rows=0)


def test_the_embedded_store_gets_its_page_cache_back_after_a_run(store, catalog):
    """The 256 MB ingest cache is put back to what the connection had before."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite's per-connection page cache")
    with store.write() as session:
        before = session.connection().exec_driver_sql("PRAGMA cache_size").scalar()
    grant(store, catalog, "person-1")
    ingest(store, catalog, [event(1), event(2)])
    with store.write() as session:
        assert session.connection().exec_driver_sql("PRAGMA cache_size").scalar() == before


def test_the_embedded_store_checkpoints_as_before_after_a_run(store, catalog):
    """Checkpoints move to a background thread during a run; after it the connection's own
    setting is back and the thread is gone."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    with store.write() as session:
        before = session.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    threads = threading.active_count()
    grant(store, catalog, "person-1")
    ingest(store, catalog, [event(1), event(2)], chunk_rows=1)
    with store.write() as session:
        after = session.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert after == before and threading.active_count() == threads


def _landed(store) -> tuple:
    """Everything an ingest leaves: events, quarantine, subjects, batch report."""
    with store.read() as session:
        subjects = sorted((s.pseudonym, s.district, s.created_at)
                          for s in session.scalars(select(Subject)))
        [batch] = session.scalars(select(IngestBatch)).all()
    events = [tuple(getattr(e, c.name) for c in e.__table__.columns)
              for e in stored_events(store)]
    quarantine = [(q.position, q.reason, q.raw) for q in quarantined(store)]
    report = (batch.status, batch.position, batch.rows, batch.accepted, batch.duplicate,
              batch.bounded, batch.rejected, batch.reasons)
    return events, quarantine, subjects, report


@pytest.mark.fork_alone
def test_a_file_checked_in_a_worker_process_lands_as_one_checked_here(store, catalog, tmp_path,
                                                                      monkeypatch):
    """Rules in a worker (forced for a small file), chunk by chunk: the same events, quarantine,
    subjects and report as checking in this process, into a second store."""
    rows = []
    for i in range(400):
        row = event(i % 350, subject=f"person-{i % 13}",  # ids repeat across chunks
                    timestamp=f"2025-03-{1 + i % 5:02d}T{i % 24:02d}:{i % 60:02d}:00Z")
        rows.append(row if i % 61 else "garbage")
    rows[17] = event(17, category="+250 788 123 456")
    path = write_jsonl(tmp_path / "e.jsonl", rows)
    reference = open_store(load_settings({"VEIL_VAR_DIR": str(tmp_path / "reference"),
                                          "VEIL_DEMO_MODE": "1"}))
    try:
        init_store(reference, catalog, demo_accounts=False)
        for target in (store, reference):
            grant(target, catalog, *(f"person-{k}" for k in range(10)))  # 10-12: none
            grant(target, catalog, "person-4", at=datetime(2025, 3, 3, tzinfo=UTC))  # later
        ingest_file(reference, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET,
                    chunk_rows=37)
        monkeypatch.setattr(checking, "WORKER_MIN_BYTES", 0)
        ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET,
                    chunk_rows=37)
        expected = _landed(reference)
    finally:
        reference.dispose()
    accepted, duplicate, bounded, rejected = expected[3][3:7]
    assert accepted and duplicate and bounded and rejected  # every outcome is exercised
    assert _landed(store) == expected


# --- what a run may take from its own earlier chunks -------------------------------------------


def _days(subject: str, first: int, count: int) -> list[dict]:
    """``count`` events of ``subject``, one a day from March ``first`` (never over the bound)."""
    return [event(f"{subject}-{first + k}", subject=subject,
                  timestamp=f"2025-03-{first + k:02d}T09:00:00Z") for k in range(count)]


def _consent_caches(monkeypatch) -> list:
    made = []

    class Recorded(consent_cache_module._ConsentCache):
        def __init__(self, dialect):
            super().__init__(dialect)
            made.append(self)

    monkeypatch.setattr(pipeline_module, "_ConsentCache", Recorded)
    return made


@pytest.mark.parametrize("through", ["this store", "another connection"])
def test_a_withdrawal_between_two_chunks_refuses_the_subjects_later_events(
        store, catalog, tmp_path, through):
    """Consent read for a run's earlier chunks is not trusted after any write by anyone else,
    even one made through the same pooled connection the run uses: a withdrawal between the
    first and second chunk refuses the subject's events in every later chunk."""
    grant(store, catalog, "person-1", "person-2")
    rows = [row for pair in zip(_days("person-1", 1, 6), _days("person-2", 1, 6)) for row in pair]
    path = write_jsonl(tmp_path / "e.jsonl", rows)  # 6 chunks of 2: one event of each
    other = (open_store(load_settings({
        "VEIL_VAR_DIR": str(tmp_path / "other"), "VEIL_DEMO_MODE": "1",
        "VEIL_DATABASE_URL": store.engine.url.render_as_string(hide_password=False)}))
        if through == "another connection" else store)

    def after_chunk(done, total, rows_done):
        if rows_done == 2:
            withdraw_consent(other, catalog, tenant=TENANT,
                             pseudonym=pseudonym(SECRET, "person-1"), vertical="health")

    try:
        report = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT,
                             secret=SECRET, chunk_rows=2, progress=after_chunk)
    finally:
        if other is not store:
            other.dispose()
    assert (report.accepted, report.rejected, dict(report.reasons)) == (
        7, 5, {"no consent": 5})
    refused = quarantined(store)
    assert [row.position for row in refused] == [3, 5, 7, 9, 11]  # person-1 from chunk 2 on
    assert all(row.reason.startswith("no consent") for row in refused)


def _withdrawn_elsewhere(store, catalog, subject: str, *, tmp_path, how: str) -> None:
    """Withdraw ``subject``'s health consent in a transaction of another engine, committed at
    once: through ``record_consent`` ("veil": its marks, no rebuild, which would wait for the
    running chunk's lock), by a bare UPDATE of ``subject_consent`` as a tool other than Veil
    would ("sql"), or by that UPDATE in a session that applies changes as logical replication
    does ("replica": ``session_replication_role = replica``, where ordinary triggers do not
    fire)."""
    other = open_store(load_settings({
        "VEIL_VAR_DIR": str(tmp_path / "other"), "VEIL_DEMO_MODE": "1",
        "VEIL_DATABASE_URL": store.engine.url.render_as_string(hide_password=False)}))
    try:
        with other.write.begin() as session:
            if how == "veil":
                record_consent(session, catalog, tenant=TENANT,
                               pseudonym=pseudonym(SECRET, subject), vertical="health",
                               status="withdrawn")
            else:
                if how == "replica":
                    session.execute(text("SET LOCAL session_replication_role = replica"))
                session.execute(update(SubjectConsent).where(
                    SubjectConsent.pseudonym == pseudonym(SECRET, subject)).values(
                    status="withdrawn", changed_at=datetime(2026, 1, 1)))
    finally:
        other.dispose()


@pytest.mark.parametrize("backend", [STORES[1]], indirect=True)
@pytest.mark.parametrize("how", ["veil", "sql", "replica"])
def test_a_withdrawal_committed_after_a_chunks_consent_read_reaches_the_next_chunk(
        store, catalog, tmp_path, monkeypatch, how):
    """PostgreSQL: a withdrawal that commits while a chunk runs, after it read consent, is not
    taken as seen: the next chunk finds the consent counter moved and reads consent again, so
    the subject's later events are refused — also when the consent table is written directly,
    without Veil, and when it is written as logical replication writes (a replica session)."""
    grant(store, catalog, "person-1", "person-2")
    rows = [row for pair in zip(_days("person-1", 1, 4), _days("person-2", 1, 4)) for row in pair]
    path = write_jsonl(tmp_path / "e.jsonl", rows)  # 4 chunks of 2: one event of each
    real = sql_module._Sql.granted_consent
    calls = []

    def granted_consent(self, session, **kwargs):
        answers = real(self, session, **kwargs)
        calls.append(len(kwargs["pseudonyms"]))
        if len(calls) == 1:  # the first chunk has read: withdraw before it commits
            _withdrawn_elsewhere(store, catalog, "person-1", tmp_path=tmp_path, how=how)
        return answers

    monkeypatch.setattr(sql_module._Sql, "granted_consent", granted_consent)
    report = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET,
                         chunk_rows=2)
    assert [row.position for row in quarantined(store)] == [3, 5, 7]  # person-1, chunk 2 on
    assert (report.accepted, dict(report.reasons)) == (5, {"no consent": 3})
    assert calls == [2, 2]  # both read, both read again after the withdrawal, then reused


def test_a_run_reads_each_subjects_consent_once_while_nobody_else_writes(store, catalog,
                                                                          tmp_path, monkeypatch):
    """Later chunks reuse the consent read for earlier ones: three chunks of the same two
    subjects read two consents, on both stores."""
    caches = _consent_caches(monkeypatch)
    grant(store, catalog, "person-1", "person-2")
    rows = [row for pair in zip(_days("person-1", 1, 3), _days("person-2", 1, 3)) for row in pair]
    report = ingest_file(store, catalog, write_jsonl(tmp_path / "e.jsonl", rows), tenant=TENANT,
                         product=PRODUCT, secret=SECRET, chunk_rows=2)
    assert report.accepted == 6
    [cache] = caches
    assert cache.reads == 2


def test_a_stored_duplicate_is_a_duplicate_even_where_it_would_be_over_the_bound(store,
                                                                                  catalog):
    """A re-sent event whose day is full is a duplicate (counted), not an excess (quarantined):
    the decision that first assumes no id is stored must find it among the refused rows too."""
    grant(store, catalog, "person-1")
    day = [event(i, timestamp=f"2025-03-04T0{i}:00:00Z") for i in range(1, 4)]  # the bound: 3
    assert ingest(store, catalog, day).accepted == 3
    again = ingest(store, catalog, [day[2], event(9, timestamp="2025-03-05T09:00:00Z")])
    assert (again.accepted, again.duplicate, again.bounded) == (1, 1, 0)
    assert [r.status for r in again.results] == ["duplicate", "accepted"]
    assert quarantined(store) == [] and event_count(store) == 4


def test_a_stored_duplicate_of_a_withdrawn_subject_is_a_duplicate(store, catalog):
    """Re-sent after the subject withdrew: still 'seen before', as one-by-one deciding says."""
    grant(store, catalog, "person-1")
    assert ingest(store, catalog, [event(1)]).accepted == 1
    withdraw_consent(store, catalog, tenant=TENANT, pseudonym=pseudonym(SECRET, "person-1"),
                     vertical="health")
    again = ingest(store, catalog, [event(1), event(2)])
    assert [r.status for r in again.results] == ["duplicate", "rejected"]
    assert again.results[1].reason.startswith("no consent")


def test_a_chunk_with_a_stored_duplicate_among_its_accepted_rows_is_decided_again(store,
                                                                                   catalog):
    """The first try inserts nothing when one accepted row's id is stored: the chunk is
    decided again with the stored ids read, and lands whole and exactly once."""
    grant(store, catalog, "person-1", "person-2")
    assert ingest(store, catalog, [event(5, subject="person-2")]).accepted == 1
    rows = [event(1), event(2, timestamp="2025-03-05T09:00:00Z"), event(5, subject="person-2"),
            event(6, subject="person-2", timestamp="2025-03-06T09:00:00Z")]
    report = ingest(store, catalog, rows)
    assert [r.status for r in report.results] == ["accepted", "accepted", "duplicate",
                                                  "accepted"]
    assert event_count(store) == 4
    with store.read() as session:
        assert session.scalar(select(IngestBatch.accepted).order_by(
            IngestBatch.started_at.desc()).limit(1)) == 3
