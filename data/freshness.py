"""Data freshness per tenant and product (SPEC B3, D7), measured against the catalog's SLO.

Owns answering "how current is this product's data?" for the compliance page and operators:
the last successful refresh of its cube, the newest event in its record store, changes still
waiting for materialisation, the last job's outcome, and whether the product's
``freshness_slo_hours`` is breached and why. Read-only; it never counts or shows a private
value (an event time and a month count are operational metadata, not released data).

A product breaches its SLO when it has never been materialised, when ingested or consent
changes have waited longer than the SLO for a rebuild, or when its newest event is older than
the SLO (the source has stalled).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from data import clock
from data.catalog import Catalog
from data.models import VERTICAL_EVENT_MODELS, CubePending, JobRun, ProductVersion

__all__ = ["Freshness", "freshness", "newest_events"]


@dataclass(frozen=True)
class Freshness:
    """Freshness of one (tenant, product). Times are naive UTC."""

    tenant: str
    product: str
    title: str
    slo_hours: int
    last_refresh: datetime | None
    data_version: int | None
    newest_event: datetime | None
    pending_months: int
    oldest_pending: datetime | None
    last_job_status: str | None
    last_job_error: str | None
    checked_at: datetime
    breaches: tuple[str, ...]

    @property
    def breached(self) -> bool:
        return bool(self.breaches)

    @property
    def refresh_age_hours(self) -> float | None:
        return _hours(self.checked_at, self.last_refresh)

    @property
    def data_age_hours(self) -> float | None:
        return _hours(self.checked_at, self.newest_event)


def _hours(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else (now - then).total_seconds() / 3600


def freshness(session: Session, catalog: Catalog, *, tenant: str | None = None,
              product: str | None = None, now: datetime | None = None) -> list[Freshness]:
    """Freshness of every metric product (or the one given) for every tenant (or the one)."""
    if now is None:
        checked = clock.utcnow()
    elif now.tzinfo is not None:
        checked = now.astimezone(UTC).replace(tzinfo=None)
    else:
        checked = now  # naive times are UTC throughout the store
    tenants = [t.id for t in catalog.tenants] if tenant is None else [catalog.tenant(tenant).id]
    product_id = None if product is None else catalog.product(product).id
    out = []
    for tenant_id in tenants:
        for product in catalog.products:
            if product.kind != "metric_set" or product_id not in (None, product.id):
                continue
            version = session.get(ProductVersion, (tenant_id, product.id))
            newest = _newest_event(session, tenant_id, product.id, product.vertical)
            pending, oldest = session.execute(
                select(func.count(func.distinct(CubePending.month)),
                       func.min(CubePending.marked_at))
                .where(CubePending.tenant_id == tenant_id,
                       CubePending.product_id == product.id)).one()
            job = session.execute(
                select(JobRun.status, JobRun.error)
                .where(JobRun.job == "materialize", JobRun.tenant_id == tenant_id,
                       JobRun.product_id == product.id)
                .order_by(JobRun.id.desc()).limit(1)).first()
            slo = timedelta(hours=product.freshness_slo_hours)
            breaches = []
            if version is None:
                breaches.append("never materialised")
            if oldest is not None and checked - oldest > slo:
                breaches.append(f"changes have waited {_span(checked - oldest)} for "
                                f"materialisation (SLO {product.freshness_slo_hours} h)")
            if newest is not None and checked - newest > slo:
                breaches.append(f"newest event is {_span(checked - newest)} old "
                                f"(SLO {product.freshness_slo_hours} h)")
            if newest is None and version is not None:
                breaches.append("no events stored")
            out.append(Freshness(
                tenant=tenant_id, product=product.id, title=product.title,
                slo_hours=product.freshness_slo_hours,
                last_refresh=version.refreshed_at if version else None,
                data_version=version.data_version if version else None,
                newest_event=newest, pending_months=int(pending or 0), oldest_pending=oldest,
                last_job_status=job.status if job else None,
                last_job_error=job.error if job else None,
                checked_at=checked, breaches=tuple(breaches)))
    return out


def newest_events(session: Session, catalog: Catalog, *, tenant: str) -> dict[str, datetime]:
    """The newest event time of each metric product of ``tenant`` that has any."""
    out = {}
    for product in catalog.products:
        if product.kind == "metric_set":
            newest = _newest_event(session, tenant, product.id, product.vertical)
            if newest is not None:
                out[product.id] = newest
    return out


def _newest_event(session: Session, tenant: str, product: str, vertical: str) -> datetime | None:
    """Newest event time in two indexed steps: the latest month, then the latest time in it."""
    model = VERTICAL_EVENT_MODELS[vertical]
    month = session.scalar(select(func.max(model.month)).where(
        model.tenant_id == tenant, model.product_id == product))
    if month is None:
        return None
    return session.scalar(select(func.max(model.ts)).where(
        model.tenant_id == tenant, model.product_id == product, model.month == month))


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 72 else f"{hours / 24:.0f} days"
