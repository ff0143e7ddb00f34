"""Alerts (issue 20): what needs a person's attention, and telling a webhook about it once.

Owns deciding which operational conditions are alerts and delivering new ones. An alert is

* ``slo_breach`` — a product's freshness SLO is breached (``data.freshness``: never built,
  changes waiting longer than the SLO, newest event older than the SLO, no events) or its
  completeness is (a month without data in the series window: ``month_coverage``);
* ``budget_near_cap`` — a lifetime period budget (tenant × product × data month) or a viewer
  allowance in the current window has used at least ``NEAR_CAP`` (80%) of its ε or δ cap;
* ``job_failed`` — a materialisation run failed in the last ``FAILED_JOB_DAYS`` days and no
  later run of the same (tenant, product) succeeded, or an export run failed in that time;
* ``refusal_spike`` — the tenant's refused requests in the last 24 hours are at least
  ``SPIKE_MIN`` and at least ``SPIKE_FACTOR`` times the daily mean of the 7 days before.

Each alert has a stable ``key`` naming its *occurrence* (e.g. ``job:materialize:42``, or a
stalled source keyed by its newest event time), so the same condition is one alert for as long
as it lasts and a recurrence later is a new one.

Delivery (``send_alerts``) posts each alert not yet delivered to ``VEIL_ALERT_WEBHOOK_URL`` as
one JSON document and records it in ``alert_deliveries``: a delivered alert is never posted
again; a failed post (unreachable, timeout, non-2xx, a redirect) leaves it undelivered with the
error, to be retried on the next run. Every attempt is audited (``alert_webhook``). A sender
claims an alert with a short lease before posting, so two senders do not both post it; a sender
that dies after the receiver took the post but before recording it posts it again later, so
receivers should treat the alert ``id`` as idempotency key.

Reads only operational metadata (times, counts, ε shares, job errors); never a released value.
No Streamlit here.

Part of the compliance service (``privacy.compliance.alerts``): reached by operators through
``veil alerts`` and by compliance officers through ``gate.compliance.attention``. Imported when
first used (it loads ``urllib.request``).
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from data.catalog import Catalog
from data.engine import Store
from data.errors import VeilError
from data.freshness import freshness
from data.models import AlertDelivery, AuditEntry, BudgetAccount, JobRun, PeriodBudget

from privacy.compliance._quality import completeness_window, month_coverage
from privacy.compliance.jobs import job_history
from privacy.core import audit, audit_best_effort, window_of

__all__ = ["Alert", "AlertState", "Delivery", "WebhookError", "alert_states", "current_alerts",
           "post_json", "send_alerts"]

NEAR_CAP = 0.8
FAILED_JOB_DAYS = 7
SPIKE_MIN = 20
SPIKE_FACTOR = 3.0
#: how long a sender's claim on an alert lasts (longer than a post may take)
CLAIM_SECONDS = 60
POST_TIMEOUT_SECONDS = 5.0
_SEVERITY_ORDER = {"critical": 0, "warning": 1}
_MAX_ERROR = 500


@dataclass(frozen=True)
class Alert:
    key: str                   # the occurrence: delivered at most once
    kind: str                  # slo_breach | budget_near_cap | job_failed | refusal_spike
    severity: str              # critical | warning
    tenant: str | None
    product: str | None
    title: str                 # one line a person can act on
    since: datetime | None     # when the condition began, where known (naive UTC)

    def payload(self) -> dict:
        return {"id": self.key, "kind": self.kind, "severity": self.severity,
                "tenant": self.tenant, "product": self.product, "title": self.title,
                "since": self.since.isoformat() if self.since else None}


@dataclass(frozen=True)
class AlertState:
    """An alert with what the webhook was told about it."""

    alert: Alert
    delivered_at: datetime | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class Delivery:
    """One attempt of ``send_alerts``: delivered, or failed with the reason."""

    alert: Alert
    delivered: bool
    error: str | None = None


class WebhookError(VeilError):
    """The webhook did not take an alert (unreachable, timed out, non-2xx, redirected)."""


def _key(*parts) -> str:
    text = ":".join(str(p) for p in parts)
    if len(text) <= 200:
        return text
    return f"{text[:120]}…{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _share(spent: float, cap: float) -> float:
    return spent / cap if cap and cap > 0 else 0.0


# --- which alerts hold now --------------------------------------------------------------------


def current_alerts(session: Session, catalog: Catalog, *, now: datetime,
                   tenant: str | None = None) -> list[Alert]:
    """Every alert that holds at ``now`` (naive UTC) for ``tenant``, or every tenant."""
    tenants = [t.id for t in catalog.tenants] if tenant is None else [catalog.tenant(tenant).id]
    alerts: list[Alert] = []
    for tenant_id in tenants:
        alerts += _slo_alerts(session, catalog, tenant=tenant_id, now=now)
        alerts += _budget_alerts(session, tenant=tenant_id, today=now.date())
        alerts += _job_alerts(session, tenant=tenant_id, now=now)
        alerts += _refusal_alerts(session, tenant=tenant_id, now=now)
    alerts.sort(key=lambda a: (_SEVERITY_ORDER.get(a.severity, 9), a.kind, a.tenant or "",
                               a.product or "", a.key))
    return alerts


def _slo_alerts(session: Session, catalog: Catalog, *, tenant: str,
                now: datetime) -> list[Alert]:
    out = []
    first, last = completeness_window(now.date(),
                                      max_series_months=catalog.policy.max_series_months)
    for fresh in freshness(session, catalog, tenant=tenant, now=now):
        slo = timedelta(hours=fresh.slo_hours)
        product, title = fresh.product, fresh.title

        def alert(occurrence: str, text: str, since: datetime | None,
                  severity: str = "warning") -> Alert:
            return Alert(key=_key("slo", tenant, product, occurrence), kind="slo_breach",
                         severity=severity, tenant=tenant, product=product,
                         title=f"{title}: {text}", since=since)

        if fresh.last_refresh is None:
            out.append(alert("never", "never materialised (freshness SLO "
                                      f"{fresh.slo_hours} h)", None, "critical"))
        if fresh.oldest_pending is not None and now - fresh.oldest_pending > slo:
            out.append(alert(f"waiting:{fresh.oldest_pending:%Y%m%dT%H%M%S}",
                             f"changes have waited {_span(now - fresh.oldest_pending)} for "
                             f"materialisation (freshness SLO {fresh.slo_hours} h)",
                             fresh.oldest_pending + slo))
        if fresh.newest_event is not None and now - fresh.newest_event > slo:
            out.append(alert(f"stale:{fresh.newest_event:%Y%m%dT%H%M%S}",
                             f"newest event is {_span(now - fresh.newest_event)} old "
                             f"(freshness SLO {fresh.slo_hours} h)", fresh.newest_event + slo))
        if fresh.newest_event is None and fresh.last_refresh is not None:
            out.append(alert("no-events", "no events stored", None))
        coverage = month_coverage(session, tenant=tenant, product=product, first=first,
                                  last=last)
        if coverage.breach and coverage.has_data:
            gaps = hashlib.sha256(",".join(coverage.missing).encode()).hexdigest()[:16]
            out.append(Alert(key=_key("completeness", tenant, product, gaps),
                             kind="slo_breach", severity="warning", tenant=tenant,
                             product=product, title=f"{title}: completeness: {coverage.breach}",
                             since=None))
    return out


def _budget_alerts(session: Session, *, tenant: str, today: date) -> list[Alert]:
    out = []
    for b in session.execute(
            select(PeriodBudget.product_id, PeriodBudget.period, PeriodBudget.spent,
                   PeriodBudget.cap, PeriodBudget.delta_spent, PeriodBudget.delta_cap)
            .where(PeriodBudget.tenant_id == tenant)
            .order_by(PeriodBudget.product_id, PeriodBudget.period)):
        used = max(_share(b.spent, b.cap), _share(b.delta_spent, b.delta_cap))
        if used >= NEAR_CAP:
            full = used >= 1.0 - 1e-9
            out.append(Alert(
                key=_key("budget", "period", tenant, b.product_id, f"{b.period:%Y-%m}",
                         100 if full else 80),
                kind="budget_near_cap", severity="critical" if full else "warning",
                tenant=tenant, product=b.product_id,
                title=(f"lifetime budget of {b.product_id} data for {b.period:%b %Y} "
                       f"{'is used up' if full else 'is nearly used'}: ε {b.spent:.4g} of "
                       f"{b.cap:.4g} ({used:.0%}); nothing more can be released about that "
                       f"month once it is spent"),
                since=None))
    window_start, _ = window_of(today)
    for a in session.execute(
            select(BudgetAccount.principal, BudgetAccount.role, BudgetAccount.product_id,
                   BudgetAccount.spent, BudgetAccount.cap, BudgetAccount.delta_spent,
                   BudgetAccount.delta_cap)
            .where(BudgetAccount.tenant_id == tenant,
                   BudgetAccount.window_start == window_start)
            .order_by(BudgetAccount.product_id, BudgetAccount.principal)):
        used = max(_share(a.spent, a.cap), _share(a.delta_spent or 0.0, a.delta_cap or 0.0))
        if used >= NEAR_CAP:
            full = used >= 1.0 - 1e-9
            out.append(Alert(
                key=_key("budget", "viewer", tenant, a.product_id, f"{window_start:%Y-%m}",
                         100 if full else 80, a.principal),
                kind="budget_near_cap", severity="warning", tenant=tenant,
                product=a.product_id,
                title=(f"{a.principal} ({a.role}) has used {used:.0%} of their "
                       f"{a.product_id} allowance for {window_start:%b %Y}: ε {a.spent:.4g} "
                       f"of {a.cap:.4g}"),
                since=None))
    return out


def _job_alerts(session: Session, *, tenant: str, now: datetime) -> list[Alert]:
    out = []
    since = now - timedelta(days=FAILED_JOB_DAYS)
    for run in job_history(session, tenant=tenant, status="failed", since=since, limit=200):
        if run.kind != "export":
            later = session.scalar(select(func.count()).select_from(JobRun).where(
                JobRun.job == run.kind, JobRun.tenant_id == run.tenant,
                JobRun.product_id == run.product, JobRun.status == "succeeded",
                JobRun.started_at > run.started_at))
            if later:
                continue  # a later run of the same job succeeded: resolved
        what = f"{run.kind} of {run.product}" if run.product else run.kind
        error = _cut(run.error or "no reason recorded", 200)
        out.append(Alert(key=_key("job", run.kind, run.id), kind="job_failed",
                         severity="critical", tenant=tenant, product=run.product,
                         title=f"{what} failed (run {run.id[:12]}): {error}",
                         since=run.finished_at or run.started_at))
    return out


def _refusal_alerts(session: Session, *, tenant: str, now: datetime) -> list[Alert]:
    def refused(start: datetime, end: datetime) -> int:
        return int(session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.tenant_id == tenant, AuditEntry.outcome == "refused",
            AuditEntry.at >= start, AuditEntry.at < end)) or 0)

    day_ago = now - timedelta(hours=24)
    recent = refused(day_ago, now + timedelta(seconds=1))
    if recent < SPIKE_MIN:
        return []
    baseline = refused(day_ago - timedelta(days=7), day_ago) / 7
    if recent < SPIKE_FACTOR * baseline:
        return []
    return [Alert(key=_key("refusals", tenant, f"{now:%Y-%m-%d}"), kind="refusal_spike",
                  severity="warning", tenant=tenant, product=None,
                  title=(f"{recent} refused requests in the last 24 hours (daily mean of the "
                         f"7 days before: {baseline:.1f}); see the audit log, outcome "
                         f"'refused'"),
                  since=day_ago)]


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 72 else f"{hours / 24:.0f} days"


# --- delivery state ---------------------------------------------------------------------------


def alert_states(session: Session, alerts: list[Alert]) -> tuple[AlertState, ...]:
    """The alerts with their webhook delivery state (none recorded: never attempted)."""
    keys = [a.key for a in alerts]
    rows = {}
    for chunk in (keys[i:i + 500] for i in range(0, len(keys), 500)):
        rows.update({r.alert_key: r for r in session.execute(
            select(AlertDelivery.alert_key, AlertDelivery.delivered_at, AlertDelivery.attempts,
                   AlertDelivery.last_error).where(AlertDelivery.alert_key.in_(chunk)))})
    return tuple(AlertState(alert=a, delivered_at=rows[a.key].delivered_at if a.key in rows
                            else None,
                            attempts=int(rows[a.key].attempts or 0) if a.key in rows else 0,
                            last_error=rows[a.key].last_error if a.key in rows else None)
                 for a in alerts)


# --- delivery ---------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: it could lead the alert off https or off this machine."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _where(url: str) -> str:
    """The receiver without its path and query (they may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def post_json(url: str, document: dict, *, timeout: float = POST_TIMEOUT_SECONDS) -> int:
    """POST ``document`` as JSON to ``url``; the HTTP status, or WebhookError."""
    body = json.dumps(document, sort_keys=True, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "veil-alerts/1"})
    # No proxy: the receiver is the configured host itself, never a hop chosen by environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response open
        raise WebhookError(f"{_where(url)} answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise WebhookError(f"cannot reach {_where(url)}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed response
        raise WebhookError(f"cannot post to {_where(url)}: {type(exc).__name__}: {exc}") \
            from None
    if not 200 <= status < 300:
        raise WebhookError(f"{_where(url)} answered HTTP {status}")
    return status


def send_alerts(store: Store, catalog: Catalog, *, url: str, clock: Callable[[], datetime],
                tenant: str | None = None, sender: str = "veil alerts",
                post: Callable[[str, dict], int] = post_json) -> list[Delivery]:
    """Post every alert that holds now and was not delivered yet; record each attempt."""
    now = clock()
    with store.read() as session:
        alerts = current_alerts(session, catalog, now=now, tenant=tenant)
    out = []
    for alert in alerts:
        if not _claim(store, alert, now=clock()):
            continue  # delivered before, or another sender holds it
        document = {"source": "veil", "alert": alert.payload(),
                    "sent_at": clock().isoformat()}
        try:
            status = post(url, document)
        except WebhookError as exc:
            error = _cut(str(exc), _MAX_ERROR)
            _settle(store, alert, delivered_at=None, error=error)
            audit_best_effort(store, principal=sender, tenant=alert.tenant, role=None,
                              action="alert_webhook", target=alert.key, outcome="error",
                              detail={"receiver": _where(url), "kind": alert.kind,
                                      "error": error})
            out.append(Delivery(alert=alert, delivered=False, error=error))
            continue
        _settle(store, alert, delivered_at=clock(), error=None)
        audit(store, principal=sender, tenant=alert.tenant, role=None, action="alert_webhook",
              target=alert.key, outcome="allowed",
              detail={"receiver": _where(url), "kind": alert.kind, "status": status})
        out.append(Delivery(alert=alert, delivered=True))
    return out


def _claim(store: Store, alert: Alert, *, now: datetime) -> bool:
    """Record the alert if new, and take it for one attempt unless delivered or held."""
    try:
        with store.write.begin() as session:
            exists = session.scalar(select(AlertDelivery.id)
                                    .where(AlertDelivery.alert_key == alert.key))
            if exists is None:
                session.add(AlertDelivery(alert_key=alert.key, tenant_id=alert.tenant,
                                          kind=alert.kind, payload=alert.payload(),
                                          first_seen_at=now, attempts=0))
    except IntegrityError:
        pass  # another sender recorded it first: the claim below decides
    with store.write.begin() as session:
        taken = session.execute(
            update(AlertDelivery)
            .where(AlertDelivery.alert_key == alert.key, AlertDelivery.delivered_at.is_(None),
                   or_(AlertDelivery.claimed_until.is_(None),
                       AlertDelivery.claimed_until < now))
            .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS),
                    attempts=AlertDelivery.attempts + 1, last_attempt_at=now)
            .execution_options(synchronize_session=False)).rowcount
    return taken == 1


def _settle(store: Store, alert: Alert, *, delivered_at: datetime | None,
            error: str | None) -> None:
    with store.write.begin() as session:
        session.execute(
            update(AlertDelivery).where(AlertDelivery.alert_key == alert.key)
            .values(claimed_until=None, delivered_at=delivered_at, last_error=error)
            .execution_options(synchronize_session=False))
