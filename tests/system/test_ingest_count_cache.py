"""Stored counts carried from chunk to chunk of one ingestion run (issue 18, ``_CountCache``).

A run reads a subject's stored days (or months) by key in the first chunk that holds it, as
before, and over the whole span of the next chunk that holds it, once; it adds what it stores,
and later chunks take the counts from there. These tests pin that the contribution bounds hold
across chunks on those counts, that the later chunks really do not read the store, and that a
write to the event table by anyone else between two chunks — Veil, a bare INSERT, a replication
session — makes the next chunk read everything again. PostgreSQL only (VEIL_TEST_POSTGRES_URL):
the embedded store reads every chunk's counts (the bounds across chunks there:
test_ingest_pipeline.py, test_ingest_month_bound.py).
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import insert, select, text

import data.ingest._sql as sql_module
from data.config import load_settings
from data.engine import open_store
from data.ingest import ingest_rows
from data.models import HealthEvent
from ingest_support import (PRODUCT, SECRET, TENANT, daily_only, event, event_count, grant,
                            quarantined, with_monthly_bound)
from tests.conftest import STORES

DAILY = 3  # health.vaccinations' max_events_per_subject_per_day
MONTHLY = 5

pytestmark = pytest.mark.parametrize("backend", [STORES[1]], indirect=True)


@pytest.fixture(params=["daily", "monthly"])
def bounded(request, catalog):
    """The catalog with the daily bound only, or with a monthly bound of MONTHLY beside it."""
    made = daily_only(catalog) if request.param == "daily" else with_monthly_bound(catalog,
                                                                                  MONTHLY)
    assert made.product(PRODUCT).max_events_per_subject_per_day == DAILY
    return made


def _on(n: int | str, day: int, *, month: int = 3) -> dict:
    """person-1's event ``n`` at 09:00 on ``day`` of ``month`` 2025."""
    return event(f"person-1-{n}", timestamp=f"2025-{month:02d}-{day:02d}T09:00:00Z")


def _count_reads(monkeypatch) -> list[tuple[str, int]]:
    """Record each read of stored counts: (which, keys in it)."""
    calls: list[tuple[str, int]] = []
    for name, keys in (("span_counts", "pseudonyms"), ("daily_counts", "subject_days"),
                       ("day_and_month_counts", "subject_months")):
        real = getattr(sql_module._Sql, name)

        def read(self, session, table, *, _real=real, _name=name, _keys=keys, **kwargs):
            calls.append((_name, kwargs[_keys].count(",") + 1))
            return _real(self, session, table, **kwargs)

        monkeypatch.setattr(sql_module._Sql, name, read)
    return calls


def _by_key(bounded) -> str:
    monthly = bounded.product(PRODUCT).max_events_per_subject_per_month is not None
    return "day_and_month_counts" if monthly else "daily_counts"


def test_later_chunks_count_on_what_the_run_read_and_stored(store, bounded, monkeypatch):
    """Chunks of two: the first reads person-1's two days (one month) by key, the second, which
    spans March 2–19, reads person-1 over that span once; the next two read nothing, yet the
    daily bound (3) and, where declared, the monthly bound (5) hold across them exactly as if
    each chunk had read the store."""
    grant(store, bounded, "person-1")
    calls = _count_reads(monkeypatch)
    rows = [_on(1, 1), _on(2, 20),  # chunk 1: read by key
            _on(3, 2), _on(4, 19),  # chunk 2: read over March 2 to 19
            _on(5, 2), _on(6, 2),  # chunk 3: March 2 full (3); with MONTHLY the 6th of March
            _on(7, 2), _on(8, 3)]  # chunk 4: the 4th of March 2; with MONTHLY, both over it
    report = ingest_rows(store, bounded, rows, tenant=TENANT, product=PRODUCT, secret=SECRET,
                         chunk_rows=2)
    monthly = bounded.product(PRODUCT).max_events_per_subject_per_month is not None
    assert calls == [(_by_key(bounded), 1 if monthly else 2), ("span_counts", 1)]
    reasons = {row.position: row.reason for row in quarantined(store)}
    if monthly:
        assert sorted(reasons) == [6, 7, 8]
        assert all(reason.startswith("over monthly contribution bound")
                   for reason in reasons.values())
    else:
        assert sorted(reasons) == [7]
        assert reasons[7].startswith("over contribution bound: the subject already has 3")
    assert (report.accepted, report.bounded) == (8 - len(reasons), len(reasons))
    assert event_count(store) == 8 - len(reasons)


def test_a_day_outside_the_span_is_read_once_and_known_after(store, bounded, monkeypatch):
    """A subject met again is read over the chunk's span (April 2), which finds the day's
    stored event; the next chunk's April 2 events count on it; a later day outside the span
    and not read before (March 5, daily bound only: with a monthly bound March was read whole
    in the first chunk) is read on its own."""
    grant(store, bounded, "person-1")
    # one earlier event on April 2, which the span's read must find
    assert ingest_rows(store, bounded, [event("april", timestamp="2025-04-02T09:00:00Z")],
                       tenant=TENANT, product=PRODUCT, secret=SECRET).accepted == 1
    calls = _count_reads(monkeypatch)
    april = [event(f"a{n}", timestamp=f"2025-04-02T1{n}:00:00Z") for n in range(4)]
    rows = [_on(1, 1), _on(2, 2), april[0], april[1], april[2], april[3], _on(3, 5)]
    report = ingest_rows(store, bounded, rows, tenant=TENANT, product=PRODUCT, secret=SECRET,
                         chunk_rows=2)
    monthly = bounded.product(PRODUCT).max_events_per_subject_per_month is not None
    expected = [(_by_key(bounded), 1 if monthly else 2), ("span_counts", 1)]
    if not monthly:
        expected.append(("daily_counts", 1))
    assert calls == expected
    # April 2 held one: two more fit under the daily bound of 3, the next two are over it
    assert [row.position for row in quarantined(store)] == [5, 6]
    assert (report.accepted, report.bounded) == (5, 2)


def _written_elsewhere(store, catalog, *, tmp_path, how: str) -> None:
    """Two events of person-1 on March 2, committed between two chunks of a run: through Veil
    (another ingestion, "veil"), by a bare INSERT into the event table through another engine
    ("sql"), or by that INSERT in a session that applies changes as logical replication does
    ("replica": ``session_replication_role = replica``, where ordinary triggers do not fire)."""
    if how == "veil":
        report = ingest_rows(store, catalog, [_on(f"x{n}", 2) for n in range(2)], tenant=TENANT,
                             product=PRODUCT, secret=SECRET)
        assert report.accepted == 2
        return
    other = open_store(load_settings({
        "VEIL_VAR_DIR": str(tmp_path / "other"), "VEIL_DEMO_MODE": "1",
        "VEIL_DATABASE_URL": store.engine.url.render_as_string(hide_password=False)}))
    try:
        with other.write.begin() as session:
            stored = session.scalars(select(HealthEvent)).first()
            copy = {column.key: getattr(stored, column.key)
                    for column in HealthEvent.__table__.columns}
            if how == "replica":
                session.execute(text("SET LOCAL session_replication_role = replica"))
            session.execute(insert(HealthEvent), [
                dict(copy, event_id=f"elsewhere-{n}", day=datetime(2025, 3, 2).date(),
                     ts=datetime(2025, 3, 2, 10 + n)) for n in range(2)])
    finally:
        other.dispose()


def _run_with_a_write_between_chunks(store, catalog, tmp_path, how):
    grant(store, catalog, "person-1")

    def rows():
        yield from [_on(1, 1), _on(2, 20, month=2)]  # chunk 1: read by key
        yield from [_on(3, 2), _on(4, 19)]  # chunk 2: read over March 2–19; March 2 holds one
        # The pipeline asks for the next chunk's rows after the second chunk committed.
        _written_elsewhere(store, catalog, tmp_path=tmp_path, how=how)
        yield _on(5, 2)
        yield _on(6, 5, month=4)

    return ingest_rows(store, catalog, rows(), tenant=TENANT, product=PRODUCT, secret=SECRET,
                       chunk_rows=2)


@pytest.mark.parametrize("how", ["veil", "sql"])
def test_a_write_between_two_chunks_makes_the_next_chunk_read_again(store, bounded, tmp_path,
                                                                    monkeypatch, how):
    """March 2 was known to hold one event after the second chunk; two more stored by someone
    else before the third fill its daily bound, and the third chunk's March 2 event is bounded:
    the run saw the table change and read the store again (a run that trusted its counts would
    read only April 5, outside the span, and store a fourth event of March 2)."""
    calls = _count_reads(monkeypatch)
    report = _run_with_a_write_between_chunks(store, bounded, tmp_path, how)
    [over] = quarantined(store)
    assert over.position == 5 and over.reason.startswith("over contribution bound")
    assert (report.accepted, report.bounded) == (5, 1)
    # the third chunk met person-1 afresh: read by key, as in a first chunk
    by_key = _by_key(bounded)
    first, third = (by_key, 2), (by_key, 2)
    between = [(by_key, 1)] if how == "veil" else []  # the other ingestion's own read
    assert calls == [first, ("span_counts", 1), *between, third]
    assert event_count(store) == 7


def test_a_write_by_a_replication_session_between_two_chunks_is_seen(store, bounded, tmp_path):
    """The event table's counter moves in a replica session too (migration 0022's trigger fires
    ALWAYS), so the next chunk reads again and bounds the excess."""
    report = _run_with_a_write_between_chunks(store, bounded, tmp_path, "replica")
    assert [row.position for row in quarantined(store)] == [5]
    assert (report.accepted, report.bounded) == (5, 1)
