"""The first gate slice against real stores: k-threshold, OpenDP noise, durable budget, reuse."""

from __future__ import annotations

import dataclasses
import threading
from datetime import date, datetime

import pytest
from sqlalchemy import func, select

from data.bootstrap import demo_username
from data.catalog import PeriodPolicy
from data.models import AuditEntry, BudgetAccount, BudgetEntry, CubeMonthly, ProductVersion
from data.models import Release as ReleaseRow
from data.prepared import Batch
from privacy import AccessDenied, BudgetExhausted, Epsilon, Gate, Principal, Query, QueryRefused
from privacy._budget import Ledger
from privacy._mechanisms import discrete_laplace

from exact_support import exact_cells

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


#: A month's lifetime out of reach: these tests pin each viewer's monthly allowance (ten ε-1
#: views of one month for a researcher), which the catalog's lifetime per data month (ε 10,
#: viewers 7.5) would stop first; tests/system/test_period_budget.py pins the lifetime.
_OUT_OF_REACH = PeriodPolicy(epsilon=1000.0, delta=1e-4, reserved=0.25)


@pytest.fixture
def gate(store, catalog) -> Gate:
    _seed_cube(store)
    policy = dataclasses.replace(catalog.policy, periods=_OUT_OF_REACH)
    return Gate(store, dataclasses.replace(catalog, policy=policy), demo_accounts=True,
                clock=lambda: NOW)


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


def test_the_anonymized_level_releases_no_aggregate_and_spends_nothing(gate, store):
    """Exact counts are refused (release and preview), audited, nothing spent or stored."""
    principal = _principal("case_worker")
    with pytest.raises(QueryRefused, match="adds no noise, and Veil releases no exact "
                                           "aggregates"):
        gate.release(principal, _query(level="anonymized"))
    with pytest.raises(QueryRefused, match="releases no exact aggregates"):
        gate.preview(principal, _query(level="anonymized"))
    assert _spent(store, principal) == 0.0
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 0
        [refused] = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "release")).all()
    assert refused.outcome == "refused" and refused.principal == principal.subject
    assert "no exact aggregates" in refused.detail["reason"]


def test_without_noise_every_true_count_under_k_is_hidden(gate):
    """The k-threshold itself (engine, no noise): every true count under k is hidden."""
    cells = exact_cells(gate, _principal("policy_maker"), _query())
    values = {cell.key[0]: cell.value for cell in cells}
    for month, total in TRUE.items():
        expected = None if total < 5 else float(total)
        assert values[month.isoformat()[:7]] == expected


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


def test_failed_query_spends_nothing(gate, store, monkeypatch):
    """If computing the release fails, no ε is spent and no release is stored."""
    principal = _principal("policy_maker")

    def broken(*args, **kwargs):
        raise RuntimeError("store went away mid-query")

    monkeypatch.setattr(gate, "_compute", broken)
    with pytest.raises(RuntimeError, match="mid-query"):
        gate.release(principal, _query())
    assert _spent(store, principal) == 0.0
    with store.read() as session:
        assert session.scalars(select(BudgetEntry)).all() == []
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 0


def test_failure_while_storing_rolls_the_charge_back(gate, store, monkeypatch):
    """A failure inside the storing transaction rolls back the ε charge with the release."""
    principal = _principal("policy_maker")
    send = Batch.send

    def send_then_fail(batch, on):  # the charge's upserts ran; then the transaction fails
        send(batch, on)
        assert on.scalar(select(func.sum(BudgetAccount.spent))) > 0  # drawn, not committed
        raise RuntimeError("disk full")

    monkeypatch.setattr(Batch, "send", send_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        gate.release(principal, _query())
    assert _spent(store, principal) == 0.0
    with store.read() as session:
        assert session.scalars(select(BudgetEntry)).all() == []
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 0


def test_reservation_for_a_long_job_is_refunded_on_failure(store):
    """The reserve → refund path (long jobs such as exports) gives the ε back exactly."""
    ledger = Ledger(store)
    entry = ledger.reserve(tenant="kigali-east", principal="job@x", role="researcher",
                           product="health.vaccinations", epsilon=Epsilon(2.0), cap=10.0,
                           today=NOW.date())
    ledger.refund(entry)
    ledger.refund(entry)  # idempotent
    with store.read() as session:
        assert session.scalars(select(BudgetAccount)).one().spent == 0.0
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
    release = gate.release(_principal("policy_maker"), _query(level="dp_low"))
    # loose: noise scale 1.5 against kigali-east's 1000; south's rows would add 100,000
    assert 950 < release.cells[7].value < 1050
    assert all(c.value is None or c.value < 1100 for c in release.cells)
    assert exact_cells(gate, _principal("policy_maker"), _query())[7].value == 1000.0


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
    ({"filters": (("pseudonym", "abc"),)}, "cannot filter on 'pseudonym'"),
    ({"filters": (("h3_cell", "87abc"),)}, "'87abc' is not a h3_cell of tenant kigali-east"),
    ({"group_by": ("month", "district", "state")}, "group by one geography at a time"),
    ({"group_by": ("month", "event_id")}, "cannot group by 'event_id'"),
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


# --- roll-up, series, means, consent (the full gate) ---------------------------------------------

def _seed_districts(store, counts: dict[str, int], month=MONTHS[4], product="health.vaccinations",
                    metric="doses", value_per_event=0.0):
    """One month of cube rows per district (kigali-east has KGL-* and EAS-* districts)."""
    with store.write.begin() as session:
        for district, n in counts.items():
            session.add(CubeMonthly(
                tenant_id="kigali-east", product_id=product, metric=metric, period=month,
                state=district[:3], district=district, h3_cell="87" + district[-3:],
                age_bucket="0-5", gender="female", category="-", n_events=n,
                value_sum=n * value_per_event))
        session.merge(ProductVersion(tenant_id="kigali-east", product_id=product,
                                     data_version=1, refreshed_at=NOW, cube_rows=len(counts)))


def test_small_districts_roll_up_to_their_state_in_a_release(gate, store):
    """Grouped by district, districts under k are shown as rolled up into their state
    (measured without noise, so the numbers are exact)."""
    _seed_districts(store, {"KGL-NYR": 3, "KGL-KIC": 3}, month=MONTHS[1])
    released = exact_cells(gate, _principal("policy_maker"), _query(
        start=MONTHS[1], end=MONTHS[1], group_by=("month", "district")))
    cells = {c.key[1]: c for c in released}
    # February's base seed adds KGL-GAS 0 and EAS-RWA 1 (see TRUE).
    assert cells["KGL-NYR"].status == "rolled_up:KGL" == cells["KGL-KIC"].status
    assert cells["KGL"].status == "rollup" and cells["KGL"].value == 6.0
    assert sorted(cells["KGL"].members) == ["KGL-GAS", "KGL-KIC", "KGL-NYR"]
    # Eastern's union (1) is under k at its state: it is counted in the tenant's total (7).
    eastern = [c for code, c in cells.items() if code.startswith("EAS-")]
    assert len(eastern) == 7 and {c.status for c in eastern} == {"rolled_up:kigali-east"}
    assert cells["kigali-east"].status == "total" and cells["kigali-east"].value == 7.0
    assert all(c.value is None or c.value >= 5 for c in released)


def test_a_roll_up_query_charges_the_level_exactly_once(gate, store):
    """District → state → tenant measurements together cost exactly the level's ε."""
    principal = _principal("policy_maker")
    release = gate.release(principal, _query(group_by=("month", "district")))
    assert release.charged == Epsilon(1.0) and release.epsilon == Epsilon(1.0)
    assert _spent(store, principal) == 1.0
    statuses = {c.status.split(":")[0] for c in release.cells}
    assert statuses <= {"noisy", "rolled_up", "rollup", "total", "suppressed"}
    assert len([c for c in release.cells
                if c.status not in ("rollup", "total")]) == 10 * len(MONTHS)


def test_overlapping_windows_reuse_the_same_period_noise(gate, store):
    """Months already released keep their values in any later window; only new months cost."""
    principal = _principal("policy_maker")
    first = gate.release(principal, _query(start=MONTHS[0], end=MONTHS[5]))
    second = gate.release(principal, _query(start=MONTHS[3], end=MONTHS[8]))
    by_month = lambda r: {c.key[0]: c for c in r.cells}  # noqa: E731
    for month in ("2026-04", "2026-05", "2026-06"):
        assert by_month(first)[month] == by_month(second)[month]
    assert second.charged == Epsilon(1.0)
    inside = gate.release(principal, _query(start=MONTHS[1], end=MONTHS[7]))
    assert inside.charged == Epsilon(0.0) and not inside.reused and inside.id != first.id
    assert [by_month(inside)[m] for m in ("2026-02", "2026-08")] == [
        by_month(first)["2026-02"], by_month(second)["2026-08"]]
    assert _spent(store, principal) == 2.0


def test_mean_metric_is_released_within_bounds_with_an_interval(gate, store):
    """A mean is noisy sum / noisy count, clamped to the metric's bounds, costing the level."""
    _seed_districts(store, {"KGL-GAS": 400, "EAS-RWA": 600}, product="health.nutrition",
                    metric="nutrition_score", value_per_event=70.0)
    principal = _principal("policy_maker")
    query = _query(product="health.nutrition", metric="nutrition_score", start=MONTHS[4],
                   end=MONTHS[4])
    [exact] = exact_cells(gate, principal, query)
    assert exact.value == 70.0 and exact.n == 1000.0
    release = gate.release(principal, query)
    cell = release.cells[0]
    assert release.measure == "mean" and release.charged == Epsilon(1.0)
    assert 0.0 <= cell.lower <= cell.value <= cell.upper <= 100.0
    assert 60.0 < cell.value < 80.0  # loose: sum noise scale 600 against a sum of 70,000


def test_unapplied_consent_withdrawal_refuses_and_spends_nothing(gate, store):
    """A withdrawal newer than the cube blocks fresh releases until the cube is rebuilt."""
    from data.models import SubjectConsent

    principal = _principal("policy_maker")
    with store.write.begin() as session:
        session.add(SubjectConsent(tenant_id="kigali-east", pseudonym="p" * 32,
                                   vertical="health", status="withdrawn",
                                   changed_at=datetime(2026, 11, 21, 13, 0)))
    with pytest.raises(QueryRefused, match="consent withdrawal .* not yet applied"):
        gate.release(principal, _query())
    assert _spent(store, principal) == 0.0
    with store.write.begin() as session:  # what `veil materialize` does when it finishes
        version = session.get(ProductVersion, ("kigali-east", "health.vaccinations"))
        version.data_version, version.refreshed_at = 2, datetime(2026, 11, 21, 14, 0)
    assert gate.release(principal, _query()).data_version == 2


def test_concurrent_releases_admit_exactly_the_cap(gate, store):
    """32 concurrent distinct releases against a budget for exactly 10: 10 answered, 22 refused."""
    principal = _principal("researcher")  # ε cap 10, each query ε 1
    districts = [d.code for d in gate.catalog.districts_of("kigali-east")]
    vaccines = gate.catalog.domains["vaccine"]
    # disjoint filters, so no query can reuse another's periods for free
    queries = [_query(filters=(("district", districts[i % 10]), ("category", vaccines[i // 10])))
               for i in range(32)]
    outcomes: list[str] = []
    barrier = threading.Barrier(32)

    def attempt(query) -> None:
        barrier.wait()
        try:
            gate.release(principal, query)
            outcomes.append("ok")
        except BudgetExhausted:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt, args=(q,)) for q in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 22
    assert _spent(store, principal) == 10.0
    with store.read() as session:
        committed = session.scalars(select(BudgetEntry).where(BudgetEntry.state == "committed"))
        assert sum(e.epsilon for e in committed) == 10.0
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 10


# --- published snapshots (donor view) --------------------------------------------------------------

def test_published_snapshot_is_released_once_and_read_free_by_donors(gate, store):
    """Publishing charges the tenant's publication budget once; donors read it at no cost."""
    query = _query(level="dp_high", group_by=("month", "state"))
    release = gate.publish(tenant="kigali-east", query=query, requested_by="ops@cli")
    assert release.published and release.charged == Epsilon(0.5)
    donor = _principal("donor")
    seen = [gate.published(donor) for _ in range(5)]
    assert all(len(s) == 1 and s[0].id == release.id and s[0].cells == release.cells
               for s in seen)
    assert _spent(store, donor) == 0.0
    with store.read() as session:
        publication = session.scalars(select(BudgetAccount).where(
            BudgetAccount.principal == "publication@kigali-east")).one()
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "publish")).one()
    assert publication.spent == 0.5 and audit.principal == "ops@cli"
    assert gate.published(_principal("donor", tenant="south")) == []


def test_republishing_the_same_snapshot_costs_nothing(gate, store):
    """Publishing an identical query again reuses the stored release."""
    query = _query(level="dp_high")
    first = gate.publish(tenant="kigali-east", query=query, requested_by="ops")
    second = gate.publish(tenant="kigali-east", query=query, requested_by="ops")
    assert second.id == first.id and second.charged == Epsilon(0.0)
    with store.read() as session:
        assert session.scalars(select(BudgetAccount)).one().spent == 0.5


def test_a_gaussian_product_charges_its_converted_epsilon(gate, store, catalog):
    """Attendance declares Gaussian noise: the release charges the (ε, δ) conversion exactly."""
    from privacy._mechanisms import discrete_gaussian

    _seed_districts(store, {"KGL-GAS": 300, "EAS-RWA": 200}, product="education.attendance",
                    metric="days_present")
    principal = _principal("policy_maker")
    release = gate.release(principal, _query(product="education.attendance",
                                             metric="days_present", start=MONTHS[4],
                                             end=MONTHS[4]))
    # the privacy unit is a pupil's month (at most 5 records): its bound is the sensitivity
    bound = catalog.product("education.attendance").max_events_per_subject_per_month
    mechanism = discrete_gaussian(sensitivity=bound, epsilon=1.0, delta=catalog.policy.delta,
                                  confidence=0.95)
    assert release.charged.value == mechanism.epsilon
    assert release.charged_delta.value == catalog.policy.delta
    assert release.mechanism.startswith("discrete Gaussian")
    assert f"at ε = {mechanism.epsilon:g} with δ = 1e-07 for the whole release" in (
        release.guarantee)
    assert abs(release.cells[0].value - 500) < 6 * mechanism.scale


def test_the_budget_report_and_cli_state_delta_beside_epsilon(gate, store, catalog, capsys,
                                                              monkeypatch):
    """A Gaussian release's δ reaches the compliance budget report and `veil budgets`."""
    from types import SimpleNamespace

    from dashboard import cli
    from privacy import BudgetFilter

    _seed_districts(store, {"KGL-GAS": 300, "EAS-RWA": 200}, product="education.attendance",
                    metric="days_present")
    release = gate.release(_principal("policy_maker"), _attendance_h3_map())
    usage = gate.compliance.budget_usage(
        _principal("compliance_officer"), BudgetFilter(start=NOW.date(), end=NOW.date()))
    [line] = [x for x in usage.lines if x.product == "education.attendance"]
    assert line.delta_spent == release.charged_delta.value == catalog.policy.delta
    assert line.delta_fullest == pytest.approx(catalog.policy.delta / catalog.policy.delta_cap)
    [account] = [a for a in usage.accounts if a.product == "education.attendance"]
    assert (account.delta_spent, account.delta_cap) == (catalog.policy.delta,
                                                        catalog.policy.delta_cap)
    monkeypatch.setattr(cli, "open_store", lambda _settings: store)
    cli._cmd_budgets(SimpleNamespace(), SimpleNamespace())
    assert f"δ {catalog.policy.delta:.1e} of {catalog.policy.delta_cap:.1e}" in (
        capsys.readouterr().out)


def _attendance_h3_map(month=MONTHS[4]) -> Query:
    return _query(product="education.attendance", metric="days_present", start=month,
                  end=month, group_by=("month", "h3_cell"))


def _composed_gaussian(scales: list[float], *, delta: float):
    """The release's four levels composed by OpenDP in ρ and converted once, at ``delta``."""
    import opendp.prelude as dp

    levels = [dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T="i64")),
                                 dp.l2_distance(T="f64"), scale=s) for s in scales]
    return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(dp.c.make_composition(levels)),
                               delta)


def test_an_h3_gaussian_release_spends_delta_once_at_the_composed_epsilon(gate, store,
                                                                          catalog):
    """An H3 map of attendance (four Gaussian levels) is charged its OpenDP composition's
    (ε, δ) exactly: δ is the policy's once, not four times, and ε is below the levels' sum."""
    from privacy._engine import split_epsilon
    from privacy._mechanisms import discrete_gaussian

    _seed_districts(store, {"KGL-GAS": 300, "EAS-RWA": 200}, product="education.attendance",
                    metric="days_present")
    principal = _principal("policy_maker")
    release = gate.release(principal, _attendance_h3_map())
    delta = catalog.policy.delta
    levels = [discrete_gaussian(sensitivity=1, epsilon=share, delta=delta, confidence=0.95)
              for share in split_epsilon(1.0, 4)]  # dp_medium: h3_cell, district, state, tenant
    composed = _composed_gaussian([m.scale for m in levels], delta=delta)
    assert (release.charged.value, release.charged_delta.value) == composed.map(1.0)
    assert release.charged_delta.value == delta == 1e-7
    assert release.charged.value < sum(m.epsilon for m in levels) - 0.3  # ≈ 0.59, not 1.0
    assert (release.epsilon, release.delta) == (release.charged, release.charged_delta)
    assert f"at ε = {release.charged.value:g} with δ = 1e-07 for the whole release" in (
        release.guarantee)
    with store.read() as session:
        account = session.scalars(select(BudgetAccount)).one()
        entry = session.scalars(select(BudgetEntry)).one()
        stored = session.scalars(select(ReleaseRow)).one()
    assert (account.spent, account.delta_spent, account.delta_cap) == (
        release.charged.value, delta, catalog.policy.delta_cap)
    assert (entry.epsilon, entry.delta) == (release.charged.value, delta)
    assert (stored.epsilon, stored.delta) == (release.charged.value, delta)
    preview = gate.preview(principal, _attendance_h3_map(MONTHS[3]))
    assert (preview.epsilon, preview.delta) == (release.charged, release.charged_delta)
    reused = gate.release(principal, _attendance_h3_map())
    assert (reused.charged.value, reused.charged_delta.value) == (0.0, 0.0)
    assert reused.guarantee == release.guarantee


def test_the_delta_cap_refuses_with_requested_remaining_short_by(gate, store, catalog):
    """With less δ left in the window than a Gaussian release needs, the gate refuses, names
    requested / remaining / short-by for δ, and spends nothing."""
    from privacy import Delta

    _seed_districts(store, {"KGL-GAS": 300, "EAS-RWA": 200}, product="education.attendance",
                    metric="days_present")
    principal = _principal("policy_maker")
    Ledger(store).reserve(tenant=principal.tenant, principal=principal.subject,
                          role=principal.role, product="education.attendance",
                          epsilon=Epsilon(0.0), cap=20.0, delta=Delta(9.5e-7),
                          delta_cap=catalog.policy.delta_cap, today=NOW.date())
    status = gate.budget(principal, product="education.attendance")
    assert status.remaining == status.cap and status.delta_cap == Delta(1e-6)
    assert status.remaining_delta.value == pytest.approx(5e-8, rel=1e-9)
    with pytest.raises(BudgetExhausted, match=r"requested δ=1e-07, remaining δ=5e-08, "
                                              r"short by δ=5e-08\. Reuse a published"):
        gate.release(principal, _attendance_h3_map())
    with store.read() as session:
        assert session.scalars(select(BudgetAccount)).one().delta_spent == 9.5e-7
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 0
    # the authoritative conditional UPDATE refuses too (past the early check)
    with pytest.raises(BudgetExhausted, match=r"remaining δ=5e-08, short by δ=5e-08") as info:
        Ledger(store).reserve(tenant=principal.tenant, principal=principal.subject,
                              role=principal.role, product="education.attendance",
                              epsilon=Epsilon(0.5), cap=20.0, delta=Delta(1e-7),
                              delta_cap=catalog.policy.delta_cap, today=NOW.date())
    assert info.value.delta_short_by == pytest.approx(5e-8, rel=1e-9)
    # a Laplace product spends no δ: the same principal's ε budget still serves it
    assert gate.release(principal, _query(start=MONTHS[4], end=MONTHS[4])).charged_delta == (
        Delta(0.0))


def test_insight_correlates_two_verticals_by_district(gate, store):
    """D5: strongly related district values give r near 1 with an interval; same vertical refused."""
    districts = [d.code for d in gate.catalog.districts_of("kigali-east")]
    for product, metric, scale in (("education.attendance", "days_present", 1),
                                   ("social.grants", "disbursements", 2)):
        _seed_districts(store, {d: 200 + 150 * i * scale for i, d in enumerate(districts)},
                        product=product, metric=metric)
    principal = _principal("policy_maker")

    def by_district(product, metric):
        return _query(product=product, metric=metric, start=MONTHS[4], end=MONTHS[4],
                      group_by=("month", "district"))

    insight = gate.insight(principal, by_district("education.attendance", "days_present"),
                           by_district("social.grants", "disbursements"))
    assert len(insight.points) == 10 and insight.excluded == ()
    assert insight.r > 0.95 and insight.r_lower <= insight.r <= insight.r_upper
    again = gate.insight(principal, by_district("education.attendance", "days_present"),
                         by_district("social.grants", "disbursements"))
    assert (again.r, again.r_lower, again.r_upper) == (insight.r, insight.r_lower,
                                                       insight.r_upper)
    with pytest.raises(QueryRefused, match="joins two verticals"):
        gate.insight(principal, by_district("health.vaccinations", "doses"),
                     by_district("health.nutrition", "screenings"))


def test_events_placed_only_by_district_count_on_an_h3_map(gate, store, catalog):
    """Cube rows without a cell ("-") are measured in their district's unplaced cell."""
    from data.geo import geography

    cell = geography(catalog).cells_by_district["KGL-GAS"][0]
    with store.write.begin() as session:
        for h3_cell, n in ((cell, 30), ("-", 12)):
            session.add(CubeMonthly(
                tenant_id="kigali-east", product_id="health.vaccinations", metric="doses",
                period=MONTHS[5], state="KGL", district="KGL-GAS", h3_cell=h3_cell,
                age_bucket="0-5", gender="female", category="-", n_events=n, value_sum=0.0))
    query = _query(level="dp_low", start=MONTHS[5], end=MONTHS[5],
                   group_by=("month", "h3_cell"))
    principal = _principal("policy_maker")
    cells = {c.key[1]: c for c in exact_cells(gate, principal, query)}  # without noise
    assert cells[cell].value == 30.0
    assert cells["KGL-GAS:unplaced"].value == 12.0 + 250 // 2  # plus the base seed's KGL-GAS
    assert cells["kigali-east"].value == 30 + 12 + 250
    release = gate.release(principal, query)
    unplaced = {c.key[1]: c for c in release.cells}["KGL-GAS:unplaced"]
    # measured and released like any cell (its value is scaled with the others to fit
    # under the measured total, so only its release is asserted here)
    assert unplaced.status == "noisy" and unplaced.lower <= unplaced.value <= unplaced.upper
    totals = release.totals()[("2026-06",)]
    # the measured total, never raised to the parts; the parts fit under it
    assert 232 < totals.total < 352  # 292 with noise of scale ≤ 9
    assert totals.parts == pytest.approx(sum(c.value for c in release.cells
                                             if c.value is not None and c.status != "total"))
    assert totals.parts + totals.remainder == pytest.approx(totals.total)
    assert totals.remainder >= 0
