"""Deriving coarser views from stored measurements instead of spending (issue 16), both stores.

A fresh count release stores its finest level's noisy counts per month; a coarser view (a
state or the tenant from districts, a filter, fewer breakdowns, a window from its months) is
their sum, charged nothing, when every count it shows meets the planner's accuracy rule.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime

import pytest
from sqlalchemy import func, select

from data.catalog import PlannerPolicy
from data.models import BudgetAccount, CubeMonthly, PeriodBudget, ProductVersion, ReleasePeriod
from privacy import Gate, Principal, Query

NOW = datetime(2026, 11, 21, 12, 0)
MONTHS = [date(2026, m, 1) for m in range(1, 13)]
#: kigali-east's districts and their states (catalog/geography.toml): the public key set
DISTRICTS = {**{d: "KGL" for d in ("KGL-NYR", "KGL-GAS", "KGL-KIC")},
             **{d: "EAS" for d in ("EAS-RWA", "EAS-KAY", "EAS-KIR", "EAS-NGO", "EAS-BUG",
                                   "EAS-NYA", "EAS-GAT")}}
#: the districts with data
SEEDED = ("KGL-GAS", "KGL-KIC", "EAS-RWA", "EAS-KAY")
LOOSE = PlannerPolicy(derive=True, max_width_ratio=100.0, max_relative_half_width=0.5)


def _principal(role: str = "policy_maker", who: str = "maker@kigali-east") -> Principal:
    return Principal(subject=who, display_name=role, role=role, tenant="kigali-east",
                     source="demo")


def _seed(store, *, count: int = 400, data_version: int = 1) -> None:
    with store.write.begin() as session:
        for month in MONTHS:
            for district in SEEDED:
                state = DISTRICTS[district]
                for gender in ("female", "male"):
                    session.add(CubeMonthly(
                        tenant_id="kigali-east", product_id="health.vaccinations",
                        metric="doses", period=month, state=state, district=district,
                        h3_cell="-", age_bucket="0-5", gender=gender, category="polio",
                        n_events=count, value_sum=0.0))
        session.add(ProductVersion(tenant_id="kigali-east", product_id="health.vaccinations",
                                   data_version=data_version, refreshed_at=NOW,
                                   cube_rows=len(MONTHS) * len(SEEDED) * 2))


def _gate(store, catalog, planner: PlannerPolicy = LOOSE) -> Gate:
    policy = dataclasses.replace(catalog.policy, planner=planner)
    return Gate(store, dataclasses.replace(catalog, policy=policy), clock=lambda: NOW)


@pytest.fixture
def gate(store, catalog) -> Gate:
    _seed(store)
    return _gate(store, catalog)


def _query(months=(MONTHS[0], MONTHS[-1]), level="dp_medium", **overrides) -> Query:
    return Query(product="health.vaccinations", metric="doses", level=level,
                 start=months[0], end=months[1], **overrides)


def _spent(store) -> tuple[float, float]:
    """(ε spent by viewers' allowances, ε drawn from all months' lifetimes)."""
    with store.read() as session:
        return (session.scalar(select(func.coalesce(func.sum(BudgetAccount.spent), 0.0))),
                session.scalar(select(func.coalesce(func.sum(PeriodBudget.spent), 0.0))))


def _measured(store) -> dict[tuple[str, str], int]:
    """The stored finest noisy counts: (month, district) → noisy count (genders summed)."""
    out: dict[tuple[str, str], int] = {}
    with store.read() as session:
        for period, measurement in session.execute(select(
                ReleasePeriod.period, ReleasePeriod.measurement)).all():
            if not measurement:
                continue
            for row in measurement["counts"]:
                key = (period.isoformat(), row[0])
                out[key] = out.get(key, 0) + row[-1]
    return out


def test_states_and_tenant_are_derived_from_districts_for_free(gate, store):
    maker = _principal()
    districts = gate.release(maker, _query(group_by=("month", "district")))
    assert districts.charged.value > 0 and districts.derived == 0
    spent = _spent(store)
    measured = _measured(store)
    assert len(measured) == len(MONTHS) * len(DISTRICTS)

    for group_by in (("month", "state"), ("month",)):
        preview = gate.preview(maker, _query(group_by=group_by))
        assert preview.reused and preview.derived and preview.epsilon.value == 0
        release = gate.release(maker, _query(group_by=group_by))
        assert release.charged.value == 0 and release.derived == len(MONTHS)
        assert release.mechanism.startswith("derived")
        assert _spent(store) == spent  # nothing drawn from any allowance or lifetime
        for cell in release.cells:
            if cell.status != "noisy":
                continue
            month = _month_of(release, cell.key[0])
            if len(group_by) == 1:
                # the tenant is the districts view's own total (its best estimate: it also
                # weighs in the top's measurement), with the same interval
                total = next(c for c in districts.cells
                             if c.status == "total" and c.key[0] == cell.key[0])
                assert (cell.value, cell.lower, cell.upper) == (total.value, total.lower,
                                                                 total.upper)
            else:
                # a state is exactly the sum of its districts' stored noisy counts
                assert cell.value == sum(measured[(month, d)] for d, s in DISTRICTS.items()
                                         if s == cell.key[1])
            assert cell.lower < cell.value < cell.upper
    # asked again, the derived release is stored: the same numbers, free
    again = gate.release(maker, _query(group_by=("month", "state")))
    assert again.reused and again.charged.value == 0


def _month_of(release, label: str) -> str:
    return next(m.isoformat() for m, name in release.query.periods.items() if name == label)


def test_a_filter_and_fewer_breakdowns_are_derived(gate, store):
    maker = _principal()
    gate.release(maker, _query(group_by=("month", "district", "gender")))
    spent = _spent(store)
    by_district = gate.release(maker, _query(group_by=("month", "district")))
    one = gate.release(maker, _query(group_by=("month", "district"),
                                     filters=(("district", "EAS-RWA"),)))
    women = gate.release(maker, _query(group_by=("month", "state"),
                                       filters=(("gender", "female"),)))
    assert [r.derived for r in (by_district, one, women)] == [12, 12, 12]
    assert _spent(store) == spent
    # the filtered district is its stored noisy counts summed over gender; in the unfiltered
    # view the same count is at most that (parts are only ever scaled down under the total)
    measured = _measured(store)
    shown = {c.key[0]: c.value for c in one.cells if c.status == "noisy"}
    assert len(shown) == len(MONTHS)
    for label, value in shown.items():
        assert value == measured[(_month_of(one, label), "EAS-RWA")]
    for cell in by_district.cells:
        if cell.key[1] == "EAS-RWA" and cell.status == "noisy":
            assert cell.value <= shown[cell.key[0]] + 1e-9


def test_a_window_is_not_summed_from_its_months(gate, store):
    """Summed from its months, every area of a window would carry √months × a fresh window's
    noise and small areas would roll up; insights need one value per area, so a window is
    released (and paid) afresh, and then reused like any release."""
    maker = _principal()
    gate.release(maker, _query(group_by=("month", "district")))
    before = _spent(store)
    query = _query(months=(MONTHS[3], MONTHS[5]), group_by=("month", "district"),
                   period="window")
    assert not gate.preview(maker, query).reused
    window = gate.release(maker, query)
    assert window.derived == 0 and window.charged.value > 0
    assert _spent(store)[0] > before[0]
    # a coarser window of the same months is derived from the stored window
    states = gate.release(maker, _query(months=(MONTHS[3], MONTHS[5]),
                                        group_by=("month", "state"), period="window"))
    assert states.derived == 1 and states.charged.value == 0


def test_a_view_that_would_be_too_inaccurate_is_released_fresh(store, catalog):
    _seed(store, count=40)
    strict = _gate(store, catalog, PlannerPolicy(derive=True, max_width_ratio=1.0,
                                                 max_relative_half_width=0.0))
    maker = _principal()
    strict.release(maker, _query(group_by=("month", "district")))
    before = _spent(store)
    # the tenant from 4 districts: its noise is 4 district noises, wider than one fresh count
    assert not strict.preview(maker, _query()).reused
    tenant = strict.release(maker, _query())
    assert tenant.derived == 0 and tenant.charged.value > 0
    assert _spent(store)[0] > before[0]


def test_off_switch_and_other_data_version_and_role_levels(store, catalog):
    _seed(store)
    maker = _principal()
    off = _gate(store, catalog, PlannerPolicy(derive=False))
    off.release(maker, _query(group_by=("month", "district"), level="dp_low"))
    assert off.release(maker, _query(level="dp_low")).derived == 0
    gate = _gate(store, catalog)
    # a researcher may not use dp_low, so a dp_low measurement answers nothing for it
    researcher = _principal("researcher", "researcher@kigali-east")
    fresh = gate.release(researcher, _query(group_by=("month", "state")))
    assert fresh.derived == 0 and fresh.charged.value > 0
    # the policy maker may: its dp_high view is derived from the dp_low districts
    assert gate.release(maker, _query(group_by=("month", "state"),
                                      level="dp_high")).derived == len(MONTHS)
    # new data: the old measurements describe old data and answer nothing
    with store.write.begin() as session:
        session.query(ProductVersion).update({ProductVersion.data_version: 2})
    renewed = gate.release(maker, _query(group_by=("month", "state"), level="dp_high"))
    assert renewed.derived == 0 and renewed.charged.value > 0


def test_a_stronger_level_is_derived_from_a_weaker_one(gate, store):
    maker = _principal()
    gate.release(maker, _query(group_by=("month", "district"), level="dp_low"))
    spent = _spent(store)
    medium = gate.release(maker, _query(group_by=("month", "district"), level="dp_medium"))
    assert medium.derived == len(MONTHS) and _spent(store) == spent


def test_concurrent_derivations_of_one_view_agree_and_spend_nothing(gate, store):
    """Eight viewers opening the same derivable view at once: one derivation is stored, the
    others find it (or retry onto it); everyone sees the same numbers and nothing is spent."""
    import threading

    gate.release(_principal(), _query(group_by=("month", "district")))
    spent = _spent(store)
    results, errors = [], []

    def open_view(i: int) -> None:
        try:
            results.append(gate.release(_principal(who=f"viewer-{i}@kigali-east"),
                                        _query(group_by=("month", "state"))))
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=open_view, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({r.digest for r in results}) == 1
    assert all(r.charged.value == 0 for r in results)
    assert _spent(store) == spent
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(ReleasePeriod).where(
            ReleasePeriod.derived.is_(True))) == len(MONTHS)
