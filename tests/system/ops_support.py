"""Shared by the job-history, alert and evidence tests (issue 20): a pinned clock, rows of
job runs and exports, a `veil` runner against the test store and a real loopback webhook
receiver."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from data.bootstrap import demo_username
from data.models import Export, JobRun
from privacy import Principal

#: the wall clock of these tests (never the day they run)
NOW = datetime(2026, 11, 20, 12, 0)
TENANT = "kigali-east"
SECRET = "a-test-deployment-secret-0123456789"


def principal(role: str = "compliance_officer", tenant: str = TENANT) -> Principal:
    return Principal(subject=demo_username(role, tenant), display_name=role, role=role,
                     tenant=tenant, source="demo")


def job_run(store, *, status: str, started: datetime, tenant: str = TENANT,
            product: str = "health.vaccinations", rows: int | None = 120,
            seconds: float | None = 1.5, error: str | None = None,
            job: str = "materialize") -> str:
    with store.write.begin() as session:
        run = JobRun(job=job, tenant_id=tenant, product_id=product, status=status,
                     started_at=started,
                     finished_at=None if status == "running" else started + timedelta(
                         seconds=seconds or 0),
                     rows=rows, duration_s=seconds, error=error)
        session.add(run)
        session.flush()
        return str(run.id)


def export_run(store, *, status: str, created: datetime, tenant: str = TENANT,
               product: str = "health.vaccinations", rows: int | None = 96,
               error: str | None = None, started: datetime | None = None,
               finished: datetime | None = None, umbrella: bool = False,
               scope: tuple[str, ...] = (), query: dict | None = None) -> str:
    export_id = str(uuid.uuid4())
    with store.write.begin() as session:
        session.add(Export(
            id=export_id, tenant_id=tenant, requester=f"policy.maker@{tenant}.demo",
            role="policy_maker", product_id=product, query=query or {"metric": "doses"},
            scope=list(scope or (tenant,)), purpose="programme_monitoring",
            justification="quarterly review", format="csv", umbrella=umbrella, status=status,
            progress=1.0 if status in ("done", "failed") else 0.0, row_count=rows,
            digest="ab" * 32 if status == "done" else None, policy_version="cd" * 32,
            epsilon=0.5, masking={}, error=error, created_at=created, started_at=started,
            finished_at=finished))
    return export_id


def cli(monkeypatch, capsys, store, **env: str):
    """Run `veil ARGS` in-process against ``store`` with the clock at NOW; returns
    (status, stdout, stderr)."""
    from data import clock
    from dashboard.cli import main

    monkeypatch.setenv("VEIL_DATABASE_URL",
                       store.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.setenv("VEIL_SECRET", SECRET)
    monkeypatch.delenv("VEIL_ALERT_WEBHOOK_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(clock, "utcnow", lambda: NOW)

    def run(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


class Receiver:
    """A real HTTP server on 127.0.0.1 that records each POST's JSON body; ``status`` is what
    it answers (set it to 500 to make deliveries fail)."""

    def __init__(self):
        self.posts: list[dict] = []
        self.attempts = 0
        self.headers: list[dict] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                if receiver.status < 300:
                    receiver.posts.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/veil?token=t0ken"

    def ids(self) -> list[str]:
        return [post["alert"]["id"] for post in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
