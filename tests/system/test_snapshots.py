"""Donor snapshots follow the data: after a consent withdrawal and rebuild the old numbers are
not served; `veil publish` republishes them on the new data version (issue 14, item 5)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from dashboard.cli import publish_defaults
from data.consent import record_consent, withdraw_consent
from data.demo import generate
from data.materialize import materialize
from data.models import HealthEvent, ProductVersion, SubjectConsent
from privacy import Gate, Principal, Query

AS_OF = date(2026, 11, 16)
NOW = datetime(2026, 11, 16, 9, 0) + timedelta(days=40)
TENANT = "kigali-east"
DONOR = Principal(subject=f"donor@{TENANT}", display_name="Donor", role="donor", tenant=TENANT,
                  source="demo")
HEALTH = {"health.vaccinations", "health.nutrition"}


@pytest.fixture
def gate(store, catalog) -> Gate:
    generate(store, catalog, size="small", seed=7, secret="snapshot-secret", as_of=AS_OF)
    materialize(store, catalog)
    return Gate(store, catalog, clock=lambda: NOW)


def _busiest_subject(store) -> str:
    """A consenting health subject of the tenant with events in the published months."""
    with store.read() as session:
        return session.execute(
            select(HealthEvent.pseudonym)
            .join(SubjectConsent, (SubjectConsent.tenant_id == HealthEvent.tenant_id)
                  & (SubjectConsent.pseudonym == HealthEvent.pseudonym)
                  & (SubjectConsent.vertical == "health"))
            .where(HealthEvent.tenant_id == TENANT, SubjectConsent.status == "granted",
                   HealthEvent.month >= date(2025, 11, 1))
            .group_by(HealthEvent.pseudonym)
            .order_by(func.count().desc(), HealthEvent.pseudonym).limit(1)).scalar_one()


def _versions(store) -> dict[str, int]:
    with store.read() as session:
        return {v.product_id: v.data_version for v in session.scalars(
            select(ProductVersion).where(ProductVersion.tenant_id == TENANT))}


def test_a_withdrawal_withholds_its_snapshots_until_they_are_republished(gate, store, catalog):
    """After a withdrawal and rebuild the old health snapshots are not served but listed as
    being republished; `veil publish` releases them on the new data version."""
    before = {r.id: r for r in publish_defaults(gate, requested_by="test")
              if r.tenant == TENANT}
    assert {r.id for r in gate.published(DONOR)} == set(before)

    withdraw_consent(store, catalog, tenant=TENANT, pseudonym=_busiest_subject(store),
                     vertical="health")  # rebuilds the health cubes at once: new data version

    served = gate.published(DONOR)
    assert {r.product for r in served} & HEALTH == set()
    assert all(r.id in before for r in served)  # other verticals' snapshots are still current
    pending = gate.republishing(DONOR)
    assert {q.product for q in pending} == HEALTH
    assert all(isinstance(q, Query) for q in pending)
    old = {(r.product, r.query.metric): r for r in before.values() if r.product in HEALTH}
    assert {(q.product, q.metric) for q in pending} == set(old)

    publish_defaults(gate, requested_by="test")

    versions = _versions(store)
    fresh = {(r.product, r.query.metric): r for r in gate.published(DONOR)
             if r.product in HEALTH}
    assert set(fresh) == set(old)
    for series, release in fresh.items():
        assert release.id != old[series].id
        assert release.data_version == versions[release.product] == old[series].data_version + 1
    assert gate.republishing(DONOR) == []


def test_a_stale_series_outside_the_defaults_is_republished_as_it_was(gate, store, catalog):
    """A snapshot by district over 6 months comes back by district over the 6 latest months."""
    clock = gate.data_clock(DONOR, product="health.vaccinations")
    query = clock.query(metric="doses", level="dp_high", months=6,
                        group_by=("month", "district"))
    first = gate.publish(tenant=TENANT, query=query, requested_by="ops")
    withdraw_consent(store, catalog, tenant=TENANT, pseudonym=_busiest_subject(store),
                     vertical="health")
    assert gate.published(DONOR, product="health.vaccinations") == []
    assert gate.republishing(DONOR, product="health.vaccinations") == [query]

    publish_defaults(gate, requested_by="test")

    by_district = [r for r in gate.published(DONOR, product="health.vaccinations")
                   if r.query.group_by == ("month", "district")]
    assert [r.query for r in by_district] == [query]
    assert by_district[0].id != first.id
    assert by_district[0].data_version == first.data_version + 1


def test_a_withdrawal_not_yet_rebuilt_withholds_its_snapshots_too(gate, store, catalog):
    """Between a withdrawal and its rebuild the current cube still counts the subject."""
    publish_defaults(gate, requested_by="test")
    with store.write.begin() as session:  # recorded, but no rebuild has run yet
        record_consent(session, catalog, tenant=TENANT, pseudonym=_busiest_subject(store),
                       vertical="health", status="withdrawn")
    assert {r.product for r in gate.published(DONOR)} & HEALTH == set()
    assert {q.product for q in gate.republishing(DONOR)} == HEALTH
