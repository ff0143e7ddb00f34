"""Attacks on the gate fail: averaging, differencing, crossing tenants, using hidden fields."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import date, datetime

import pytest
from sqlalchemy import func, select

from data.demo import generate
from data.materialize import materialize
from data.models import AuditEntry, BudgetAccount, CubeMonthly, ProductVersion, ReleasePeriod
from data.models import Release as ReleaseRow
from privacy import AccessDenied, Gate, Principal, Query, QueryRefused
from tests.pinned import DEMO_AS_OF

from exact_support import exact_cells

NOW = datetime(2026, 11, 21, 12, 0)
MONTH = date(2026, 6, 1)


def _principal(role: str, tenant: str = "kigali-east") -> Principal:
    return Principal(subject=f"{role}@{tenant}", display_name=role, role=role, tenant=tenant,
                     source="demo")


def _cube(session, *, tenant, district, gender, n, month=MONTH):
    session.add(CubeMonthly(tenant_id=tenant, product_id="health.vaccinations", metric="doses",
                            period=month, state=district[:3], district=district,
                            h3_cell="87" + district + gender, age_bucket="0-5", gender=gender,
                            category="polio", n_events=n, value_sum=0.0))


@pytest.fixture
def gate(store, catalog) -> Gate:
    with store.write.begin() as session:
        # In KGL-GAS one lone male among 40 events; the south tenant has big numbers everywhere.
        _cube(session, tenant="kigali-east", district="KGL-GAS", gender="female", n=39)
        _cube(session, tenant="kigali-east", district="KGL-GAS", gender="male", n=1)
        _cube(session, tenant="kigali-east", district="EAS-RWA", gender="female", n=25)
        for district in ("SOU-HUY", "KGL-GAS", "EAS-RWA"):  # south rows, even in "our" districts
            _cube(session, tenant="south", district=district, gender="male", n=5000)
        for tenant in ("kigali-east", "south"):
            session.add(ProductVersion(tenant_id=tenant, product_id="health.vaccinations",
                                       data_version=1, refreshed_at=NOW, cube_rows=3))
    return Gate(store, catalog, clock=lambda: NOW)


def _query(**overrides) -> Query:
    fields = dict(product="health.vaccinations", metric="doses", level="dp_medium",
                  start=MONTH, end=MONTH)
    fields.update(overrides)
    return Query(**fields)


def _new_data_version(store) -> None:
    with store.write.begin() as session:
        for version in session.scalars(select(ProductVersion)):
            version.data_version += 1


def test_repeating_a_query_1000_times_does_not_narrow_the_answer(gate, store):
    """Averaging attack: 1,000 repeats return the very same noisy cells and cost ε once."""
    principal = _principal("policy_maker")
    answers = {gate.release(principal, _query(filters=(("district", "KGL-GAS"),))).cells
               for _ in range(1000)}
    assert len(answers) == 1
    with store.read() as session:
        assert session.scalar(select(func.sum(BudgetAccount.spent))) == 1.0


def _lifetime(gate, epsilon: float) -> None:
    """A month's lifetime budget of ``epsilon`` (the catalog's is far smaller)."""
    from data.catalog import PeriodPolicy

    policy = dataclasses.replace(gate.catalog.policy, periods=PeriodPolicy(epsilon=epsilon))
    gate._catalog = dataclasses.replace(gate.catalog, policy=policy)


def test_differencing_two_queries_does_not_isolate_the_lone_person(gate, store):
    """Differencing attack: 'district' minus 'district and female' is not the lone male.
    (Noise alone: the month's lifetime budget is lifted here; the next test keeps it.)"""
    _lifetime(gate, 1000.0)
    exact_hits = 0
    for attempt in range(60):
        # one policy maker per round keeps each within the monthly cap (3 queries × ε 1); a
        # researcher may not filter on gender at all (it sees it only generalised)
        principal = Principal(subject=f"policy-maker-{attempt}@kigali-east", display_name="p",
                              role="policy_maker", tenant="kigali-east", source="demo")
        whole = gate.release(principal, _query(filters=(("district", "KGL-GAS"),)))
        female = gate.release(principal, _query(filters=(("district", "KGL-GAS"),
                                                         ("gender", "female"))))
        male = gate.release(principal, _query(filters=(("district", "KGL-GAS"),
                                                       ("gender", "male"))))
        # the lone male's own cell is never shown as a number under k
        assert male.cells[0].value is None or male.cells[0].value >= 5
        exact_hits += (whole.cells[0].value - female.cells[0].value) == 1
        _new_data_version(store)  # fresh noise for the next attempt, as new data would bring
    # with noise of scale 3 on each count the difference is exactly 1 only by chance (~10%)
    assert exact_hits < 20


def test_a_months_lifetime_budget_stops_repeated_differencing(gate, store, catalog):
    """Issue 16: fresh noise on the same month, asked for by ever new viewers, stops once that
    month's lifetime budget for viewers (ε 7.5 of 10) cannot pay another view; nothing is
    charged for the refused attempt, and every viewer's spending was drawn from the one month."""
    from privacy import PeriodBudgetExhausted

    cap = catalog.policy.periods.cap(reserved_user=False)
    released = 0
    with pytest.raises(PeriodBudgetExhausted, match="June 2026 .* lifetime privacy budget"):
        for attempt in range(100):
            principal = Principal(subject=f"viewer-{attempt}@kigali-east", display_name="v",
                                  role="policy_maker" if attempt % 2 else "researcher",
                                  tenant="kigali-east", source="demo")
            gate.release(principal, _query(filters=(("district", "KGL-GAS"),)))
            released += 1
            _new_data_version(store)  # fresh noise, as new data would bring
    assert released == int(cap)  # ε 1 each: 7 viewers of two roles, then refused
    [status] = gate.lifetime(_principal("policy_maker"), product="health.vaccinations",
                             months=[MONTH])
    # exactly what was released was drawn, and the rest cannot pay one more view
    assert status.spent.value == pytest.approx(released * 1.0)
    assert cap - status.spent.value < 1.0


def test_no_query_field_reaches_another_tenants_rows(gate):
    """Tenant isolation: filters naming B's areas are refused; groupings show only A's data."""
    principal = _principal("policy_maker")
    with pytest.raises(QueryRefused, match="'SOU-HUY' is not a district of tenant kigali-east"):
        gate.release(principal, _query(level="dp_low", filters=(("district", "SOU-HUY"),)))
    with pytest.raises(QueryRefused, match="'SOU' is not a state of tenant kigali-east"):
        gate.release(principal, _query(level="dp_low", filters=(("state", "SOU"),)))
    by_district = _query(level="dp_low", group_by=("month", "district"))
    # exact counts (the engine without noise) make any leak visible
    values = {c.key[1]: c.value for c in exact_cells(gate, principal, by_district)
              if c.value is not None}
    # the zero-filled districts are counted in kigali-east's own total; none of south's 5,000s
    assert values == {"KGL-GAS": 40.0, "EAS-RWA": 25.0, "kigali-east": 65.0}
    released = gate.release(principal, by_district)
    codes = {c.key[1] for c in released.cells}
    assert codes <= {d.code for d in gate.catalog.districts_of("kigali-east")} | {"KGL", "EAS",
                                                                                 "kigali-east"}
    # loose: noise of scale ≤ 6 against kigali-east's 65 events; a single south row is 5,000
    assert all(c.value < 200 for c in released.cells if c.value is not None)
    total = gate.release(principal, _query(level="dp_low"))
    assert 45 < total.cells[0].value < 85


def test_a_role_without_clearance_cannot_group_or_filter_by_a_hidden_field(gate, catalog):
    """C2: with gender hidden for researchers, grouping and filtering by it are refused."""
    roles = dict(catalog.roles)
    treatment = dict(roles["researcher"].treatment, quasi_identifier="hide")
    roles["researcher"] = dataclasses.replace(roles["researcher"], treatment=treatment)
    gate._catalog = dataclasses.replace(catalog, roles=roles)
    principal = _principal("researcher")
    with pytest.raises(AccessDenied, match="cannot see 'Gender' .* so it cannot group by it"):
        gate.release(principal, _query(group_by=("month", "gender")))
    with pytest.raises(AccessDenied, match="cannot see 'Gender' .* so it cannot filter on it"):
        gate.release(principal, _query(filters=(("gender", "male"),)))
    with pytest.raises(AccessDenied, match="cannot see 'H3 cell"):
        gate.release(principal, _query(group_by=("month", "h3_cell")))


DEMO_WINDOW = (date(2026, 8, 1), date(2026, 10, 1))
GROUPINGS = [("month",), ("month", "state"), ("month", "district"), ("month", "h3_cell"),
             ("month", "gender"), ("month", "age_bucket")]


@pytest.mark.parametrize("granted", [False, True], ids=["catalog_roles", "every_role_granted"])
def test_no_exact_aggregate_can_be_released_so_none_can_be_differenced(store, catalog, granted):
    """No filter × group-by pair at the anonymized level is released, to any role: refused,
    audited, nothing spent or stored, so there are no two exact counts to subtract."""
    generate(store, catalog, size="small", seed=7, secret="attack-test-secret-0123456789",
             as_of=DEMO_AS_OF)
    materialize(store, catalog)
    if granted:  # even a role granted the level (and a budget) gets no exact aggregate
        catalog = dataclasses.replace(catalog, roles={
            role_id: dataclasses.replace(role, privacy_levels=("anonymized",
                                                               *role.privacy_levels))
            for role_id, role in catalog.roles.items()})
    gate = Gate(store, catalog, clock=lambda: NOW)
    tenant = "kigali-east"
    state = catalog.tenant(tenant).states[0]
    district = catalog.districts_of(tenant)[0].code
    filters = [(), (("state", state),), (("district", district),), (("gender", "female"),)]
    metrics = [(p.id, m.id) for p in catalog.products if p.kind == "metric_set"
               for m in p.metrics]
    asked = 0
    for role in catalog.roles:
        principal = _principal(role, tenant)
        usable = {p.id for p in gate.products(principal)}
        # a case worker is tried on every metric of every product; the others on one
        for product, metric in metrics if role == "case_worker" else metrics[:1]:
            # a product restricted to other roles (allowed_roles) is refused before its level
            refusal = ((QueryRefused, "releases no exact aggregates") if product in usable
                       else (AccessDenied, "may not use"))
            for group_by, where in itertools.product(GROUPINGS, filters):
                query = Query(product=product, metric=metric, level="anonymized",
                              start=DEMO_WINDOW[0], end=DEMO_WINDOW[1], group_by=group_by,
                              filters=where)
                with pytest.raises(refusal[0], match=refusal[1]):
                    gate.release(principal, query)
                with pytest.raises(refusal[0], match=refusal[1]):
                    gate.preview(principal, query)
                asked += 1
    assert asked == len(GROUPINGS) * len(filters) * (len(catalog.roles) - 1 + len(metrics))
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 0
        assert session.scalar(select(func.count()).select_from(ReleasePeriod)) == 0
        assert session.scalar(select(func.count()).select_from(BudgetAccount)) == 0
        refused = session.scalars(select(AuditEntry).where(AuditEntry.action == "release")).all()
    assert len(refused) == asked
    assert all(e.outcome == "refused" and ("no exact aggregates" in e.detail["reason"]
                                           or "may not use" in e.detail["reason"])
               and e.detail["query"]["level"] == "anonymized" for e in refused)
    restricted = [p.id for p in catalog.products if p.allowed_roles]
    assert restricted, "the catalog restricts at least one product to some roles"
    assert sum("may not use" in e.detail["reason"] for e in refused) == len(GROUPINGS) * len(
        filters) * sum(1 for product, _ in metrics if product in restricted)


def test_a_generalised_field_cannot_be_grouped_or_filtered_raw(gate, catalog):
    """C2 (issue 15.6): researchers see H3 cells generalised to districts and gender
    generalised (no coarser form: nothing), so the gate refuses both as group-by and filter,
    names the coarser dimension, and ``dimensions`` offers only what the role sees as stored."""
    principal = _principal("researcher")
    assert catalog.roles["researcher"].treatment["quasi_identifier"] == "generalise"
    with pytest.raises(AccessDenied, match=r"sees 'H3 cell \(res 7\)' only generalised .* "
                                           r"cannot group by it; group by district instead"):
        gate.release(principal, _query(group_by=("month", "h3_cell")))
    with pytest.raises(AccessDenied, match="sees 'Gender' only generalised"):
        gate.release(principal, _query(group_by=("month", "gender")))
    with pytest.raises(AccessDenied, match="cannot filter on it"):
        gate.release(principal, _query(filters=(("gender", "male"),)))
    offered = gate.dimensions(principal, "health.vaccinations")
    assert "h3_cell" not in offered and "gender" not in offered
    assert {"state", "district", "age_bucket", "category"} <= set(offered)
    # a policy maker sees them as stored: the H3 map and a breakdown by gender are theirs
    assert {"h3_cell", "gender"} <= set(gate.dimensions(_principal("policy_maker"),
                                                        "health.vaccinations"))
