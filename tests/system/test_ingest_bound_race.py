"""The contribution bound under concurrent ingestion (issue 14, item 1).

Several writers send events of one subject, one UTC day and one event type at the same time,
each in its own transaction on its own connection, released together by a barrier. Exactly
the product's bound (health.vaccinations: 3 a day) is stored, whoever wins; the rest are
quarantined as "over contribution bound"; nothing is lost. Every test runs on the embedded
store and, with VEIL_TEST_POSTGRES_URL, on PostgreSQL (READ COMMITTED, where a plain read of
the stored counts does not serialise two writers).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from data.ingest import ingest_rows
from data.ingest.api import create_app
from ingest_support import (PRODUCT, SECRET, TENANT, all_at_once, assert_bound_held,
                            collector_posts, daily_only, event, event_count, grant,
                            python_batches, quarantined, serve)

BOUND = 3  # health.vaccinations' max_events_per_subject_per_day
WRITERS = 8
ROUNDS = 3  # one subject-day per round: more chances for an unserialised store to let one by



@pytest.fixture
def catalog(catalog):
    """The daily bound as the only contribution bound: these tests spread one subject's events
    over days of one month (the person-month bound: tests/system/test_ingest_month_bound.py)."""
    return daily_only(catalog)

def _batches(day: int) -> list[list[dict]]:
    """WRITERS batches, each of BOUND distinct events of person-1 on 2025-03-<day>."""
    return [[event(f"d{day}-w{writer}-{n}", timestamp=f"2025-03-{day:02d}T{8 + n:02d}:00:00Z")
             for n in range(BOUND)] for writer in range(WRITERS)]


def _assert_bound_held(store, outcomes: list[tuple[int, int]], *, rounds: int) -> None:
    assert_bound_held(store, outcomes, sent=rounds * WRITERS * BOUND, stored=rounds * BOUND,
                      reason="over contribution bound")


def test_concurrent_python_batches_of_one_person_day_store_exactly_the_bound(store, catalog):
    """8 ingest_rows batches at once, 3 events each of one person-day: 3 stored, 21 bounded."""
    grant(store, catalog, "person-1")
    send = python_batches(store, catalog)
    outcomes = []
    for day in range(1, ROUNDS + 1):
        outcomes += all_at_once(send, _batches(day))
    _assert_bound_held(store, outcomes, rounds=ROUNDS)


@pytest.fixture
def api(store, catalog) -> Iterator[str]:
    """The collector app on a free loopback port (as in test_ingest_api.py)."""
    app = create_app(store, catalog, secret=SECRET)
    with serve(app) as url:
        yield url


def test_concurrent_collector_posts_of_one_person_day_store_exactly_the_bound(store, catalog,
                                                                             api):
    """8 POSTs at once, 3 events each of one person-day: 3 stored, 21 bounded, all answered."""
    grant(store, catalog, "person-1")
    send = collector_posts(store, catalog, api)

    outcomes = []
    for day in range(1, ROUNDS + 1):
        outcomes += all_at_once(send, _batches(day))
    _assert_bound_held(store, outcomes, rounds=ROUNDS)


def test_the_same_events_sent_by_concurrent_batches_are_stored_once(store, catalog):
    """8 ingest_rows batches at once of the same 3 events: 3 stored, 21 duplicates, no error."""
    grant(store, catalog, "person-1")
    batch = _batches(1)[0]

    def send(rows: list[dict]) -> tuple[int, int]:
        report = ingest_rows(store, catalog, rows, tenant=TENANT, product=PRODUCT,
                             secret=SECRET)
        return report.accepted, report.duplicate

    outcomes = all_at_once(send, [batch] * WRITERS)
    assert (sum(a for a, _ in outcomes), sum(d for _, d in outcomes)) == (
        BOUND, (WRITERS - 1) * BOUND)
    assert event_count(store) == BOUND and quarantined(store) == []
