"""Raw-event retention (issue 20): which months of a product still take events, and the run that
purges the raw events of months closed longer than the product's ``raw_retention_days``.

Owns the retention rule and its job. A product that declares ``raw_retention_days`` in the
catalog keeps its raw events that many days after their month ends (``ProductSpec.
first_open_month``): older months are **closed** — ingestion refuses their events ("closed
month", quarantined with the reason) — and a day after closing a retention run (``veil
retention``, from cron) deletes their raw events (``ProductSpec.purge_before``). Each purged
month is recorded in ``retention_purges`` in the same transaction as the delete, with the rows
deleted; from then on materialisation keeps that month's cube rows as they are (a full rebuild
neither deletes nor rebuilds them, a consent mark on it is dropped), so every released or
releasable number of it stays what it was. Consequence, stated in the README: a consent
withdrawn after its month was purged can no longer take that person's events out of that
month's aggregates (they are counts in cells of at least k, released only with noise).

Each run per (tenant, product) is one write transaction that takes the product's writers' lock
first on PostgreSQL (``data.locks``, the lock ingestion's chunks take) and writes its job run
(``job_runs``, job "retention") and an audit entry ("retention_purge": months, rows, days) with
the delete: all or nothing. A run with nothing to purge changes nothing and records nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from data.catalog import Catalog, ProductSpec
from data.clock import utcnow
from data.engine import Store
from data.errors import InvalidInput, StoreError
from data.locks import product_lock
from data.models import VERTICAL_EVENT_MODELS, AuditEntry, JobRun, RetentionPurge
from data.months import add_months

__all__ = ["Purge", "closed_before", "purge_expired"]

JOB = "retention"
ACTOR = "veil retention"


@dataclass(frozen=True)
class Purge:
    """What one retention run did (or, with ``dry_run``, would do) for a (tenant, product)."""

    tenant: str
    product: str
    retention_days: int
    purge_before: date
    months: tuple[date, ...]
    rows: int
    dry_run: bool = False


def _retained(catalog: Catalog, product: str) -> ProductSpec | None:
    spec = next((p for p in catalog.products if p.id == product), None)
    return spec if spec is not None and spec.raw_retention_days is not None else None


def closed_before(store: Store, catalog: Catalog, *, tenant: str, product: str,
                  now: datetime | None = None) -> date | None:
    """The first month whose events (tenant, product) still accepts, or None when the product
    keeps raw events for good: the later of its retention rule's first open month on ``now``'s
    day and the month after the last one purged (a purged month never reopens, even if the
    retention is lengthened later)."""
    spec = _retained(catalog, product)
    if spec is None:
        return None
    today = (now or utcnow()).date()
    first_open = spec.first_open_month(today)
    model = RetentionPurge
    try:
        with store.read() as session:
            last = session.scalar(select(func.max(model.month)).where(
                model.tenant_id == tenant, model.product_id == spec.id))
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot read the retention purges of {spec.id}: "
                         f"{type(exc).__name__}") from exc
    if last is not None:
        first_open = max(first_open, add_months(date.fromisoformat(str(last)[:10]), 1))
    return first_open


def purge_expired(store: Store, catalog: Catalog, *, tenant: str | None = None,
                  product: str | None = None, today: date | None = None,
                  dry_run: bool = False) -> list[Purge]:
    """Purge the raw events of every closed month past its grace day, for each (tenant,
    product) with a retention (or only ``tenant`` / ``product``); return what was purged."""
    products = [p for p in catalog.products if p.raw_retention_days is not None]
    if product is not None:
        products = [p for p in products if p.id == product]
        if not products:
            retained = [p.id for p in catalog.products if p.raw_retention_days is not None]
            raise InvalidInput(f"{product!r} declares no raw_retention_days in the catalog; "
                               f"products with a retention: {', '.join(retained) or 'none'}")
    tenants = [t.id for t in catalog.tenants]
    if tenant is not None:
        if tenant not in tenants:
            raise InvalidInput(f"unknown tenant {tenant!r}; known: {', '.join(tenants)}")
        tenants = [tenant]
    today = today or utcnow().date()
    return [_purge(store, t, p, today=today, dry_run=dry_run) for t in tenants for p in products]


def _purge(store: Store, tenant: str, spec: ProductSpec, *, today: date,
           dry_run: bool) -> Purge:
    model = VERTICAL_EVENT_MODELS[spec.vertical]
    before = spec.purge_before(today)
    started, clock = utcnow(), time.perf_counter()
    where = (model.tenant_id == tenant, model.product_id == spec.id, model.month < before)
    try:
        with (store.read() if dry_run else store.write.begin()) as session:
            if store.dialect == "postgresql" and not dry_run:
                session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"),
                                dict(zip("ab", product_lock(tenant, spec.id))))
            counts = [(date.fromisoformat(str(month)[:10]), int(n)) for month, n in
                      session.execute(select(model.month, func.count()).where(*where)
                                      .group_by(model.month).order_by(model.month))]
            rows = sum(n for _, n in counts)
            if counts and not dry_run:
                session.execute(delete(model).where(*where))
                now = utcnow()
                session.add_all(RetentionPurge(
                    tenant_id=tenant, product_id=spec.id, month=month, rows=n,
                    retention_days=spec.raw_retention_days, purged_at=now)
                    for month, n in counts)
                seconds = time.perf_counter() - clock
                session.add(JobRun(job=JOB, tenant_id=tenant, product_id=spec.id,
                                   status="succeeded", started_at=started, finished_at=now,
                                   rows=rows, duration_s=seconds))
                session.add(AuditEntry(
                    at=now, principal=ACTOR, tenant_id=tenant, role=None,
                    action="retention_purge", target=spec.id, outcome="allowed",
                    detail={"months": [m.isoformat()[:7] for m, _ in counts], "rows": rows,
                            "retention_days": spec.raw_retention_days}))
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot purge the raw events of {spec.id} for tenant {tenant}: "
                         f"{type(exc).__name__}. Nothing was deleted.") from exc
    return Purge(tenant=tenant, product=spec.id, retention_days=spec.raw_retention_days,
                 purge_before=before, months=tuple(m for m, _ in counts), rows=rows,
                 dry_run=dry_run)
