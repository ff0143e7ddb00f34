"""The collector endpoint over a real socket: POST /api/v1/events (SPEC B2).

uvicorn serves the app on a free loopback port in a thread; httpx talks to it over TCP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from data.ingest import add_source, list_sources, revoke_source
from data.ingest.api import ApiLimits, create_app
from data.models import IngestBatch, QuarantinedRow
from ingest_support import PRODUCT, SECRET, TENANT, event, event_count, grant, serve

LIMITS = ApiLimits(max_events=10, max_bytes=16_384)


@pytest.fixture
def api(store, catalog) -> Iterator[str]:
    app = create_app(store, catalog, secret=SECRET, limits=LIMITS)
    with serve(app) as url:
        yield url


@pytest.fixture
def token(store, catalog) -> str:
    with store.write.begin() as session:
        _, issued = add_source(session, catalog, tenant=TENANT, name="clinic-app",
                               products=[PRODUCT])
    return issued


def post(api: str, body, *, token: str | None = None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if isinstance(body, (dict, list)):
        kwargs["content"] = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    else:
        kwargs["content"] = body
    return httpx.post(f"{api}/api/v1/events", headers=headers, timeout=30, **kwargs)


def batches(store) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(IngestBatch))


def test_health_answers(api):
    """GET /api/v1/health is a cheap liveness check."""
    assert httpx.get(f"{api}/api/v1/health", timeout=10).json() == {"status": "ok"}


@pytest.mark.parametrize("sent", [None, "veil_wrong-token", "Basic abc"])
def test_a_missing_or_wrong_token_gets_401_and_nothing_is_stored(api, store, catalog, token,
                                                                 sent):
    """No token, an unknown token: 401 with a Bearer challenge, no batch, no event."""
    grant(store, catalog, "person-1")
    response = post(api, {"product": PRODUCT, "events": [event(1)]}, token=sent)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "error" in response.json()
    assert batches(store) == 0 and event_count(store) == 0


def test_a_revoked_token_gets_401_and_nothing_is_stored(api, store, catalog, token):
    """Revocation takes effect on the next request."""
    grant(store, catalog, "person-1")
    assert post(api, {"events": [event(1)]}, token=token).status_code == 200
    with store.write.begin() as session:
        revoke_source(session, tenant=TENANT, name="clinic-app")
    response = post(api, {"events": [event(2)]}, token=token)
    assert response.status_code == 401
    assert batches(store) == 1 and event_count(store) == 1


def test_an_oversized_body_gets_413(api, store, token):
    """A body over the byte limit is refused from its Content-Length, unread."""
    rows = [event(i, metadata={"pad": "x" * 2_000}) for i in range(10)]
    assert len(json.dumps(rows)) > LIMITS.max_bytes
    response = post(api, {"product": PRODUCT, "events": rows}, token=token)
    assert response.status_code == 413 and "at most 16,384" in response.json()["error"]
    assert batches(store) == 0


def test_an_oversized_streamed_body_gets_413(api, store, token):
    """Without Content-Length (chunked), reading stops at the limit."""
    def chunks():
        yield b'{"product": "health.vaccinations", "events": ['
        for _ in range(200):
            yield b'{"event_id": "' + b"x" * 100 + b'"},'
        yield b"{}]}"

    response = post(api, chunks(), token=token)
    assert response.status_code == 413
    assert batches(store) == 0


def test_too_many_events_get_413(api, store, token):
    """More events than the batch limit: 413 naming the limit."""
    response = post(api, {"events": [event(i) for i in range(11)]}, token=token)
    assert response.status_code == 413 and "at most 10" in response.json()["error"]
    assert batches(store) == 0


def test_a_mixed_batch_answers_per_row(api, store, catalog, token):
    """Accepted, PII, duplicate, no consent, malformed: one result per row, in order."""
    grant(store, catalog, "person-1")
    response = post(api, {"product": PRODUCT, "events": [
        event(1),
        event(2, category="+250 788 123 456"),
        event(1),
        event(3, subject="stranger"),
        "not an object",
        event(4, metadata={"contact": {"email": "a@b.org"}}),
    ]}, token=token)
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["bounded"], body["rejected"]) == \
        (1, 1, 0, 4)
    assert [(r["position"], r["status"]) for r in body["results"]] == [
        (1, "accepted"), (2, "rejected"), (3, "duplicate"), (4, "rejected"), (5, "rejected"),
        (6, "rejected")]
    reasons = [r.get("reason", "") for r in body["results"]]
    assert reasons[1] == "PII value: 'category' holds a phone number"
    assert reasons[3].startswith("no consent") and reasons[5].startswith("PII key")
    assert "788" not in response.text and "a@b.org" not in response.text
    assert event_count(store) == 1
    with store.read() as session:
        rows = session.scalars(select(QuarantinedRow).order_by(QuarantinedRow.position)).all()
    assert [r.position for r in rows] == [2, 4, 5, 6]
    assert all(r.source.startswith("api:clinic-app") for r in rows)
    with store.read() as session:
        [source] = list_sources(session, tenant=TENANT)
    assert source.last_used_at is not None


def test_a_product_the_source_may_not_post_gets_403(api, store, token):
    """Tokens are bound to their products."""
    response = post(api, {"product": "social.grants", "events": [event(1)]}, token=token)
    assert response.status_code == 403 and "health.vaccinations" in response.json()["error"]
    assert batches(store) == 0


@pytest.mark.parametrize("body", [b"{not json", b'{"events": "many"}', b"[]",
                                  b'{"events": []}'])
def test_a_malformed_request_gets_400(api, store, token, body):
    """The body must be {"product": ..., "events": [...]} with at least one event."""
    assert post(api, body, token=token).status_code == 400
    assert batches(store) == 0


def test_tokens_are_stored_hashed(store, catalog, token):
    """The database holds the token's SHA-256 and a short hint, never the token."""
    from data.models import IngestSource

    with store.read() as session:
        [row] = session.scalars(select(IngestSource)).all()
    assert token not in (row.token_hash, row.token_hint) and token.startswith(row.token_hint)
    assert len(row.token_hash) == 64
