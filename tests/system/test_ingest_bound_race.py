"""The contribution bound under concurrent ingestion (issue 14, item 1).

Several writers send events of one subject, one UTC day and one event type at the same time,
each in its own transaction on its own connection, released together by a barrier. Exactly
the product's bound (health.vaccinations: 3 a day) is stored, whoever wins; the rest are
quarantined as "over contribution bound"; nothing is lost. Every test runs on the embedded
store and, with VEIL_TEST_POSTGRES_URL, on PostgreSQL (READ COMMITTED, where a plain read of
the stored counts does not serialise two writers).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from data.ingest import add_source, ingest_rows
from data.ingest.api import create_app
from ingest_support import (PRODUCT, SECRET, TENANT, daily_only, event, event_count, grant,
                            quarantined, serve)

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


def _all_at_once(send: Callable[[list[dict]], tuple[int, int]],
                 batches: list[list[dict]]) -> list[tuple[int, int]]:
    """Run ``send`` on every batch from its own thread, released together; (accepted, bounded)
    per batch."""
    barrier = threading.Barrier(len(batches))

    def one(batch: list[dict]) -> tuple[int, int]:
        barrier.wait(timeout=30)
        return send(batch)

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        return list(pool.map(one, batches))


def _assert_bound_held(store, outcomes: list[tuple[int, int]], *, rounds: int) -> None:
    sent = rounds * WRITERS * BOUND
    accepted = sum(a for a, _ in outcomes)
    bounded = sum(b for _, b in outcomes)
    assert (accepted, bounded) == (rounds * BOUND, sent - rounds * BOUND)
    assert event_count(store) == rounds * BOUND
    held = quarantined(store)
    assert len(held) == bounded
    assert all(row.reason.startswith("over contribution bound") for row in held)


def test_concurrent_python_batches_of_one_person_day_store_exactly_the_bound(store, catalog):
    """8 ingest_rows batches at once, 3 events each of one person-day: 3 stored, 21 bounded."""
    grant(store, catalog, "person-1")

    def send(batch: list[dict]) -> tuple[int, int]:
        report = ingest_rows(store, catalog, batch, tenant=TENANT, product=PRODUCT,
                             secret=SECRET)
        assert report.rows == report.accepted + report.bounded
        return report.accepted, report.bounded

    outcomes = []
    for day in range(1, ROUNDS + 1):
        outcomes += _all_at_once(send, _batches(day))
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
    with store.write.begin() as session:
        _, token = add_source(session, catalog, tenant=TENANT, name="clinic-app",
                              products=[PRODUCT])

    def send(batch: list[dict]) -> tuple[int, int]:
        response = httpx.post(
            f"{api}/api/v1/events", timeout=60,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            content=json.dumps({"product": PRODUCT, "events": batch}).encode())
        assert response.status_code == 200, response.text
        answer = response.json()
        assert {r["status"] for r in answer["results"]} <= {"accepted", "bounded"}
        return answer["accepted"], answer["bounded"]

    outcomes = []
    for day in range(1, ROUNDS + 1):
        outcomes += _all_at_once(send, _batches(day))
    _assert_bound_held(store, outcomes, rounds=ROUNDS)


def test_the_same_events_sent_by_concurrent_batches_are_stored_once(store, catalog):
    """8 ingest_rows batches at once of the same 3 events: 3 stored, 21 duplicates, no error."""
    grant(store, catalog, "person-1")
    batch = _batches(1)[0]

    def send(rows: list[dict]) -> tuple[int, int]:
        report = ingest_rows(store, catalog, rows, tenant=TENANT, product=PRODUCT,
                             secret=SECRET)
        return report.accepted, report.duplicate

    outcomes = _all_at_once(send, [batch] * WRITERS)
    assert (sum(a for a, _ in outcomes), sum(d for _, d in outcomes)) == (
        BOUND, (WRITERS - 1) * BOUND)
    assert event_count(store) == BOUND and quarantined(store) == []
