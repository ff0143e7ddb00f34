"""Raw-event retention (issue 20) on both stores: closed months refuse their events, a retention
run purges their raw events a day after closing, records and audits it, and the aggregates of
purged months stay exactly as they were through full and incremental rebuilds."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from data.catalog import Catalog
from data.errors import InvalidInput
from data.ingest import ingest_rows
from data.materialize import materialize
from data.models import (AuditEntry, CubeMonthly, CubePending, JobRun, ProductVersion,
                         QuarantinedRow, RetentionPurge)
from data.retention import closed_before, purge_expired
from ingest_support import PRODUCT, SECRET, TENANT, event, grant, stored_events

#: the day the events below were ingested: March–June 2025 all open under 120 days
INGESTED = datetime(2025, 6, 25, 12, 0, tzinfo=UTC)
MONTHS = ("2025-03-10T09:00:00Z", "2025-03-20T09:00:00Z", "2025-04-15T09:00:00Z",
          "2025-06-02T09:00:00Z")


def with_retention(catalog: Catalog, days: int | None) -> Catalog:
    products = tuple(dataclasses.replace(p, raw_retention_days=days) if p.id == PRODUCT else p
                     for p in catalog.products)
    return dataclasses.replace(catalog, products=products,
                               _product_index={p.id: p for p in products})


@pytest.fixture
def kept(store, catalog) -> Catalog:
    """Four events (two in March, one in April, one in June 2025) under a 120-day retention,
    ingested on 25 June 2025 and materialised."""
    retained = with_retention(catalog, 120)
    grant(store, retained, *(f"person-{i}" for i in range(4)))
    report = ingest_rows(store, retained, [event(i, subject=f"person-{i}", timestamp=at)
                                           for i, at in enumerate(MONTHS)],
                         tenant=TENANT, product=PRODUCT, secret=SECRET, now=INGESTED)
    assert report.accepted == 4
    materialize(store, retained, tenant=TENANT, product=PRODUCT)
    return retained


def run_purge(store, catalog: Catalog, **options):
    return purge_expired(store, catalog, tenant=TENANT, product=PRODUCT, **options)


def cube(store) -> Counter:
    with store.read() as session:
        return Counter((r.metric, r.period, r.h3_cell, r.category, r.n_events)
                       for r in session.scalars(select(CubeMonthly).where(
                           CubeMonthly.tenant_id == TENANT, CubeMonthly.product_id == PRODUCT)))


def test_a_run_purges_the_months_closed_a_day_before_and_keeps_their_aggregates(store, kept):
    """On 20 Aug 2025 with 120 days, months before April are purged: March's two raw events go,
    its cube rows stay; the purge, its job run and its audit entry are recorded together."""
    before = cube(store)
    [purge] = run_purge(store, kept, today=date(2025, 8, 20))
    assert (purge.months, purge.rows, purge.purge_before) == (
        (date(2025, 3, 1),), 2, date(2025, 4, 1))
    assert sorted(e.month.isoformat() for e in stored_events(store)) == [
        "2025-04-01", "2025-06-01"]
    with store.read() as session:
        [mark] = session.scalars(select(RetentionPurge)).all()
        [run] = session.scalars(select(JobRun).where(JobRun.job == "retention")).all()
        [entry] = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "retention_purge")).all()
    assert (mark.month, mark.rows, mark.retention_days) == (date(2025, 3, 1), 2, 120)
    assert (run.status, run.rows, run.product_id) == ("succeeded", 2, PRODUCT)
    assert entry.detail == {"months": ["2025-03"], "rows": 2, "retention_days": 120}
    assert cube(store) == before
    materialize(store, kept, tenant=TENANT, product=PRODUCT)  # full: March is kept as it was
    assert cube(store) == before
    with store.read() as session:
        assert session.get(ProductVersion, (TENANT, PRODUCT)).cube_rows == sum(before.values())
    assert sum(n for (_, period, *_, n) in before.elements() if period == date(2025, 3, 1)) == 2


def test_a_closed_month_waits_a_grace_day_before_its_purge(store, kept):
    """On 29 Aug 2025 April is closed (ingestion refuses it) but purged only from 30 Aug."""
    assert closed_before(store, kept, tenant=TENANT, product=PRODUCT,
                         now=datetime(2025, 8, 29, tzinfo=UTC)) == date(2025, 5, 1)
    [first] = run_purge(store, kept, today=date(2025, 8, 29))
    assert first.months == (date(2025, 3, 1),)
    [second] = run_purge(store, kept, today=date(2025, 8, 30))
    assert (second.months, second.rows) == ((date(2025, 4, 1),), 1)


def test_events_of_a_closed_month_are_quarantined_with_the_reason(store, kept):
    """After the purge a late March event is refused, even if the retention is lengthened:
    a purged month never reopens."""
    run_purge(store, kept, today=date(2025, 8, 20))
    longer = with_retention(kept, 3650)
    grant(store, longer, "late")
    report = ingest_rows(store, longer, [event("late", subject="late",
                                               timestamp="2025-03-25T09:00:00Z"),
                                         event("fresh", subject="late",
                                               timestamp="2025-08-01T09:00:00Z")],
                         tenant=TENANT, product=PRODUCT, secret=SECRET,
                         now=datetime(2025, 8, 20, 12, tzinfo=UTC), with_results=True)
    assert (report.accepted, report.rejected) == (1, 1)
    with store.read() as session:
        [row] = session.scalars(select(QuarantinedRow)).all()
    assert row.reason.startswith("closed month: ") and "before April 2025" in row.reason


def test_a_consent_mark_on_a_purged_month_does_not_empty_it(store, kept):
    """An incremental rebuild never rebuilds a purged month (its events are gone)."""
    before = cube(store)
    run_purge(store, kept, today=date(2025, 8, 20))
    with store.write.begin() as session:
        session.add(CubePending(tenant_id=TENANT, product_id=PRODUCT, month=date(2025, 3, 1),
                                reason="consent", marked_at=datetime(2025, 8, 20)))
    [result] = materialize(store, kept, tenant=TENANT, product=PRODUCT, incremental=True)
    assert result.months == ()
    assert cube(store) == before


def test_a_dry_run_says_what_it_would_purge_and_changes_nothing(store, kept):
    """--dry-run: the months and rows, nothing deleted or recorded."""
    [purge] = purge_expired(store, kept, tenant=TENANT, product=PRODUCT,
                            today=date(2025, 8, 20), dry_run=True)
    assert (purge.months, purge.rows, purge.dry_run) == ((date(2025, 3, 1),), 2, True)
    assert len(stored_events(store)) == 4
    with store.read() as session:
        assert session.scalars(select(RetentionPurge)).all() == []


def test_nothing_to_purge_records_nothing(store, kept):
    """A run with no closed month past its grace day leaves no job run or audit entry."""
    [purge] = run_purge(store, kept, today=date(2025, 7, 1))
    assert (purge.months, purge.rows) == ((), 0)
    with store.read() as session:
        assert session.scalars(select(JobRun).where(JobRun.job == "retention")).all() == []


def test_a_product_without_retention_is_named_in_the_refusal(store, catalog):
    """Asking to purge a product that keeps raw events for good is bad input."""
    with pytest.raises(InvalidInput, match="declares no raw_retention_days"):
        purge_expired(store, catalog, product=PRODUCT)
