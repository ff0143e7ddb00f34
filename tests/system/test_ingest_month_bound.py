"""The person-month contribution bound at ingestion (issue 16).

A product that declares ``max_events_per_subject_per_month`` admits at most that many events of
one subject, event type and UTC calendar month, beside its daily bound: rows over it are
bounded — quarantined as "over monthly contribution bound", never dropped — whether the month's
earlier events arrived in the same chunk, an earlier chunk or an earlier batch, and also when
several writers send events of one person-month at once (PostgreSQL: READ COMMITTED, where only
the advisory lock makes "count what is stored, then insert up to the bound" safe). The catalog
is a copy with the bound declared, so these tests do not depend on catalog/products.toml. Every
test runs on the embedded store and, with VEIL_TEST_POSTGRES_URL, on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from data.ingest import ingest_file, ingest_rows
from data.ingest.api import create_app
from ingest_support import (PRODUCT, SECRET, TENANT, all_at_once, assert_bound_held,
                            collector_posts, daily_only, event, event_count, grant,
                            python_batches, quarantined, serve, with_monthly_bound,
                            write_jsonl)

DAILY = 3  # health.vaccinations' max_events_per_subject_per_day
MONTHLY = 5
WRITERS = 8
PER_WRITER = 3  # events per batch, each on its own day: WRITERS × PER_WRITER days of a month
ROUNDS = 3  # one month per round


@pytest.fixture
def monthly(catalog):
    """The catalog with health.vaccinations bounded to MONTHLY events per person-month."""
    bounded = with_monthly_bound(catalog, MONTHLY)
    assert bounded.product(PRODUCT).max_events_per_subject_per_day == DAILY
    return bounded


def ingest(store, catalog, rows, **kwargs):
    return ingest_rows(store, catalog, rows, tenant=TENANT, product=PRODUCT, secret=SECRET,
                       with_results=True, **kwargs)


def _in_march(n: int, day: int, hour: int = 9) -> dict:
    return event(n, timestamp=f"2025-03-{day:02d}T{hour:02d}:00:00Z")


def test_rows_over_the_monthly_bound_are_bounded_and_quarantined_with_the_reason(store,
                                                                                 monthly):
    """Seven events on seven days of March, bound 5 a month: the 6th and 7th are bounded,
    quarantined de-identified as over the monthly bound; April is a new month."""
    grant(store, monthly, "person-1")
    rows = [_in_march(day, day) for day in range(1, 8)]
    rows.append(event(8, timestamp="2025-04-01T09:00:00Z"))
    report = ingest(store, monthly, rows)
    assert (report.accepted, report.bounded, report.rejected) == (6, 2, 0)
    assert [r.status for r in report.results] == [
        "accepted"] * 5 + ["bounded", "bounded", "accepted"]
    held = quarantined(store)
    assert [row.position for row in held] == [6, 7]
    assert all(row.reason.startswith("over monthly contribution bound") for row in held)
    assert all("person-1" not in row.raw and json.loads(row.raw)["month"] == "2025-03-01"
               for row in held)
    assert event_count(store) == 6


def test_the_monthly_bound_counts_events_stored_by_earlier_chunks_and_batches(store, monthly):
    """Two-row chunks, then a second batch: the stored events of the month are counted."""
    grant(store, monthly, "person-1")
    first = ingest(store, monthly, [_in_march(day, day) for day in range(1, 5)], chunk_rows=2)
    assert (first.accepted, first.bounded) == (4, 0)
    second = ingest(store, monthly, [_in_march(day, day) for day in range(10, 14)],
                    chunk_rows=2)
    assert (second.accepted, second.bounded) == (1, 3)
    assert event_count(store) == MONTHLY
    assert [row.reason.split(":")[0] for row in quarantined(store)] == [
        "over monthly contribution bound"] * 3


def test_a_file_is_held_to_the_monthly_bound_too(store, monthly, tmp_path):
    """ingest_file (the CLI's path) bounds the month like ingest_rows."""
    grant(store, monthly, "person-1")
    path = write_jsonl(tmp_path / "march.jsonl", [_in_march(day, day) for day in range(1, 10)])
    report = ingest_file(store, monthly, path, tenant=TENANT, product=PRODUCT, secret=SECRET,
                         chunk_rows=4)
    assert (report.accepted, report.bounded) == (MONTHLY, 9 - MONTHLY)
    assert event_count(store) == MONTHLY


def test_both_bounds_apply_and_the_daily_one_is_reported_first(store, monthly):
    """Four events on one day (daily bound 3) and three more days of March (monthly bound 5):
    one is over the daily bound, then the month fills at 5 and one is over the monthly bound."""
    grant(store, monthly, "person-1")
    rows = [_in_march(k, 4, hour=8 + k) for k in range(4)]
    rows += [_in_march(10 + day, day) for day in (11, 12, 13)]
    report = ingest(store, monthly, rows)
    assert [r.status for r in report.results] == [
        "accepted", "accepted", "accepted", "bounded", "accepted", "accepted", "bounded"]
    assert [row.reason.split(":")[0] for row in quarantined(store)] == [
        "over contribution bound", "over monthly contribution bound"]
    assert event_count(store) == MONTHLY


def test_the_monthly_bound_is_per_subject_and_per_utc_month(store, monthly):
    """Another person has a month of their own; 01:00+02:00 on 1 April is 23:00 UTC on 31
    March and counts towards March."""
    grant(store, monthly, "person-1", "person-2")
    rows = [_in_march(day, day) for day in range(1, 6)]
    rows.append(event(20, timestamp="2025-04-01T01:00:00+02:00"))
    rows.append(event(21, subject="person-2", timestamp="2025-03-20T09:00:00Z"))
    report = ingest(store, monthly, rows)
    assert [r.status for r in report.results] == ["accepted"] * 5 + ["bounded", "accepted"]


def test_without_a_declared_monthly_bound_only_the_daily_bound_applies(store, catalog):
    """A product that declares no monthly bound keeps every event within its daily bound."""
    unbounded = daily_only(catalog)
    grant(store, unbounded, "person-1")
    report = ingest(store, unbounded, [_in_march(day, day) for day in range(1, 29)])
    assert (report.accepted, report.bounded) == (28, 0)


# --- concurrent writers ----------------------------------------------------------------------


def _batches(month: int) -> list[list[dict]]:
    """WRITERS batches of PER_WRITER events of person-1, every event on its own day of
    2025-<month> (so the daily bound never decides): only the monthly bound holds them."""
    return [[event(f"m{month}-w{writer}-{n}",
                   timestamp=f"2025-{month:02d}-{writer * PER_WRITER + n + 1:02d}T09:00:00Z")
             for n in range(PER_WRITER)] for writer in range(WRITERS)]


def _assert_month_bound_held(store, outcomes: list[tuple[int, int]], *, rounds: int) -> None:
    assert_bound_held(store, outcomes, sent=rounds * WRITERS * PER_WRITER,
                      stored=rounds * MONTHLY, reason="over monthly contribution bound")


def test_concurrent_batches_of_one_person_month_store_exactly_the_monthly_bound(store,
                                                                                monthly):
    """8 ingest_rows batches at once, 3 events each on distinct days of one month, bound 5:
    5 stored, 19 bounded, in each of three months."""
    grant(store, monthly, "person-1")
    send = python_batches(store, monthly)
    outcomes = []
    for month in range(3, 3 + ROUNDS):
        outcomes += all_at_once(send, _batches(month))
    _assert_month_bound_held(store, outcomes, rounds=ROUNDS)


@pytest.fixture
def api(store, monthly) -> Iterator[str]:
    app = create_app(store, monthly, secret=SECRET)
    with serve(app) as url:
        yield url


def test_concurrent_collector_posts_of_one_person_month_store_exactly_the_monthly_bound(
        store, monthly, api):
    """8 POSTs at once of 3 events each on distinct days of one month: 5 stored, 19 bounded."""
    grant(store, monthly, "person-1")
    send = collector_posts(store, monthly, api)

    outcomes = []
    for month in range(3, 3 + ROUNDS):
        outcomes += all_at_once(send, _batches(month))
    _assert_month_bound_held(store, outcomes, rounds=ROUNDS)
