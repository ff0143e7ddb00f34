"""Alerts (issue 20) on real stores: which conditions need attention (SLO breaches, budgets at
80% of their cap, failed jobs, a spike of refusals), the compliance page's read of them, and
the webhook: a real loopback HTTP server receives each alert once; a failing receiver leaves
it unsent, audited, and it is retried on the next run."""

from __future__ import annotations

import socket
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import select, update

from data.models import (
    AlertDelivery,
    AuditEntry,
    BudgetAccount,
    CubeMonthly,
    CubePending,
    HealthEvent,
    JobRun,
    PeriodBudget,
    ProductVersion,
)
from ops_support import NOW, TENANT, Receiver, cli, export_run, job_run, principal
from privacy import AccessDenied, Gate
from privacy.compliance.alerts import current_alerts, send_alerts

PRODUCT = "health.vaccinations"   # freshness SLO 48 h


@pytest.fixture
def gate(store, catalog) -> Gate:
    return Gate(store, catalog, demo_accounts=True, clock=lambda: NOW)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _alerts(store, catalog, kind: str | None = None, *, now: datetime = NOW,
            tenant: str = TENANT):
    with store.read() as session:
        found = current_alerts(session, catalog, now=now, tenant=tenant)
    return [a for a in found if kind is None or a.kind == kind]


def _fresh_product(store, *, newest: datetime = NOW - timedelta(hours=2),
                   months=(date(2026, 10, 1),)) -> None:
    """Vaccinations materialised an hour ago, a recent event, cube rows for ``months``."""
    with store.write.begin() as session:
        session.merge(ProductVersion(tenant_id=TENANT, product_id=PRODUCT, data_version=1,
                                     refreshed_at=NOW - timedelta(hours=1), cube_rows=1))
        session.add(HealthEvent(
            event_id="e-1", tenant_id=TENANT, product_id=PRODUCT, event_type="vaccination",
            pseudonym="p" * 32, ts=newest, day=newest.date(), month=newest.date().replace(day=1),
            h3_cell="87GAS", district="KGL-GAS", age_bucket="0-5", gender="female",
            category="polio"))
        for month in months:
            session.add(CubeMonthly(
                tenant_id=TENANT, product_id=PRODUCT, metric="doses", period=month,
                state="KGL", district="KGL-GAS", h3_cell="87GAS", age_bucket="0-5",
                gender="female", category="polio", n_events=40, value_sum=0.0))


def _slo(store, catalog, product: str = PRODUCT):
    return [a for a in _alerts(store, catalog, "slo_breach") if a.product == product]


# --- which conditions are alerts -------------------------------------------------------------


def test_a_product_never_materialised_is_a_critical_slo_alert(store, catalog):
    """On a fresh store every product breaches: never materialised."""
    [alert] = _slo(store, catalog)
    assert alert.severity == "critical" and "never materialised" in alert.title
    assert alert.key == f"slo:{TENANT}:{PRODUCT}:never"


def test_a_product_within_its_slo_raises_nothing(store, catalog):
    """Fresh cube, recent event, no waiting changes, no gap: no alert for it."""
    _fresh_product(store)
    assert _slo(store, catalog) == []


def test_a_stalled_source_is_an_alert_keyed_by_its_newest_event(store, catalog):
    """The newest event older than the 48 h SLO is a breach that began at event + 48 h."""
    newest = NOW - timedelta(hours=60)
    _fresh_product(store, newest=newest)
    [alert] = _slo(store, catalog)
    assert "newest event is 60 h old (freshness SLO 48 h)" in alert.title
    assert alert.since == newest + timedelta(hours=48)
    assert alert.key == f"slo:{TENANT}:{PRODUCT}:stale:{newest:%Y%m%dT%H%M%S}"


def test_changes_waiting_longer_than_the_slo_are_an_alert(store, catalog):
    """Ingested changes not materialised within the SLO breach it."""
    _fresh_product(store)
    with store.write.begin() as session:
        session.add(CubePending(tenant_id=TENANT, product_id=PRODUCT, month=date(2026, 11, 1),
                                reason="ingest", marked_at=NOW - timedelta(hours=50)))
    [alert] = _slo(store, catalog)
    assert "changes have waited 50 h for materialisation" in alert.title


def test_a_month_without_data_is_a_completeness_alert(store, catalog):
    """A gap in the series window (September missing between August and October) breaches
    completeness; the key names the gap, so a new gap is a new alert."""
    _fresh_product(store, months=(date(2026, 8, 1), date(2026, 10, 1)))
    [alert] = _slo(store, catalog)
    assert alert.title.endswith("completeness: 1 of 3 months have no data (2026-09)")
    assert alert.key.startswith(f"completeness:{TENANT}:{PRODUCT}:")


def _period_budget(store, *, period: date, spent: float, cap: float = 4.0,
                   delta_spent: float = 0.0, delta_cap: float = 1e-6) -> None:
    with store.write.begin() as session:
        session.add(PeriodBudget(tenant_id=TENANT, product_id=PRODUCT, period=period, cap=cap,
                                 spent=spent, viewer_spent=0.0, delta_cap=delta_cap,
                                 delta_spent=delta_spent))


def test_a_period_budget_alerts_from_80_percent_and_is_critical_when_used_up(store, catalog):
    """79% of a month's lifetime ε: nothing; 80%: a warning; 100%: critical; δ counts too."""
    _period_budget(store, period=date(2026, 6, 1), spent=3.16)   # 79%
    _period_budget(store, period=date(2026, 7, 1), spent=3.2)    # 80%
    _period_budget(store, period=date(2026, 8, 1), spent=4.0)    # 100%
    _period_budget(store, period=date(2026, 9, 1), spent=0.5, delta_spent=9e-7)  # δ 90%
    alerts = {a.key: a for a in _alerts(store, catalog, "budget_near_cap")}
    assert set(alerts) == {f"budget:period:{TENANT}:{PRODUCT}:2026-07:80",
                           f"budget:period:{TENANT}:{PRODUCT}:2026-08:100",
                           f"budget:period:{TENANT}:{PRODUCT}:2026-09:80"}
    assert alerts[f"budget:period:{TENANT}:{PRODUCT}:2026-08:100"].severity == "critical"
    assert "ε 3.2 of 4 (80%)" in alerts[f"budget:period:{TENANT}:{PRODUCT}:2026-07:80"].title


def test_a_viewer_allowance_near_its_cap_in_the_current_window_is_an_alert(store, catalog):
    """A principal at 85% of this month's allowance is named; last month's full account is
    history, not an alert."""
    with store.write.begin() as session:
        for start, end, spent in ((date(2026, 11, 1), date(2026, 11, 30), 0.85),
                                  (date(2026, 10, 1), date(2026, 10, 31), 1.0)):
            session.add(BudgetAccount(tenant_id=TENANT, principal="researcher@x.demo",
                                      role="researcher", product_id=PRODUCT,
                                      window_start=start, window_end=end, cap=1.0, spent=spent,
                                      delta_cap=0.0, delta_spent=0.0))
    [alert] = _alerts(store, catalog, "budget_near_cap")
    assert alert.key == f"budget:viewer:{TENANT}:{PRODUCT}:2026-11:80:researcher@x.demo"
    assert "researcher@x.demo (researcher) has used 85%" in alert.title


def test_a_recent_failed_job_is_an_alert_until_a_later_run_succeeds(store, catalog):
    """A failed materialisation of the last 7 days alerts; one resolved by a later success,
    one older than 7 days and another tenant's do not; a failed export alerts."""
    failed = job_run(store, status="failed", started=NOW - timedelta(days=2),
                     error="StoreError: disk full")
    job_run(store, status="failed", started=NOW - timedelta(days=3),
            product="health.nutrition", error="x")
    job_run(store, status="succeeded", started=NOW - timedelta(days=1),
            product="health.nutrition")
    job_run(store, status="failed", started=NOW - timedelta(days=8),
            product="education.mastery", error="old")
    job_run(store, status="failed", started=NOW - timedelta(hours=1), tenant="south",
            error="elsewhere")
    export_id = export_run(store, status="failed", created=NOW - timedelta(hours=3),
                           started=NOW - timedelta(hours=3), finished=NOW - timedelta(hours=3),
                           error="the ε budget is exhausted", rows=None)
    alerts = _alerts(store, catalog, "job_failed")
    assert [a.key for a in alerts] == sorted([f"job:export:{export_id}",
                                              f"job:materialize:{failed}"])
    assert all(a.severity == "critical" for a in alerts)
    by_key = {a.key: a for a in alerts}
    assert by_key[f"job:materialize:{failed}"].title == (
        f"materialize of {PRODUCT} failed (run {failed}): StoreError: disk full")


def _refusals(store, *, count: int, at: datetime) -> None:
    with store.write.begin() as session:
        for i in range(count):
            session.add(AuditEntry(at=at + timedelta(seconds=i), tenant_id=TENANT,
                                   principal="donor@kigali-east.demo", role="donor",
                                   action="page_view", target="trends", outcome="refused",
                                   detail={}))


def test_a_spike_of_refusals_is_an_alert(store, catalog):
    """20 or more refusals in 24 hours, at least 3× the week's daily mean, alert once a day."""
    _refusals(store, count=19, at=NOW - timedelta(hours=3))
    assert _alerts(store, catalog, "refusal_spike") == []
    _refusals(store, count=1, at=NOW - timedelta(hours=2))
    [alert] = _alerts(store, catalog, "refusal_spike")
    assert alert.key == f"refusals:{TENANT}:2026-11-20"
    assert alert.title.startswith("20 refused requests in the last 24 hours")


def test_refusals_at_the_usual_rate_are_no_spike(store, catalog):
    """25 refusals a day when the week before averaged 10 a day is under 3× the mean."""
    _refusals(store, count=25, at=NOW - timedelta(hours=3))
    _refusals(store, count=70, at=NOW - timedelta(days=3))
    assert _alerts(store, catalog, "refusal_spike") == []


# --- the compliance page's read ---------------------------------------------------------------


def test_attention_is_the_tenants_own_with_its_webhook_state_and_audited(gate, store,
                                                                        receiver, catalog):
    """The officer's attention list holds their tenant's alerts, says which were sent, and the
    read is audited; another role is refused."""
    failed = job_run(store, status="failed", started=NOW - timedelta(hours=5), error="boom")
    job_run(store, status="failed", started=NOW - timedelta(hours=5), tenant="south",
            error="elsewhere")
    send_alerts(store, catalog, url=receiver.url, clock=lambda: NOW, tenant=TENANT)
    items = gate.compliance.attention(principal())
    assert {i.alert.tenant for i in items} == {TENANT}
    [job] = [i for i in items if i.alert.kind == "job_failed"]
    assert job.alert.key == f"job:materialize:{failed}"
    assert (job.delivered_at, job.attempts) == (NOW, 1)
    with pytest.raises(AccessDenied):
        gate.compliance.attention(principal("donor"))
    with store.read() as session:
        views = session.scalars(select(AuditEntry.outcome).where(
            AuditEntry.action == "compliance_view", AuditEntry.target == "attention")).all()
    assert sorted(views) == ["allowed", "refused"]


# --- the webhook -------------------------------------------------------------------------------


def test_each_alert_is_posted_once_to_a_loopback_receiver(store, catalog, receiver):
    """Every alert is received as JSON; a second run sends nothing; a new alert later is the
    only one sent then."""
    expected = [a.key for a in _alerts(store, catalog)]
    sent = send_alerts(store, catalog, url=receiver.url, clock=lambda: NOW, tenant=TENANT)
    assert [d.delivered for d in sent] == [True] * len(expected)
    assert receiver.ids() == expected
    post = receiver.posts[0]
    assert post["source"] == "veil" and post["alert"]["tenant"] == TENANT
    assert set(post["alert"]) == {"id", "kind", "severity", "tenant", "product", "title",
                                  "since"}
    assert receiver.headers[0]["Content-Type"] == "application/json"

    assert send_alerts(store, catalog, url=receiver.url, clock=lambda: NOW,
                       tenant=TENANT) == []
    assert len(receiver.posts) == len(expected)

    failed = job_run(store, status="failed", started=NOW - timedelta(minutes=5), error="boom")
    later = send_alerts(store, catalog, url=receiver.url, clock=lambda: NOW, tenant=TENANT)
    assert [d.alert.key for d in later] == [f"job:materialize:{failed}"]
    assert receiver.ids()[-1] == f"job:materialize:{failed}"
    with store.read() as session:
        rows = session.scalars(select(AlertDelivery)).all()
        audited = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "alert_webhook")).all()
    assert len(rows) == len(expected) + 1 and all(r.delivered_at == NOW for r in rows)
    assert len(audited) == len(rows) and {a.outcome for a in audited} == {"allowed"}
    # the receiver's path and query (a token) are never written to the audit log
    assert all("t0ken" not in str(a.detail) for a in audited)


def test_a_failing_receiver_leaves_alerts_unsent_audited_and_retried(store, catalog,
                                                                    receiver):
    """HTTP 500: nothing is delivered, each attempt is recorded and audited as an error; the
    next run sends them all."""
    receiver.status = 500
    failed = send_alerts(store, catalog, url=receiver.url, clock=lambda: NOW, tenant=TENANT)
    assert failed and not any(d.delivered for d in failed)
    assert receiver.attempts == len(failed) and receiver.posts == []
    assert all("answered HTTP 500" in d.error for d in failed)
    with store.read() as session:
        rows = session.scalars(select(AlertDelivery)).all()
        errors = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "alert_webhook", AuditEntry.outcome == "error")).all()
    assert {(r.delivered_at, r.attempts, r.claimed_until) for r in rows} == {(None, 1, None)}
    assert all("answered HTTP 500" in r.last_error for r in rows)
    assert len(errors) == len(failed)

    receiver.status = 200
    retried = send_alerts(store, catalog, url=receiver.url, clock=lambda: NOW, tenant=TENANT)
    assert [d.alert.key for d in retried] == [d.alert.key for d in failed]
    assert all(d.delivered for d in retried)
    assert receiver.ids() == [d.alert.key for d in failed]
    with store.read() as session:
        rows = session.scalars(select(AlertDelivery)).all()
    assert {(r.delivered_at, r.attempts, r.last_error) for r in rows} == {(NOW, 2, None)}


def test_an_unreachable_receiver_is_an_error_not_a_crash(store, catalog):
    """Nothing listening on the port: the attempt fails with 'cannot reach', recorded."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    failed = send_alerts(store, catalog, url=f"http://127.0.0.1:{port}/hook",
                         clock=lambda: NOW, tenant=TENANT)
    assert failed and all(not d.delivered and "cannot reach http://127.0.0.1:" in d.error
                          for d in failed)


def test_an_alert_claimed_by_another_sender_is_not_posted_twice(store, catalog, receiver):
    """While another sender's claim on an alert lasts, this sender skips it."""
    first, *rest = _alerts(store, catalog)
    receiver.status = 500
    send_alerts(store, catalog, url=receiver.url, clock=lambda: NOW, tenant=TENANT)
    with store.write.begin() as session:
        session.execute(update(AlertDelivery).where(AlertDelivery.alert_key == first.key)
                        .values(claimed_until=NOW + timedelta(seconds=30)))
    receiver.status = 204
    sent = send_alerts(store, catalog, url=receiver.url, clock=lambda: NOW, tenant=TENANT)
    assert first.key not in {d.alert.key for d in sent}
    assert receiver.ids() == [a.key for a in rest]


# --- `veil alerts` ------------------------------------------------------------------------------


def test_veil_alerts_lists_and_sends_to_the_configured_webhook(store, receiver, monkeypatch,
                                                              capsys):
    """`veil alerts` lists what needs attention; `--send` posts it to VEIL_ALERT_WEBHOOK_URL
    once; the list then says when each was sent."""
    veil = cli(monkeypatch, capsys, store, VEIL_ALERT_WEBHOOK_URL=receiver.url)
    status, out, err = veil("alerts", "--tenant", TENANT)
    assert status == 0, err
    assert "CRITICAL  slo_breach" in out and "never materialised" in out
    assert "[not sent]" in out
    status, out, err = veil("alerts", "--send", "--tenant", TENANT)
    assert status == 0, err
    count = len(receiver.posts)
    assert count >= 5 and out.splitlines()[-1] == f"{count} alert(s) sent, 0 failed"
    status, out, _ = veil("alerts", "--send", "--tenant", TENANT)
    assert status == 0 and "0 alert(s) sent, 0 failed (nothing new to send)" in out
    _, out, _ = veil("alerts", "--tenant", TENANT)
    assert "[sent 2026-11-20 12:00]" in out and "[not sent]" not in out


def test_veil_alerts_send_fails_when_the_receiver_does(store, receiver, monkeypatch, capsys):
    """A failing receiver makes `veil alerts --send` exit 2 and say the alerts are retried."""
    receiver.status = 503
    veil = cli(monkeypatch, capsys, store, VEIL_ALERT_WEBHOOK_URL=receiver.url)
    status, out, err = veil("alerts", "--send", "--tenant", TENANT)
    assert status == 2 and "NOT SENT" in out
    assert "retried by the next `veil alerts --send`" in err and "answered HTTP 503" in err


def test_veil_alerts_send_needs_a_webhook_and_refuses_a_bad_one(store, monkeypatch, capsys):
    """No URL: a clear error; a plain-http URL to another host: refused, the variable named."""
    veil = cli(monkeypatch, capsys, store)
    status, _, err = veil("alerts", "--send")
    assert status == 2 and "VEIL_ALERT_WEBHOOK_URL is not set" in err
    monkeypatch.setenv("VEIL_ALERT_WEBHOOK_URL", "http://alerts.example.org/hook")
    status, _, err = veil("alerts", "--send")
    assert status == 2 and "VEIL_ALERT_WEBHOOK_URL may use plain http only to the loopback" in err


def test_veil_materialize_sends_a_failed_run_to_the_webhook(store, receiver, monkeypatch,
                                                           capsys):
    """With a webhook set, `veil materialize` posts new alerts after its run — a failed run
    among them — and still exits with the run's own error."""
    import data.materialize
    from sqlalchemy.exc import OperationalError

    def broken(*args, **kwargs):
        raise OperationalError("INSERT INTO cube_monthly …", {}, Exception("disk I/O error"))

    veil = cli(monkeypatch, capsys, store, VEIL_ALERT_WEBHOOK_URL=receiver.url)
    monkeypatch.setattr(data.materialize, "_utcnow", lambda: NOW - timedelta(minutes=5))
    monkeypatch.setattr(data.materialize, "_rebuild_cube", broken)
    status, _, err = veil("materialize", "--tenant", TENANT, "--product", PRODUCT)
    assert status == 2 and "failed" in err
    with store.read() as session:
        [run_id] = session.scalars(select(JobRun.id).where(JobRun.status == "failed")).all()
    assert f"job:materialize:{run_id}" in receiver.ids()
    assert f"alerts: {len(receiver.posts)} sent to the webhook" in err


def test_the_alert_table_migrates_down_and_up(store):
    """Migration 0015 adds alert_deliveries and its downgrade removes it."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from data.migrate import _config, current_revision, downgrade, head_revision, upgrade

    parent = ScriptDirectory.from_config(_config()).get_revision("0015").down_revision
    downgrade(store, parent)
    assert "alert_deliveries" not in inspect(store.engine).get_table_names()
    upgrade(store)
    assert current_revision(store) == head_revision()
    assert "alert_deliveries" in inspect(store.engine).get_table_names()


def test_veil_export_worker_once_sends_a_failed_export_to_the_webhook(store, receiver,
                                                                     monkeypatch, capsys,
                                                                     tmp_path):
    """`veil export-worker --once` posts new alerts after it ran: its failed export among them."""
    from data.models import Export

    # a query the gate cannot run: the job fails
    export_id = export_run(store, status="queued", created=NOW - timedelta(minutes=1),
                           rows=None, query={"metric": "no-such-metric"})
    veil = cli(monkeypatch, capsys, store, VEIL_ALERT_WEBHOOK_URL=receiver.url,
               VEIL_VAR_DIR=str(tmp_path / "var"))
    status, out, err = veil("export-worker", "--once")
    assert status == 0, err
    assert "export(s) processed" in out
    with store.read() as session:
        assert session.get(Export, export_id).status == "failed"
    assert f"job:export:{export_id}" in receiver.ids()
    assert "sent to the webhook" in err
