"""The collector endpoint: ``POST /api/v1/events``, a small Starlette app beside the dashboard.

Owns the HTTP boundary of ingestion: bearer-token authentication per source, request size
limits, translating the request into one ``ingest_rows`` batch (the same pipeline as
``veil ingest``) and the per-row answer. Started by ``veil serve-api``; it lives here rather
than under dashboard/ because it writes to the store, which dashboard modules never touch.

It must never read a request body before the token is checked, never store anything for a
request it answers with an error (401, 403, 413, 400), and never echo a submitted value.

Request (``Authorization: Bearer <token>``)::

    {"product": "health.vaccinations", "events": [{...}, {...}]}

``product`` may be left out when the source may post only one product. Answer (200)::

    {"batch_id": "...", "accepted": 1, "duplicate": 0, "bounded": 0, "rejected": 1,
     "results": [{"position": 1, "status": "accepted"},
                 {"position": 2, "status": "rejected", "reason": "PII value: ..."}]}

Errors are ``{"error": "..."}`` with 400 (malformed request), 401 (missing, unknown or revoked
token), 403 (product not allowed for this source), 413 (body or batch too large) or 503 (store
unavailable; safe to retry — event ids make a retry idempotent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from data.catalog import Catalog
from data.engine import Store
from data.errors import InvalidInput, StoreError, VeilError
from data.ingest._pipeline import IngestReport, ingest_rows
from data.ingest._tokens import SourceInfo, authenticate, mark_used

__all__ = ["ApiLimits", "create_app"]


@dataclass(frozen=True)
class ApiLimits:
    """Request bounds: a batch is one transaction, so it must stay small."""

    max_events: int = 1_000
    max_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        if not 1 <= self.max_events <= 100_000:
            raise ValueError(f"max_events must be 1-100000, got {self.max_events}")
        if not 1_024 <= self.max_bytes <= 64 * 1_048_576:
            raise ValueError(f"max_bytes must be 1 KiB-64 MiB, got {self.max_bytes}")


def create_app(store: Store, catalog: Catalog, *, secret: str,
               limits: ApiLimits = ApiLimits()) -> Starlette:
    """The collector API bound to one store and catalog."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def events(request: Request) -> JSONResponse:
        token = _bearer(request)
        if token is None:
            return _unauthorized("send the source's token as 'Authorization: Bearer <token>'")
        source = await run_in_threadpool(_authenticate, store, token)
        if source is None:
            return _unauthorized("the token is unknown or has been revoked")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
            return _too_large(f"the body has {int(declared):,} bytes; at most "
                              f"{limits.max_bytes:,} per request")
        body = bytearray()
        async for part in request.stream():
            body.extend(part)
            if len(body) > limits.max_bytes:
                return _too_large(f"the body exceeds {limits.max_bytes:,} bytes per request")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return _error(400, "the body is not valid JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
            return _error(400, 'the body must be an object {"product": ..., "events": [...]}')
        rows: list[Any] = payload["events"]
        if len(rows) > limits.max_events:
            return _too_large(f"the batch has {len(rows):,} events; at most "
                              f"{limits.max_events:,} per request")
        if not rows:
            return _error(400, "the batch has no events")
        product = payload.get("product")
        if product is None and len(source.products) == 1:
            product = source.products[0]
        if not isinstance(product, str) or product not in source.products:
            return _error(403, f"this source may post: {', '.join(source.products)}; name one "
                               f"of them in 'product'")
        try:
            report = await run_in_threadpool(_ingest, store, catalog, source, product, rows,
                                             secret, limits.max_events)
        except StoreError as exc:
            return _error(503, f"the store is unavailable, nothing was stored: {exc}")
        except InvalidInput as exc:
            return _error(400, str(exc))
        except VeilError as exc:
            return _error(500, str(exc))
        return JSONResponse(_answer(report))

    return Starlette(routes=[
        Route("/api/v1/health", health, methods=["GET"]),
        Route("/api/v1/events", events, methods=["POST"]),
    ])


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _authenticate(store: Store, token: str) -> SourceInfo | None:
    with store.read() as session:
        return authenticate(session, token)


def _ingest(store: Store, catalog: Catalog, source: SourceInfo, product: str, rows: list[Any],
            secret: str, chunk_rows: int) -> IngestReport:
    report = ingest_rows(store, catalog, rows, tenant=source.tenant, product=product,
                         secret=secret, source=f"api:{source.name}", chunk_rows=chunk_rows,
                         with_results=True)
    with store.write.begin() as session:
        mark_used(session, tenant=source.tenant, name=source.name)
    return report


def _answer(report: IngestReport) -> dict[str, Any]:
    results = []
    for result in report.results:
        item: dict[str, Any] = {"position": result.position, "status": result.status}
        if result.reason is not None:
            item["reason"] = result.reason
        results.append(item)
    return {"batch_id": report.batch_id, "product": report.product, "accepted": report.accepted,
            "duplicate": report.duplicate, "bounded": report.bounded,
            "rejected": report.rejected, "results": results}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _unauthorized(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="veil", error="invalid_token"'})


def _too_large(message: str) -> JSONResponse:
    return _error(413, message)
