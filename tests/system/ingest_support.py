"""Helpers shared by the ingestion system tests (not a test module)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from data.catalog import Catalog
from data.consent import grant_consent
from data.engine import Store
from data.ingest import add_source, ingest_rows
from data.models import VERTICAL_EVENT_MODELS, QuarantinedRow
from data.pseudonym import pseudonym

SECRET = "ingest-test-secret-0123456789"
TENANT = "kigali-east"
PRODUCT = "health.vaccinations"
GRANTED_AT = datetime(2024, 1, 1, tzinfo=UTC)
#: A point in Kigali (Nyarugenge district's centroid), inside kigali-east's area.
LAT, LNG = -1.9536, 30.0606


def event(n: int | str, subject: str = "person-1", **fields: Any) -> dict[str, Any]:
    """A valid vaccination event; ``fields`` override or add fields."""
    row: dict[str, Any] = {
        "event_id": f"ev-{n}", "subject_id": subject, "event_type": "vaccination",
        "timestamp": "2025-03-04T10:07:30+02:00", "age": 4, "gender": "female",
        "category": "polio", "lat": LAT, "lng": LNG,
    }
    row.update(fields)
    return {key: value for key, value in row.items() if value is not ...}


def with_monthly_bound(catalog: Catalog, bound: int, *, product: str = PRODUCT) -> Catalog:
    """The catalog with ``product`` declaring ``max_events_per_subject_per_month = bound``
    (whatever catalog/products.toml says), for tests of the person-month bound."""
    products = tuple(dataclasses.replace(p, max_events_per_subject_per_month=bound)
                     if p.id == product else p for p in catalog.products)
    return dataclasses.replace(catalog, products=products,
                               _product_index={p.id: p for p in products})


def daily_only(catalog: Catalog) -> Catalog:
    """The catalog with no product declaring a person-month bound: for the tests that pin the
    daily bound and the other checks with one subject's events spread over a month (the
    monthly bound has its own tests, tests/system/test_ingest_month_bound.py)."""
    products = tuple(dataclasses.replace(p, max_events_per_subject_per_month=None)
                     for p in catalog.products)
    return dataclasses.replace(catalog, products=products,
                               _product_index={p.id: p for p in products})


def grant(store: Store, catalog: Catalog, *subjects: str, vertical: str = "health",
          tenant: str = TENANT, at: datetime = GRANTED_AT) -> None:
    for subject in subjects:
        grant_consent(store, catalog, tenant=tenant, pseudonym=pseudonym(SECRET, subject),
                      vertical=vertical, at=at)


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    with path.open("w") as handle:
        for row in rows:
            handle.write(row if isinstance(row, str) else json.dumps(row))
            handle.write("\n")
    return path


def stored_events(store: Store, vertical: str = "health") -> list:
    model = VERTICAL_EVENT_MODELS[vertical]
    with store.read() as session:
        return list(session.scalars(select(model).order_by(model.ts, model.event_id)))


def event_count(store: Store, vertical: str = "health") -> int:
    model = VERTICAL_EVENT_MODELS[vertical]
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(model))


def quarantined(store: Store) -> list[QuarantinedRow]:
    with store.read() as session:
        return list(session.scalars(select(QuarantinedRow).order_by(QuarantinedRow.position,
                                                                    QuarantinedRow.id)))


@contextmanager
def serve(app) -> Iterator[str]:
    """Serve an ASGI app (the collector) on a free loopback port; yield its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# --- concurrent writers (tests/system/test_ingest_bound_race.py, test_ingest_month_bound.py) ----

#: One batch's outcome as a concurrent writer sees it: (accepted, bounded).
Send = Callable[[list[dict]], tuple[int, int]]


def all_at_once(send: Send, batches: list[list[dict]]) -> list[tuple[int, int]]:
    """Run ``send`` on every batch from its own thread, released together; (accepted, bounded)
    per batch."""
    barrier = threading.Barrier(len(batches))

    def one(batch: list[dict]) -> tuple[int, int]:
        barrier.wait(timeout=30)
        return send(batch)

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        return list(pool.map(one, batches))


def python_batches(store: Store, catalog: Catalog) -> Send:
    """``send``: one ``ingest_rows`` batch; every row ends accepted or bounded."""
    def send(batch: list[dict]) -> tuple[int, int]:
        report = ingest_rows(store, catalog, batch, tenant=TENANT, product=PRODUCT,
                             secret=SECRET)
        assert report.rows == report.accepted + report.bounded
        return report.accepted, report.bounded

    return send


def collector_posts(store: Store, catalog: Catalog, api: str) -> Send:
    """``send``: one POST to the collector at ``api`` as a new source "clinic-app"; every row is
    answered accepted or bounded."""
    import httpx

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

    return send


def assert_bound_held(store: Store, outcomes: list[tuple[int, int]], *, sent: int, stored: int,
                      reason: str) -> None:
    """Of ``sent`` rows exactly ``stored`` were accepted and stored, and every other one was
    bounded and quarantined with ``reason``."""
    accepted = sum(a for a, _ in outcomes)
    bounded = sum(b for _, b in outcomes)
    assert (accepted, bounded) == (stored, sent - stored)
    assert event_count(store) == stored
    held = quarantined(store)
    assert len(held) == bounded
    assert all(row.reason.startswith(reason) for row in held)
