"""Donor snapshots on a schedule (issue 20) on both stores: a run publishes exactly what is due
at the publisher's cost and is on the job history; nothing due means no run within a day; a
data change makes its series due again; a series that fails does not stop the others."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from data.consent import withdraw_consent
from data.demo import generate
from data.errors import InvalidInput, QueryRefused
from data.materialize import materialize
from data.models import JobRun
from data.models import Release as ReleaseRow
from privacy import Gate
from tests.system.test_snapshots import AS_OF, DONOR, HEALTH, NOW, TENANT, _busiest_subject


@pytest.fixture
def gate(store, catalog) -> Gate:
    """The small demo built and materialised, nothing published yet."""
    generate(store, catalog, size="small", seed=7, secret="snapshot-secret", as_of=AS_OF)
    materialize(store, catalog)
    return Gate(store, catalog, clock=lambda: NOW)


def _runs(store) -> list[JobRun]:
    with store.read() as session:
        return list(session.scalars(select(JobRun).where(JobRun.job == "snapshot")
                                    .order_by(JobRun.id)))


def test_the_first_run_publishes_every_default_series_at_the_publishers_cost(gate, store):
    """Everything is due on a store never published: one run publishes it all, charged to each
    tenant's publication identity, and records a succeeded job run with the count."""
    series = gate.snapshots.series()
    assert len(gate.snapshots.due()) == len(series) > 0
    run = gate.snapshots.run_scheduled()
    assert (run.due, len(run.published), run.errors) == (len(series), len(series), ())
    [record] = _runs(store)
    assert (record.status, record.rows) == ("succeeded", len(series))
    with store.read() as session:
        roles = set(session.scalars(select(ReleaseRow.role).where(
            ReleaseRow.id.in_([r.id for r in run.published]))))
    assert roles == {"publisher"}
    assert {r.id for r in gate.published(DONOR)} == {
        r.id for r in run.published if r.tenant == TENANT}
    assert gate.snapshots.due() == []


def test_nothing_due_means_no_run_until_a_day_has_passed(gate, store, catalog):
    """A second check finds nothing due and records nothing; a day later it runs anyway and
    publishes nothing (every snapshot is current)."""
    gate.snapshots.run_scheduled()
    assert gate.snapshots.run_scheduled() is None
    assert len(_runs(store)) == 1
    later = Gate(store, catalog, clock=lambda: NOW + timedelta(hours=25))
    run = later.snapshots.run_scheduled()
    assert (run.due, run.published) == (0, ())
    assert [r.status for r in _runs(store)] == ["succeeded", "succeeded"]


def test_a_data_change_makes_its_series_due_and_a_run_republishes_them(gate, store, catalog):
    """After a consent withdrawal rebuilds the health cubes, exactly the tenant's health
    series are due; the next run republishes them and donors see them again."""
    gate.snapshots.run_scheduled()
    withdraw_consent(store, catalog, tenant=TENANT, pseudonym=_busiest_subject(store),
                     vertical="health")
    due = gate.snapshots.due()
    assert {(tenant, query.product) for tenant, query in due} == {
        (TENANT, product) for product in HEALTH}
    run = gate.snapshots.run_scheduled()
    assert len(run.published) == len(due)
    assert {r.product for r in gate.published(DONOR)} >= HEALTH
    assert gate.republishing(DONOR) == []


def test_a_series_that_cannot_be_published_fails_the_run_but_not_the_others(
        gate, store, monkeypatch):
    """One refusal: the rest are published, the run is failed with the refusal named (the
    alerts report failed job runs)."""
    publish = gate.publish

    def refuse_nutrition(*, tenant, query, requested_by):
        if query.product == "health.nutrition" and tenant == TENANT:
            raise QueryRefused("the publisher's budget is spent")
        return publish(tenant=tenant, query=query, requested_by=requested_by)

    monkeypatch.setattr(gate, "publish", refuse_nutrition)
    run = gate.snapshots.run_scheduled()
    assert run.failed and len(run.published) == run.due - 1
    [record] = _runs(store)
    assert record.status == "failed"
    assert f"{TENANT} health.nutrition.screenings: the publisher's budget is spent" in record.error


def test_a_schedule_needs_a_positive_interval(gate):
    """Bad input, quoted."""
    with pytest.raises(InvalidInput, match="positive interval"):
        gate.snapshots.run_scheduled(every=timedelta(0))
