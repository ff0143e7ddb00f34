"""The collector API's limits against slow and flooding clients (issue 15, item 3).

A real uvicorn server, configured by ``server_config`` as ``veil serve-api`` configures it,
listens on a free loopback port in a thread; hand-driven sockets play the slow senders (one
byte a second, as the audit's slow-loris did), httpx plays the well-behaved collector. Limits
are set short so each test takes seconds; waits are for conditions, bounded by a generous
slack because the machine is shared.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select as sql_select

from data.config import PROJECT_ROOT
from data.ingest import add_source
from data.ingest.api import ApiLimits, create_app, server_config
from data.models import IngestBatch
from ingest_support import PRODUCT, SECRET, TENANT, event, event_count, grant, stored_events

#: How late past its deadline a connection may still be closed on a busy machine.
SLACK = 8.0


class Raw:
    """One hand-driven client connection: sends what it is told, records what comes back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        #: When the server's clock for this connection started, at the latest (tests move it).
        self.since = time.monotonic()
        self.received = bytearray()
        self.closed_at: float | None = None

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.sock.sendall(data)
        except OSError:  # reset or broken pipe: the server has closed it
            self._mark_closed()

    def read_available(self) -> None:
        """Read what has arrived without blocking; note when the server has closed."""
        while not self.closed:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return
            try:
                data = self.sock.recv(65_536)
            except OSError:
                data = b""
            if not data:
                self._mark_closed()
            self.received.extend(data)

    def status(self) -> int | None:
        """The answer's status code, once its status line has arrived."""
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", bytes(self.received))
        return int(match.group(1)) if match else None

    def answer(self) -> tuple[int, dict[str, str], bytes] | None:
        """Status, headers and body of a complete answer (Content-Length framed), else None."""
        head, found, body = bytes(self.received).partition(b"\r\n\r\n")
        if not found:
            return None
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        if len(body) < length:
            return None
        return int(status_line.split()[1]), headers, body[:length]

    def close(self) -> None:
        self.sock.close()

    def _mark_closed(self) -> None:
        self.closed_at = time.monotonic()


class Collector:
    """A running collector: its URL and a factory of raw connections (closed at the end)."""

    def __init__(self, port: int, limits: ApiLimits) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.limits = limits
        self.raws: list[Raw] = []

    def connect(self) -> Raw:
        raw = Raw(self.port)
        self.raws.append(raw)
        return raw

    def post(self, body: dict, *, token: str) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/events", content=json.dumps(body).encode(),
                          headers={"Authorization": f"Bearer {token}",
                                   "Content-Type": "application/json"}, timeout=60)


@contextmanager
def _served(app, limits: ApiLimits) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, limits=limits))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait_for(lambda: server.started, within=10, what="uvicorn to start")
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@pytest.fixture
def collector(store, catalog) -> Iterator:
    """Start the collector with the given limits (on top of small batch limits)."""
    with ExitStack() as stack:
        started: list[Collector] = []

        def start(**bounds) -> Collector:
            limits = ApiLimits(max_events=10, max_bytes=16_384, **bounds)
            app = create_app(store, catalog, secret=SECRET, limits=limits)
            running = Collector(stack.enter_context(_served(app, limits)), limits)
            started.append(running)
            return running

        try:
            yield start
        finally:
            for running in started:  # before the servers stop, which wait for connections
                for raw in running.raws:
                    raw.close()


def _token(store, catalog, name: str) -> str:
    with store.write.begin() as session:
        _, issued = add_source(session, catalog, tenant=TENANT, name=name, products=[PRODUCT])
    return issued


@pytest.fixture
def token(store, catalog) -> str:
    return _token(store, catalog, "clinic-app")


def batches(store) -> int:
    with store.read() as session:
        return session.scalar(sql_select(func.count()).select_from(IngestBatch))


def _wait_for(condition, *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {within} s"
        time.sleep(0.02)


def _trickle(raws: list[Raw], *, byte: bytes, within: float) -> None:
    """Send each open connection one byte a second until all are closed or ``within`` s pass;
    read whatever comes back meanwhile."""
    deadline = time.monotonic() + within
    next_byte = time.monotonic() + 1
    while time.monotonic() < deadline:
        open_ = [raw for raw in raws if not raw.closed]
        if not open_:
            return
        select.select([raw.sock for raw in open_], [], [], 0.05)
        for raw in open_:
            raw.read_available()
        if time.monotonic() >= next_byte:
            for raw in open_:
                raw.send(byte)
            next_byte += 1


def _post_head(token: str | None, *, length: int | None = None, chunked: bool = False) -> bytes:
    lines = ["POST /api/v1/events HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_slow_bodies_are_cut_at_the_deadline_while_a_normal_post_succeeds(
        store, catalog, collector, token):
    """50 bodies sent a byte a second: each answered 408 or closed after body_seconds (+slack),
    nothing of them stored, while a normal post is answered 200 meanwhile."""
    grant(store, catalog, "person-1")
    api = collector(body_seconds=2, header_seconds=5, max_per_token=100, max_requests=100)
    senders = [api.connect() for _ in range(50)]
    for raw in senders:
        raw.send(_post_head(token, length=1_000) + b'{"events": [')
        raw.since = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        normal = pool.submit(api.post, {"events": [event(1)]}, token=token)
        _trickle(senders, byte=b" ", within=api.limits.body_seconds + SLACK)
        response = normal.result(timeout=60)
    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert all(raw.closed for raw in senders), \
        f"{sum(not raw.closed for raw in senders)} of 50 slow senders still open"
    assert min(raw.closed_at - raw.since for raw in senders) >= api.limits.body_seconds
    answered = {raw.status() for raw in senders} - {None}
    assert answered <= {408} and answered, answered
    assert batches(store) == 1 and event_count(store) == 1


@pytest.mark.parametrize("after_an_answer", [False, True],
                         ids=["fresh connection", "kept-alive connection"])
def test_headers_that_never_finish_are_closed(collector, after_an_answer):
    """Request headers sent a byte a second are cut off after header_seconds (+slack),
    unanswered, whether on a new connection or after an answer on a kept-alive one."""
    api = collector(header_seconds=1.5)
    senders = [api.connect() for _ in range(20)]
    if after_an_answer:
        for raw in senders:
            raw.send(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for raw in senders:
            _wait_for(lambda: raw.read_available() or raw.answer() is not None, within=30,
                      what="the health answer")
            assert raw.answer()[0] == 200
            raw.since = time.monotonic()
            raw.received.clear()
    for raw in senders:
        raw.send(b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    _trickle(senders, byte=b"a", within=api.limits.header_seconds + SLACK)
    assert all(raw.closed for raw in senders), \
        f"{sum(not raw.closed for raw in senders)} of 20 slow header senders still open"
    assert min(raw.closed_at - raw.since for raw in senders) >= api.limits.header_seconds * 0.8
    assert all(not raw.received for raw in senders)


def _on_day(name: str, day: int) -> dict:
    # each on a day of its own month: no contribution bound, daily or monthly, decides
    return event(name, timestamp=f"2025-{day:02d}-{day:02d}T10:00:00Z")


def _hold(api: Collector, token: str, rows: list[dict]) -> Raw:
    """A post whose headers and first half of the body are sent; the rest is held back."""
    body = json.dumps({"events": rows}).encode()
    raw = api.connect()
    raw.send(_post_head(token, length=len(body)) + body[:len(body) // 2])
    raw.rest = body[len(body) // 2:]  # type: ignore[attr-defined]
    return raw


def _finish(raw: Raw) -> tuple[int, dict[str, str], bytes]:
    raw.send(raw.rest)  # type: ignore[attr-defined]
    _wait_for(lambda: raw.read_available() or raw.answer() is not None, within=60,
              what="the held post's answer")
    return raw.answer()


def test_posts_beyond_the_per_token_cap_get_429_and_store_nothing(store, catalog, collector,
                                                                 token):
    """With max_per_token requests of a token in flight, its next post gets 429 with
    Retry-After and stores nothing; another token is served; once answered, it is served."""
    grant(store, catalog, "person-1")
    other = _token(store, catalog, "field-app")
    api = collector(body_seconds=30, max_per_token=2, max_requests=100)
    held = [_hold(api, token, [_on_day(f"held-{n}", n + 1)]) for n in range(2)]

    def refused() -> bool:  # an empty batch: 429 once both are in flight, else 400
        return api.post({"events": []}, token=token).status_code == 429

    _wait_for(refused, within=30, what="both held posts to be in flight")
    response = api.post({"events": [_on_day("over", 3)]}, token=token)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert "2 requests in flight" in response.json()["error"]
    assert api.post({"events": [_on_day("other", 4)]}, token=other).status_code == 200
    assert [_finish(raw)[0] for raw in held] == [200, 200]
    assert api.post({"events": [_on_day("later", 5)]}, token=token).status_code == 200
    assert len(stored_events(store)) == 4  # held-0, held-1, other and later; never "over"
    assert batches(store) == 4


def test_posts_beyond_the_global_cap_get_503_with_retry_after(store, catalog, collector,
                                                             token):
    """With max_requests in flight in all, any further post gets 503 and stores nothing."""
    grant(store, catalog, "person-1")
    other = _token(store, catalog, "field-app")
    api = collector(body_seconds=30, max_per_token=5, max_requests=2)
    held = [_hold(api, token, [event(f"held-{n}")]) for n in range(2)]

    def refused() -> bool:
        return api.post({"events": []}, token=other).status_code == 503

    _wait_for(refused, within=30, what="both held posts to be in flight")
    response = api.post({"events": [event("over")]}, token=other)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert [_finish(raw)[0] for raw in held] == [200, 200]
    assert event_count(store) == 2 and batches(store) == 2


def test_connections_beyond_the_cap_get_503(collector):
    """With max_connections open, a request on one more connection gets 503 and is closed."""
    api = collector(header_seconds=30, max_connections=4)
    for _ in range(3):
        api.connect()  # opened, never used
    raw = api.connect()
    raw.send(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    _trickle([raw], byte=b"", within=30)
    assert raw.closed and raw.status() == 503


@pytest.mark.parametrize("case", ["declared too large", "streamed too large", "no token"])
def test_an_answer_before_the_body_ended_closes_the_connection(store, collector, token, case):
    """413 for a body over the cap (declared or streamed) and 401 for a missing token are sent
    before the body has arrived, and the connection is closed although the sender goes on."""
    api = collector(body_seconds=60)
    raw = api.connect()
    if case == "declared too large":
        raw.send(_post_head(token, length=100_000) + b'{"events": [')
    elif case == "streamed too large":
        chunk = b'{"events": [' + b" " * 20_000
        raw.send(_post_head(token, chunked=True) + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    else:
        raw.send(_post_head(None, length=1_000) + b'{"events": [')
    expected = 401 if case == "no token" else 413
    byte = b"1\r\n \r\n" if case == "streamed too large" else b" "
    _trickle([raw], byte=byte, within=SLACK + 2)
    assert raw.closed, "the connection stayed open after the answer"
    assert raw.status() == expected
    assert batches(store) == 0


@pytest.fixture
def served_by_the_cli(store) -> Iterator:
    """Start `veil serve-api` in its own process with the given VEIL_API_* variables."""
    processes: list[subprocess.Popen] = []
    started: list[Collector] = []

    def start(**variables: str) -> Collector:
        with socket.socket() as probe:  # a free port; nothing else binds loopback ports here
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**os.environ, **variables, "VEIL_DEMO_MODE": "1", "VEIL_SECRET": SECRET,
               "VEIL_DATABASE_URL": store.engine.url.render_as_string(hide_password=False)}
        process = subprocess.Popen(
            [sys.executable, "-m", "dashboard.cli", "serve-api", "--port", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        processes.append(process)
        running = Collector(port, ApiLimits())
        started.append(running)

        def answering() -> bool:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                return httpx.get(f"{running.url}/api/v1/health", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(answering, within=60, what="veil serve-api to answer")
        return running

    try:
        yield start
    finally:
        for raw in (raw for running in started for raw in running.raws):
            raw.close()
        for process in processes:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(20)
            process.stdout.close()


def test_veil_serve_api_applies_the_limits_from_the_environment(store, catalog,
                                                                served_by_the_cli, token):
    """VEIL_API_HEADER_SECONDS and VEIL_API_MAX_PER_TOKEN reach the server `veil serve-api`
    runs: slow headers are cut off, a second post of one token in flight gets 429."""
    grant(store, catalog, "person-1")
    api = served_by_the_cli(VEIL_API_HEADER_SECONDS="1", VEIL_API_MAX_PER_TOKEN="1")
    slow = api.connect()
    slow.send(b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    _trickle([slow], byte=b"a", within=1 + SLACK)
    assert slow.closed and not slow.received
    held = _hold(api, token, [_on_day("held", 1)])
    _wait_for(lambda: api.post({"events": []}, token=token).status_code == 429, within=30,
              what="the held post to be in flight")
    assert _finish(held)[0] == 200
    assert event_count(store) == 1


def test_a_malformed_limit_stops_veil_serve_api_naming_the_variable(tmp_path):
    """VEIL_API_BODY_SECONDS=0 is refused before anything is served, the variable named."""
    env = {**os.environ, "VEIL_DEMO_MODE": "1", "VEIL_VAR_DIR": str(tmp_path),
           "VEIL_API_BODY_SECONDS": "0"}
    env.pop("VEIL_DATABASE_URL", None)
    # In its own process: a veil that ignored the variable would serve until the timeout.
    result = subprocess.run([sys.executable, "-m", "dashboard.cli", "serve-api", "--port", "0"],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "VEIL_API_BODY_SECONDS must be a number of seconds from 0.1 to 600, got '0'" in \
        result.stderr
