"""Issue 20 without a store: the webhook setting fails closed with its key named, the webhook
client against a real loopback HTTP server (2xx, 5xx, redirects, nobody listening), the
evidence period and signing key, and verification of something that is not a bundle."""

from __future__ import annotations

import socket
import threading
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from data.config import load_settings
from data.errors import ConfigError, InvalidInput
from privacy.compliance.alerts import Alert, WebhookError, post_json
from privacy.compliance.evidence import EvidenceInvalid, month_span, public_key, verify_bundle
from privacy.compliance.jobs import check_job_filters

BASE = {"VEIL_DEMO_MODE": "1"}


# --- VEIL_ALERT_WEBHOOK_URL -----------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://alerts.example.org/hooks/veil?token=abc",
                                 "http://127.0.0.1:8080/hook", "http://localhost/hook",
                                 "http://[::1]:9000/", "http://127.0.0.2/x"])
def test_webhook_accepts_https_and_loopback_http(url):
    """https anywhere, plain http to the loopback interface only."""
    assert load_settings({**BASE, "VEIL_ALERT_WEBHOOK_URL": url}).alert_webhook_url == url


def test_webhook_is_off_when_unset():
    """No variable (or an empty one): no webhook, nothing posted."""
    assert load_settings(BASE).alert_webhook_url is None
    assert load_settings({**BASE, "VEIL_ALERT_WEBHOOK_URL": "  "}).alert_webhook_url is None


@pytest.mark.parametrize("url, message", [
    ("http://alerts.example.org/hook", "plain http only to the loopback interface"),
    ("http://10.0.0.5/hook", "plain http only to the loopback interface"),
    ("ftp://127.0.0.1/hook", "must be an https:// URL"),
    ("alerts.example.org/hook", "must be an https:// URL"),
    ("https:///hook", "must be an https:// URL"),
    ("https://user:secret@alerts.example.org/hook", "must not carry a user name or password"),
    ("https://alerts.example.org:99999/hook", "is not a URL"),
    ("https://alerts.example.org/ho ok", "must not contain spaces"),
])
def test_a_malformed_webhook_fails_closed_naming_the_key(url, message):
    """A value that is present but unusable stops start-up, naming VEIL_ALERT_WEBHOOK_URL."""
    with pytest.raises(ConfigError, match=f"VEIL_ALERT_WEBHOOK_URL.*{message}"):
        load_settings({**BASE, "VEIL_ALERT_WEBHOOK_URL": url})


def test_the_webhook_error_never_repeats_the_credentials():
    """A rejected URL with credentials is not echoed (its password would reach the logs)."""
    with pytest.raises(ConfigError) as failure:
        load_settings({**BASE, "VEIL_ALERT_WEBHOOK_URL": "https://u:hunter2@example.org/"})
    assert "hunter2" not in str(failure.value)


# --- the webhook client ---------------------------------------------------------------------


@pytest.fixture
def server():
    """A loopback HTTP server answering POST with ``status`` (and ``location`` on 3xx)."""
    state = {"status": 200, "location": None, "bodies": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            state["bodies"].append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(state["status"])
            if state["location"]:
                self.send_header("Location", state["location"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/hook?token=secret-token"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_post_json_delivers_the_document(server):
    """A 2xx answer is a delivery; the body is the JSON document."""
    assert post_json(server["url"], {"alert": {"id": "a:1"}}) == 200
    assert server["bodies"] == [b'{"alert": {"id": "a:1"}}']


@pytest.mark.parametrize("status", [400, 500, 503])
def test_post_json_fails_on_an_error_status_without_the_token(server, status):
    """A 4xx/5xx answer is a WebhookError naming the status; the URL's token is not in it."""
    server["status"] = status
    with pytest.raises(WebhookError, match=f"answered HTTP {status}") as failure:
        post_json(server["url"], {"alert": {}})
    assert "secret-token" not in str(failure.value)


def test_post_json_does_not_follow_a_redirect(server):
    """A redirect could take the alert off https or off this machine: it is a failure."""
    server["status"], server["location"] = 307, "http://198.51.100.7/elsewhere"
    with pytest.raises(WebhookError, match="answered HTTP 307"):
        post_json(server["url"], {"alert": {}})
    assert len(server["bodies"]) == 1


def test_post_json_to_nobody_is_a_webhook_error():
    """Nothing listening: 'cannot reach', never an OSError escaping."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WebhookError, match=f"cannot reach http://127.0.0.1:{port}"):
        post_json(f"http://127.0.0.1:{port}/hook", {}, timeout=2)


def test_alert_payload_is_plain_json():
    """An alert's payload: its id (the key), kind, severity, tenant, product, title, since."""
    alert = Alert(key="job:export:x", kind="job_failed", severity="critical", tenant="south",
                  product="health.vaccinations", title="export failed",
                  since=datetime(2026, 11, 20, 9, 30))
    assert alert.payload() == {"id": "job:export:x", "kind": "job_failed",
                               "severity": "critical", "tenant": "south",
                               "product": "health.vaccinations", "title": "export failed",
                               "since": "2026-11-20T09:30:00"}


# --- job filters, the evidence period and key -------------------------------------------------


def test_job_filters_quote_what_is_wrong():
    """Unknown kind, a since that is not a time, a limit out of range: InvalidInput."""
    with pytest.raises(InvalidInput, match="kind must be one of .* got 'cron'"):
        check_job_filters(status=None, kind="cron", since=None, limit=10)
    with pytest.raises(InvalidInput, match="since must be a time"):
        check_job_filters(status=None, kind=None, since="2026-01-01", limit=10)
    with pytest.raises(InvalidInput, match="limit must be a whole number from 1 to 1000"):
        check_job_filters(status=None, kind=None, since=None, limit=1001)


def test_month_span_covers_whole_months_both_included():
    """2026-01 .. 2026-06 is 1 Jan 00:00 up to (not including) 1 Jul 00:00; December wraps."""
    assert month_span(date(2026, 1, 1), date(2026, 6, 1)) == (
        datetime(2026, 1, 1), datetime(2026, 7, 1))
    assert month_span(date(2026, 12, 1), date(2026, 12, 1))[1] == datetime(2027, 1, 1)


@pytest.mark.parametrize("start, end, message", [
    (date(2026, 6, 1), date(2026, 1, 1), "starts after it ends: 2026-06 > 2026-01"),
    (date(2026, 1, 2), date(2026, 6, 1), "from month must be a month"),
    (date(2020, 1, 1), date(2026, 1, 1), "at most 60 months, got 73"),
])
def test_month_span_refuses_a_period_that_cannot_be_meant(start, end, message):
    with pytest.raises(InvalidInput, match=message):
        month_span(start, end)


def test_the_signing_key_is_the_secrets_own_and_needs_one():
    """The same secret gives the same key, another secret another; no secret, no key."""
    first = public_key("deployment-secret-0123456789")
    assert first == public_key("deployment-secret-0123456789") and len(first) == 64
    assert first != public_key("deployment-secret-0123456780")
    with pytest.raises(ConfigError, match="VEIL_SECRET"):
        public_key("")


def test_something_that_is_not_a_bundle_does_not_verify():
    """Random bytes, or a zip without a manifest, fail with a message saying what is wrong."""
    import io
    import zipfile

    with pytest.raises(EvidenceInvalid, match="not a readable zip archive"):
        verify_bundle(b"not a zip at all")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("releases.csv", "id\n")
    with pytest.raises(EvidenceInvalid, match="manifest.json: missing"):
        verify_bundle(buffer.getvalue())
