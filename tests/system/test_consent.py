"""Consent (SPEC B4): grants and withdrawals, and a withdrawal's immediate cube rebuild."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from data.consent import grant_consent, record_consent, withdraw_consent
from data.errors import InvalidInput
from data.ingest import ingest_rows
from data.materialize import materialize
from data.models import ConsentEvent, CubeMonthly, CubePending, ProductVersion, SubjectConsent
from data.pseudonym import pseudonym
from ingest_support import PRODUCT, SECRET, TENANT, event, grant

P1, P2 = pseudonym(SECRET, "person-1"), pseudonym(SECRET, "person-2")


def cube_total(store, product: str = PRODUCT, metric: str = "doses") -> int:
    with store.read() as session:
        return session.scalar(select(func.coalesce(func.sum(CubeMonthly.n_events), 0)).where(
            CubeMonthly.tenant_id == TENANT, CubeMonthly.product_id == product,
            CubeMonthly.metric == metric))


def test_grant_and_withdraw_keep_an_append_only_history(store, catalog):
    """Each change is a ConsentEvent; SubjectConsent holds the latest; repeats change nothing."""
    first = grant_consent(store, catalog, tenant=TENANT, pseudonym=P1, vertical="health")
    again = grant_consent(store, catalog, tenant=TENANT, pseudonym=P1, vertical="health")
    withdrawn = withdraw_consent(store, catalog, tenant=TENANT, pseudonym=P1,
                                 vertical="health")
    assert (first.changed, again.changed, withdrawn.changed) == (True, False, True)
    with store.read() as session:
        history = session.execute(select(ConsentEvent.status).where(
            ConsentEvent.pseudonym == P1).order_by(ConsentEvent.id)).scalars().all()
        current = session.get(SubjectConsent, (TENANT, P1, "health"))
    assert history == ["granted", "withdrawn"]
    assert current.status == "withdrawn" and current.changed_at == withdrawn.at


def test_a_withdrawal_rebuilds_the_cubes_without_the_subject_at_once(store, catalog):
    """The cube loses exactly the subject's events, its version moves, the gate's check clears."""
    grant(store, catalog, "person-1", "person-2")
    ingest_rows(store, catalog, [event(1), event(2, timestamp="2025-04-02T09:00:00Z"),
                                 event(3, subject="person-2")],
                tenant=TENANT, product=PRODUCT, secret=SECRET)
    materialize(store, catalog, tenant=TENANT)
    assert cube_total(store) == 3
    with store.read() as session:
        before = session.get(ProductVersion, (TENANT, PRODUCT)).data_version

    change = withdraw_consent(store, catalog, tenant=TENANT, pseudonym=P1, vertical="health")

    assert cube_total(store) == 1
    rebuilt = {r.product: r for r in change.rebuilt}
    # every health metric set of the tenant is rebuilt (or confirmed current)
    assert set(rebuilt) == {p.id for p in catalog.products
                            if p.vertical == "health" and p.kind == "metric_set"}
    assert {"health.vaccinations", "health.nutrition"} < set(rebuilt)
    assert [m.isoformat() for m in rebuilt[PRODUCT].months] == ["2025-03-01", "2025-04-01"]
    with store.read() as session:
        version = session.get(ProductVersion, (TENANT, PRODUCT))
        pending = session.scalar(select(func.count()).select_from(CubePending))
    assert version.data_version == before + 1  # stored releases of the old data are not reused
    assert version.refreshed_at >= change.at  # what the gate compares withdrawals against
    assert pending == 0


def test_a_re_grant_marks_the_months_and_the_next_run_counts_the_subject_again(store, catalog):
    """A grant needs no urgent rebuild; the next incremental run includes the subject."""
    grant(store, catalog, "person-1")
    ingest_rows(store, catalog, [event(1)], tenant=TENANT, product=PRODUCT, secret=SECRET)
    materialize(store, catalog, tenant=TENANT, product=PRODUCT)
    withdraw_consent(store, catalog, tenant=TENANT, pseudonym=P1, vertical="health")
    assert cube_total(store) == 0
    regrant = grant_consent(store, catalog, tenant=TENANT, pseudonym=P1, vertical="health")
    assert list(regrant.months) == [PRODUCT] and cube_total(store) == 0
    [result] = materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    assert result.months and cube_total(store) == 1


def test_a_grant_may_be_dated_back_but_not_before_the_last_change_or_into_the_future(store,
                                                                                      catalog):
    """Paper consent predates the data; history stays ordered; the future is refused."""
    past = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
    assert grant_consent(store, catalog, tenant=TENANT, pseudonym=P1, vertical="health",
                         at=past).at == datetime(2024, 6, 1, 9, 0)
    withdraw_consent(store, catalog, tenant=TENANT, pseudonym=P1, vertical="health")
    with pytest.raises(InvalidInput, match="append-only"):
        grant_consent(store, catalog, tenant=TENANT, pseudonym=P1, vertical="health", at=past)
    with pytest.raises(InvalidInput, match="in the future"):
        grant_consent(store, catalog, tenant=TENANT, pseudonym=P2, vertical="health",
                      at=datetime.now(UTC) + timedelta(days=1))


def test_a_withdrawal_cannot_be_dated_back(store, catalog):
    """Backdating would hide it from the gate's 'withdrawal not yet applied' check."""
    with store.write.begin() as session, pytest.raises(InvalidInput, match="cannot be dated"):
        record_consent(session, catalog, tenant=TENANT, pseudonym=P1, vertical="health",
                       status="withdrawn", at=datetime(2025, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tenant": "atlantis"}, "unknown tenant 'atlantis'"),
    ({"vertical": "finance"}, "unknown vertical 'finance'"),
    ({"status": "maybe"}, "must be one of granted, withdrawn"),
    ({"pseudonym": "person-1"}, "32 lower-case hex"),
])
def test_bad_consent_input_is_refused(store, catalog, kwargs, message):
    """Unknown tenant, vertical or status, and raw ids instead of pseudonyms."""
    arguments = {"tenant": TENANT, "pseudonym": P1, "vertical": "health", "status": "granted"}
    arguments.update(kwargs)
    with store.write.begin() as session, pytest.raises(InvalidInput, match=message):
        record_consent(session, catalog, **arguments)
