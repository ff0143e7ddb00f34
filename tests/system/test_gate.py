"""The first gate slice against real stores: k-threshold, OpenDP noise, durable budget, reuse."""

from __future__ import annotations

import threading
from datetime import date, datetime

import pytest
from sqlalchemy import func, select

from data.bootstrap import demo_username
from data.models import AuditEntry, BudgetAccount, BudgetEntry, CubeMonthly, ProductVersion
from data.models import Release as ReleaseRow
from privacy import AccessDenied, BudgetExhausted, Epsilon, Gate, Principal, Query, QueryRefused
from privacy._budget import Ledger
from privacy._mechanisms import discrete_laplace

NOW = datetime(2026, 11, 21, 12, 0)
MONTHS = [date(2026, m, 1) for m in range(1, 11)]
# True monthly totals for tenant kigali-east, product health.vaccinations, metric doses.
# Several months sit below k = 5 on purpose.
TRUE = {MONTHS[0]: 0, MONTHS[1]: 1, MONTHS[2]: 3, MONTHS[3]: 4, MONTHS[4]: 60,
        MONTHS[5]: 250, MONTHS[6]: 2, MONTHS[7]: 1000, MONTHS[8]: 5, MONTHS[9]: 40}


def _principal(role: str, tenant: str = "kigali-east") -> Principal:
    return Principal(subject=demo_username(role, tenant), display_name=role, role=role,
                     tenant=tenant, source="demo")


def _seed_cube(store, tenant: str = "kigali-east", scale: int = 1) -> None:
    with store.write.begin() as session:
        for month, total in TRUE.items():
            # split each month over two cells so the gate has to aggregate
            for district, share in (("KGL-GAS", total // 2), ("EAS-RWA", total - total // 2)):
                if share == 0:
                    continue
                session.add(CubeMonthly(
                    tenant_id=tenant, product_id="health.vaccinations", metric="doses",
                    period=month, state=district[:3], district=district,
                    h3_cell="87" + district[-3:], age_bucket="0-5", gender="female",
                    category="polio", n_events=share * scale, value_sum=0.0))
        session.merge(ProductVersion(tenant_id=tenant, product_id="health.vaccinations",
                                     data_version=1, refreshed_at=NOW, cube_rows=20))


def _query(level: str = "dp_medium", **overrides) -> Query:
    fields = dict(product="health.vaccinations", metric="doses", level=level,
                  start=MONTHS[0], end=MONTHS[-1])
    fields.update(overrides)
    return Query(**fields)


@pytest.fixture
def gate(store, catalog) -> Gate:
    _seed_cube(store)
    return Gate(store, catalog, demo_accounts=True, clock=lambda: NOW)


def _spent(store, principal: Principal) -> float:
    with store.read() as session:
        return session.scalar(select(func.coalesce(func.sum(BudgetAccount.spent), 0.0)).where(
            BudgetAccount.principal == principal.subject))


def test_noisy_release_never_shows_a_cell_under_k(gate):
    """Every released value is at least k; cells whose noisy count fell under k are suppressed."""
    release = gate.release(_principal("policy_maker"), _query())
    assert len(release.cells) == len(MONTHS)
    for cell in release.cells:
        if cell.status == "suppressed":
            assert cell.value is None and cell.lower is None and cell.upper is None
        else:
            assert cell.status == "noisy"
            assert cell.value >= release.k
            assert cell.lower <= cell.value <= cell.upper
    # a month of 1000 doses is far above k at ε=1 (noise scale 3): always released
    assert release.cells[7].status == "noisy"


def test_anonymized_release_is_exact_and_suppresses_under_k(gate):
    """At the anonymized level the counts are exact and every true count under k is hidden."""
    release = gate.release(_principal("case_worker"), _query(level="anonymized"))
    values = {cell.key[0]: cell.value for cell in release.cells}
    for month, total in TRUE.items():
        expected = None if total < 5 else float(total)
        assert values[month.isoformat()[:7]] == expected
    assert release.charged == Epsilon(0.0)


def test_charge_equals_the_mechanism_map_exactly_once(gate, store, catalog):
    """ε charged is the OpenDP measurement's map(sensitivity); the ledger moves once."""
    principal = _principal("policy_maker")
    release = gate.release(principal, _query(level="dp_low"))
    product = catalog.product("health.vaccinations")
    expected = discrete_laplace(sensitivity=product.max_events_per_subject_per_day,
                                epsilon=2.0, confidence=0.95).epsilon
    assert release.charged.value == expected == 2.0
    assert _spent(store, principal) == expected
    with store.read() as session:
        entries = session.scalars(select(BudgetEntry)).all()
    assert [(e.state, e.release_id, e.epsilon) for e in entries] == [
        ("committed", release.id, expected)]


def test_identical_query_returns_stored_release_at_zero_cost(gate, store):
    """A repeated query spends nothing and returns identical values (no averaging attack)."""
    principal = _principal("policy_maker")
    first = gate.release(principal, _query())
    second = gate.release(principal, _query())
    assert second.reused and second.charged == Epsilon(0.0)
    assert second.id == first.id and second.cells == first.cells and second.digest == first.digest
    assert _spent(store, principal) == 1.0
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 1


def test_same_query_by_another_principal_of_same_role_is_reused(gate, store):
    """Consistency holds per tenant and role: a colleague gets the same stored answer free."""
    first = gate.release(_principal("policy_maker"), _query())
    colleague = Principal(subject="colleague@kigali-east.demo", display_name="c",
                          role="policy_maker", tenant="kigali-east", source="demo")
    second = gate.release(colleague, _query())
    assert second.id == first.id and second.charged == Epsilon(0.0)
    assert _spent(store, colleague) == 0.0


def test_new_data_version_is_a_new_release(gate, store):
    """After re-materialisation the same query is answered afresh and charged again."""
    principal = _principal("policy_maker")
    first = gate.release(principal, _query())
    with store.write.begin() as session:
        session.get(ProductVersion, ("kigali-east", "health.vaccinations")).data_version = 2
    second = gate.release(principal, _query())
    assert not second.reused and second.id != first.id and second.data_version == 2
    assert _spent(store, principal) == 2.0


def test_failed_query_refunds_the_reservation(gate, store, monkeypatch):
    """If computing the release fails after ε was reserved, the reservation is refunded."""
    principal = _principal("policy_maker")

    def broken(*args, **kwargs):
        raise RuntimeError("store went away mid-query")

    monkeypatch.setattr(gate, "_compute", broken)
    with pytest.raises(RuntimeError, match="mid-query"):
        gate.release(principal, _query())
    assert _spent(store, principal) == 0.0
    with store.read() as session:
        assert [e.state for e in session.scalars(select(BudgetEntry))] == ["refunded"]


def test_budget_refusal_names_requested_remaining_short_by_and_spends_nothing(gate, store):
    """At the cap the gate refuses with requested / remaining / short-by and charges nothing."""
    principal = _principal("researcher")  # cap ε = 10 per product per month
    districts = [d.code for d in gate.catalog.districts_of("kigali-east")]
    assert len(districts) == 10
    for district in districts:  # ten distinct ε=1 queries use the whole cap
        gate.release(principal, _query(filters=(("district", district),)))
    assert _spent(store, principal) == 10.0
    with pytest.raises(BudgetExhausted,
                       match=r"requested ε=1, remaining ε=0, short by ε=1"):
        gate.release(principal, _query(filters=(("age_bucket", "0-5"),)))
    assert _spent(store, principal) == 10.0
    with store.read() as session:
        refused = session.scalars(select(AuditEntry).where(AuditEntry.outcome == "refused",
                                                           AuditEntry.action == "release")).all()
    assert len(refused) == 1 and "short by" in refused[0].detail["reason"]


def test_tenant_lock_counts_only_the_principals_tenant(gate, store):
    """Rows of another tenant never reach a principal's release."""
    _seed_cube(store, tenant="south", scale=100)
    release = gate.release(_principal("case_worker"), _query(level="anonymized"))
    assert release.cells[7].value == 1000.0


@pytest.mark.parametrize("role, level, error, message", [
    ("donor", "dp_high", AccessDenied, "reads published releases only"),
    ("researcher", "dp_low", AccessDenied, "may not request privacy level 'dp_low'"),
    ("tenant_admin", "dp_high", AccessDenied, "may not request privacy level"),
])
def test_roles_without_the_right_are_refused(gate, store, role, level, error, message):
    """Roles are refused levels and budgets they do not have, and nothing is spent."""
    principal = _principal(role)
    with pytest.raises(error, match=message):
        gate.release(principal, _query(level=level))
    assert _spent(store, principal) == 0.0


@pytest.mark.parametrize("overrides, message", [
    ({"metric": "nope"}, "has no metric 'nope'"),
    ({"product": "social.registrations"}, "operational_list, not a metric set"),
    ({"filters": (("district", "SOU-HUY"),)}, "not a district of tenant kigali-east"),
    ({"filters": (("h3_cell", "87abc"),)}, "cannot filter on 'h3_cell'"),
    ({"start": date(2024, 1, 1)}, "limited to 24 months"),
])
def test_invalid_queries_are_refused_with_a_reason(gate, store, overrides, message):
    """A malformed or out-of-domain query says why and spends nothing."""
    principal = _principal("policy_maker")
    with pytest.raises(QueryRefused, match=message):
        gate.release(principal, _query(**overrides))
    assert _spent(store, principal) == 0.0


def test_product_without_materialised_data_is_refused(gate):
    """No cube yet → a refusal that tells the operator what to run."""
    with pytest.raises(QueryRefused, match="veil materialize"):
        gate.release(_principal("policy_maker"),
                     _query(product="education.attendance", metric="days_present"))


def test_concurrent_reservations_admit_exactly_the_cap(store):
    """32 concurrent ε=1 reservations against a cap of 10: exactly 10 succeed, ledger balances."""
    ledger = Ledger(store)
    outcomes: list[str] = []
    barrier = threading.Barrier(32)

    def attempt() -> None:
        barrier.wait()
        try:
            ledger.reserve(tenant="kigali-east", principal="race@x", role="researcher",
                           product="health.vaccinations", epsilon=Epsilon(1.0), cap=10.0,
                           today=NOW.date())
            outcomes.append("ok")
        except BudgetExhausted:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 22
    with store.read() as session:
        account = session.scalars(select(BudgetAccount)).one()
        entries = session.scalars(select(BudgetEntry)).all()
    assert account.spent == 10.0 == sum(e.epsilon for e in entries)
    assert len(entries) == 10
