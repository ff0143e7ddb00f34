"""Incremental materialisation after ingestion (SPEC B3) and data freshness per product."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import event as sql_event
from sqlalchemy import func, select, update

from data.bootstrap import init_store
from data.engine import open_store
from data.freshness import freshness
from data.ingest import ingest_rows
from data.materialize import materialize
from data.models import (
    VERTICAL_EVENT_MODELS,
    CubeMonthly,
    CubePending,
    JobRun,
    ProductVersion,
    SubjectConsent,
)
from data.pseudonym import pseudonym
from ingest_support import PRODUCT, SECRET, TENANT, event, grant


def ingest(store, catalog, rows):
    return ingest_rows(store, catalog, rows, tenant=TENANT, product=PRODUCT, secret=SECRET)


def cube(store) -> Counter:
    with store.read() as session:
        return Counter(
            (r.metric, r.period, r.h3_cell, r.age_bucket, r.gender, r.category, r.n_events)
            for r in session.scalars(select(CubeMonthly).where(
                CubeMonthly.tenant_id == TENANT, CubeMonthly.product_id == PRODUCT)))


def version(store) -> ProductVersion:
    with store.read() as session:
        return session.get(ProductVersion, (TENANT, PRODUCT))


def test_incremental_rebuilds_only_the_months_ingested_since_the_last_run(store, catalog):
    """New events in April rebuild April only, and the cube equals a full rebuild."""
    grant(store, catalog, "person-1", "person-2")
    ingest(store, catalog, [event(1), event(2, timestamp="2025-04-01T09:00:00Z")])
    [first] = materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    assert first.mode == "full"  # a cube never built is built in full
    ingest(store, catalog, [event(3, subject="person-2", timestamp="2025-04-20T09:00:00Z")])
    [second] = materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    assert second.months == (date(2025, 4, 1),)
    assert second.data_version == first.data_version + 1
    incremental = cube(store)
    materialize(store, catalog, tenant=TENANT, product=PRODUCT)
    assert cube(store) == incremental
    assert sum(n for *_, n in incremental) == 3
    assert version(store).cube_rows == sum(incremental.values())


def test_an_incremental_run_with_nothing_to_do_keeps_the_data_version(store, catalog):
    """No change: a 0-row job is recorded, the version stays, so stored releases stay valid."""
    grant(store, catalog, "person-1")
    ingest(store, catalog, [event(1)])
    [built] = materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    [idle] = materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    assert (idle.months, idle.rows, idle.data_version) == ((), 0, built.data_version)
    with store.read() as session:
        run = session.scalars(select(JobRun).order_by(JobRun.id.desc()).limit(1)).one()
    assert (run.job, run.status, run.rows) == ("materialize", "succeeded", 0)
    assert version(store).refreshed_at >= run.started_at


def test_marks_are_cleared_by_the_run_that_used_them(store, catalog):
    """After a run no mark is left; a full rebuild clears marks too."""
    grant(store, catalog, "person-1")
    ingest(store, catalog, [event(1)])
    materialize(store, catalog, tenant=TENANT, product=PRODUCT)
    ingest(store, catalog, [event(2, timestamp="2025-05-01T09:00:00Z")])
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(CubePending)) == 1
    materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(CubePending)) == 0


def test_a_consent_change_made_behind_its_back_is_still_applied(store, catalog):
    """A withdrawal written straight to the table is found by the incremental run."""
    grant(store, catalog, "person-1", "person-2")
    ingest(store, catalog, [event(1), event(2, subject="person-2",
                                           timestamp="2025-06-01T09:00:00Z")])
    materialize(store, catalog, tenant=TENANT, product=PRODUCT)
    with store.write.begin() as session:
        session.execute(update(SubjectConsent).where(
            SubjectConsent.pseudonym == pseudonym(SECRET, "person-2")).values(
            status="withdrawn", changed_at=datetime.now(UTC).replace(tzinfo=None)))
    [result] = materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    assert result.months == (date(2025, 6, 1),)
    assert sum(n for *_, n in cube(store)) == 1


def test_consent_changes_are_found_from_the_changed_subjects_not_every_event(settings_for,
                                                                            catalog):
    """SQLite keeps no statistics: joining the product's events to the consent table read
    every event of the product and looked each up (13.7 s of a 14.6 s month rebuild of the
    large demo's attendance). The changed subjects are read first and their events sought
    through the (tenant, pseudonym, day) index."""
    sqlite_store = open_store(settings_for("sqlite"))
    try:
        init_store(sqlite_store, catalog, demo_accounts=False)
        grant(sqlite_store, catalog, "person-1")
        ingest(sqlite_store, catalog, [event(1)])
        materialize(sqlite_store, catalog, tenant=TENANT, product=PRODUCT)
        seen: list[tuple[str, tuple]] = []

        def record(conn, cursor, statement, params, context, executemany):
            if "subject_consent.changed_at" in statement:
                seen.append((statement, params))

        sql_event.listen(sqlite_store.engine, "before_cursor_execute", record)
        [result] = materialize(sqlite_store, catalog, tenant=TENANT, product=PRODUCT,
                               incremental=True)
        sql_event.remove(sqlite_store.engine, "before_cursor_execute", record)
        assert result.months == () and len(seen) == 1
        with sqlite_store.engine.connect() as connection:
            plan = [row[-1] for row in connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {seen[0][0]}", seen[0][1])]
        table = VERTICAL_EVENT_MODELS[catalog.product(PRODUCT).vertical].__tablename__
        reads = [line for line in plan if table in line]
        assert reads == [f"SEARCH {table} USING INDEX ix_{table}_subject_day "
                         "(tenant_id=? AND pseudonym=?)"], plan
    finally:
        sqlite_store.dispose()


def test_freshness_reports_refresh_newest_event_pending_and_breaches(store, catalog):
    """Per tenant and product: last refresh, newest event, pending months, SLO breaches."""
    grant(store, catalog, "person-1")
    ingest(store, catalog, [event(1, timestamp="2025-03-04T10:07:30Z")])
    now = datetime(2025, 3, 5, 9, 0)
    with store.read() as session:
        [before] = [f for f in freshness(session, catalog, tenant=TENANT, now=now)
                    if f.product == PRODUCT]
    assert before.breached and before.breaches == ("never materialised",)
    assert (before.newest_event, before.pending_months) == (datetime(2025, 3, 4, 10, 0), 1)
    materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    with store.read() as session:
        rows = {f.product: f for f in freshness(session, catalog, tenant=TENANT, now=now)}
    fresh = rows[PRODUCT]
    assert (fresh.breached, fresh.pending_months, fresh.last_job_status) == (
        False, 0, "succeeded")
    assert fresh.slo_hours == 48 and fresh.data_version == 1
    assert fresh.data_age_hours == 23.0
    later = now + timedelta(hours=26)
    with store.read() as session:
        [stale] = [f for f in freshness(session, catalog, tenant=TENANT, now=later)
                   if f.product == PRODUCT]
    assert stale.breaches == ("newest event is 49 h old (SLO 48 h)",)
    assert rows["education.attendance"].breaches == ("never materialised",)


def test_freshness_flags_changes_waiting_longer_than_the_slo(store, catalog):
    """Ingested but not materialised for longer than the SLO is a breach."""
    grant(store, catalog, "person-1")
    ingest(store, catalog, [event(1)])
    materialize(store, catalog, tenant=TENANT, product=PRODUCT)
    ingest(store, catalog, [event(2, timestamp=datetime.now(UTC).isoformat())])
    with store.read() as session:
        [row] = [f for f in freshness(session, catalog, tenant=TENANT,
                                      now=datetime.now(UTC) + timedelta(hours=50))
                 if f.product == PRODUCT]
    assert any("waited" in breach for breach in row.breaches)
