"""The collector endpoint: ``POST /api/v1/events``, a small Starlette app beside the dashboard.

Owns the HTTP boundary of ingestion: bearer-token authentication per source, request size,
time and concurrency limits, translating the request into one ``ingest_rows`` batch (the same
pipeline as ``veil ingest``) and the per-row answer. Started by ``veil serve-api`` through
``server_config``, which adds the limits that live below the app (header deadline, connection
cap); it lives here rather than under dashboard/ because it writes to the store, which
dashboard modules never touch.

It must never read a request body before the token is checked, never store anything for a
request it answers with an error (401, 403, 408, 413, 429, 400, 503), never keep a connection
open after answering before the body was read to its end (the unread rest could trickle in
forever), and never echo a submitted value.

Request (``Authorization: Bearer <token>``)::

    {"product": "health.vaccinations", "events": [{...}, {...}]}

``product`` may be left out when the source may post only one product. Answer (200)::

    {"batch_id": "...", "accepted": 1, "duplicate": 0, "bounded": 0, "rejected": 1,
     "results": [{"position": 1, "status": "accepted"},
                 {"position": 2, "status": "rejected", "reason": "PII value: ..."}]}

Errors are ``{"error": "..."}`` with 400 (malformed request), 401 (missing, unknown or revoked
token), 403 (product not allowed for this source), 408 (the body did not arrive within
``body_seconds``), 413 (body or batch too large), 429 (this token already has
``max_per_token`` requests in flight; ``Retry-After``) or 503 (store unavailable, or the server
already has ``max_requests`` in flight; safe to retry — event ids make a retry idempotent).
A connection whose request headers are not complete within ``header_seconds`` is closed
unanswered; beyond ``max_connections`` open connections uvicorn answers 503.

The limits hold per server process: requests in flight are counted in the process's event loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from data.catalog import Catalog
from data.engine import Store
from data.errors import InvalidInput, StoreError, VeilError
from data.ingest._pipeline import IngestReport, ingest_rows
from data.ingest._sources import loads_json
from data.ingest._tokens import SourceInfo, authenticate, mark_used

__all__ = ["ApiLimits", "create_app", "server_config"]

#: Request line plus headers, in bytes (h11's own default, pinned): beyond it uvicorn answers 400.
MAX_HEADER_BYTES = 16_384
#: An idle keep-alive connection is closed after this many seconds (uvicorn's default, pinned).
KEEP_ALIVE_SECONDS = 5
#: What a 429 or a busy 503 asks the client to wait before retrying, in seconds.
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class ApiLimits:
    """Request bounds: a batch is one transaction, so it must stay small; a client must send it
    promptly and may not hold more than its share of the server.

    ``body_seconds``: the whole body must arrive within this many seconds once reading starts
    (408). ``header_seconds``: a connection's request headers must be complete this many
    seconds after it opens or after its previous answer, else it is closed.
    ``max_per_token``: requests in flight per source token (429). ``max_requests``: requests in
    flight in all (503). ``max_connections``: open connections, idle ones included (uvicorn's
    ``limit_concurrency``; 503). The bounds match data.config.COLLECTOR_LIMITS.
    """

    max_events: int = 1_000
    max_bytes: int = 1_048_576
    body_seconds: float = 30.0
    header_seconds: float = 10.0
    max_per_token: int = 8
    max_requests: int = 64
    max_connections: int = 512

    def __post_init__(self) -> None:
        if not 1 <= self.max_events <= 100_000:
            raise ValueError(f"max_events must be 1-100000, got {self.max_events}")
        if not 1_024 <= self.max_bytes <= 64 * 1_048_576:
            raise ValueError(f"max_bytes must be 1 KiB-64 MiB, got {self.max_bytes}")
        if not 0.1 <= self.body_seconds <= 600:  # also refuses nan
            raise ValueError(f"body_seconds must be 0.1-600, got {self.body_seconds}")
        if not 0.1 <= self.header_seconds <= 300:
            raise ValueError(f"header_seconds must be 0.1-300, got {self.header_seconds}")
        if not 1 <= self.max_per_token <= 1_000:
            raise ValueError(f"max_per_token must be 1-1000, got {self.max_per_token}")
        if not 1 <= self.max_requests <= 10_000:
            raise ValueError(f"max_requests must be 1-10000, got {self.max_requests}")
        if not 1 <= self.max_connections <= 100_000:
            raise ValueError(f"max_connections must be 1-100000, got {self.max_connections}")


def create_app(store: Store, catalog: Catalog, *, secret: str,
               limits: ApiLimits = ApiLimits()) -> Starlette:
    """The collector API bound to one store and catalog; serve it with ``server_config``."""
    # Requests in flight. Handlers run on the one event-loop thread and nothing awaits between
    # a check and its increment, so plain counters are exact.
    in_flight = 0
    per_token = Counter[tuple[str, str]]()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def events(request: Request) -> JSONResponse:
        nonlocal in_flight
        if in_flight >= limits.max_requests:
            return _busy(503, f"the collector is already handling {limits.max_requests} "
                              f"requests; nothing was stored, retry shortly")
        in_flight += 1
        try:
            return await admitted(request)
        finally:
            in_flight -= 1

    async def admitted(request: Request) -> JSONResponse:
        token = _bearer(request)
        if token is None:
            return _unauthorized("send the source's token as 'Authorization: Bearer <token>'")
        source = await run_in_threadpool(_authenticate, store, token)
        if source is None:
            return _unauthorized("the token is unknown or has been revoked")
        key = (source.tenant, source.name)
        if per_token[key] >= limits.max_per_token:
            return _busy(429, f"this source already has {limits.max_per_token} requests in "
                              f"flight; nothing was stored, retry when one has been answered")
        per_token[key] += 1
        try:
            return await authorised(request, source)
        finally:
            per_token[key] -= 1
            if not per_token[key]:
                del per_token[key]

    async def authorised(request: Request, source: SourceInfo) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
            return _too_large(f"the body has {int(declared):,} bytes; at most "
                              f"{limits.max_bytes:,} per request")
        body = bytearray()
        with anyio.move_on_after(limits.body_seconds) as deadline:
            try:
                async for part in request.stream():
                    body.extend(part)
                    if len(body) > limits.max_bytes:
                        return _too_large(f"the body exceeds {limits.max_bytes:,} bytes per "
                                          f"request")
            except ClientDisconnect:
                return _error(400, "the client went away before the body ended")
        if deadline.cancelled_caught:
            return _error(408, f"the body did not arrive within {limits.body_seconds:g} "
                               f"seconds; nothing was stored (send it at once, or send smaller batches)")
        try:
            payload = loads_json(body)  # a repeated key is refused, never half-read
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
    ], middleware=[Middleware(_CloseUnlessBodyRead)])


def server_config(app: ASGIApp, *, limits: ApiLimits, host: str = "127.0.0.1",
                  port: int = 8502) -> uvicorn.Config:
    """uvicorn settings that enforce the limits below the app: the header deadline, the
    connection cap, the header size; h11 on purpose (the deadline hooks into its protocol)."""
    protocol = type("HeaderDeadlineH11", (_HeaderDeadlineH11,),
                    {"header_seconds": limits.header_seconds})
    return uvicorn.Config(app, host=host, port=port, http=protocol, ws="none", lifespan="off",
                          log_level="warning", limit_concurrency=limits.max_connections,
                          timeout_keep_alive=KEEP_ALIVE_SECONDS,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES)


class _HeaderDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers.

    uvicorn times out only idle keep-alive connections, and any byte received cancels that
    timer, so a client sending a header byte a second would hold its connection for ever. Here
    a timer starts when the connection opens and again when an answer is complete; it is
    cancelled when a request's headers have been parsed (a new request cycle exists), and when
    it fires the connection is closed unanswered.
    """

    header_seconds: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: Any = None  # asyncio.TimerHandle
        self._cycle_when_armed: object = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        # Armed before the parent runs: it may parse a pipelined request at once, which disarms.
        self._arm_header_deadline()
        super().on_response_complete()

    def handle_events(self) -> None:
        super().handle_events()
        if self._header_timer is not None and self.cycle is not self._cycle_when_armed:
            self._disarm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._cycle_when_armed = self.cycle
        self._header_timer = self.loop.call_later(self.header_seconds, self._headers_late)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()  # connection_lost then tells h11 and wakes any cycle


class _CloseUnlessBodyRead:
    """Adds ``Connection: close`` to an answer sent before the request body was read to its end.

    Otherwise uvicorn keeps the connection open after such an answer and discards the rest of
    the body as it arrives, with every byte resetting its keep-alive timer: a client refused
    with 401, 408, 413 or 429 could go on trickling for ever.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        read = (b"transfer-encoding" not in headers
                and headers.get(b"content-length", b"0").strip() == b"0")

        async def receive_noting_the_end() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                read = True
            return message

        async def send_closing_if_unread(message: Message) -> None:
            if message["type"] == "http.response.start" and not read:
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive_noting_the_end, send_closing_if_unread)


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


def _busy(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
