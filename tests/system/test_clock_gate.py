"""The gate's data clock and what is built on it, on both stores (issue 13).

One small demo generated as of 16 Nov 2026: November holds data up to the 15th (partial).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from data.demo import generate
from data.materialize import materialize
from dashboard.cli import publish_defaults
from privacy import Gate, Principal, Query

AS_OF = date(2026, 11, 16)
NOW = datetime(2026, 11, 16, 9, 0)


@pytest.fixture
def demo_store(store, catalog):
    generate(store, catalog, size="small", seed=7, secret="clock-test-secret", as_of=AS_OF)
    materialize(store, catalog)
    return store


def _principal(role: str = "policy_maker", tenant: str = "kigali-east") -> Principal:
    return Principal(subject=f"{role}@{tenant}", display_name=role, role=role, tenant=tenant,
                     source="demo")


def test_the_clock_reads_the_data_not_the_calendar(demo_store, catalog):
    """Data to 15 Nov: October is the latest complete month, November partial; a year later
    the same, and the product is flagged stale."""
    for now in (NOW, NOW + timedelta(days=365)):
        gate = Gate(demo_store, catalog, clock=lambda now=now: now)
        clock = gate.data_clock(_principal(), product="health.vaccinations")
        assert clock.as_of == date(2026, 11, 15)
        assert clock.latest_complete == date(2026, 10, 1)
        assert clock.partial == date(2026, 11, 1)
        assert clock.first_month == date(2024, 11, 1)  # 24 complete months, then the partial
        assert clock.longest() == 24 and clock.max_months == 24
    assert not Gate(demo_store, catalog, clock=lambda: NOW).data_clock(
        _principal(), product="health.vaccinations").stale
    assert clock.stale and "days old" in clock.breaches[-1]


def test_an_ad_hoc_product_offers_the_gates_window_limit(demo_store, catalog):
    """Mastery is not a published series: 3 months at most, and the gate accepts them."""
    gate = Gate(demo_store, catalog, clock=lambda: NOW)
    clock = gate.data_clock(_principal(), product="education.mastery")
    assert clock.longest() == 3
    query = clock.query(metric="assessments", level="dp_medium", months=12)
    assert len(query.months) == 3 and query.end == date(2026, 10, 1)
    gate.release(_principal(), query)  # not refused
    longer = Query.ending(product="education.mastery", metric="assessments",
                          level="dp_medium", months=4, end=date(2026, 10, 1))
    from privacy import QueryRefused

    with pytest.raises(QueryRefused, match="at most 90 days"):
        gate.release(_principal(), longer)


def test_donor_snapshots_end_at_the_latest_complete_month(demo_store, catalog):
    """`veil publish` never publishes the partial (or an empty) month as data."""
    gate = Gate(demo_store, catalog, clock=lambda: NOW + timedelta(days=40))
    releases = publish_defaults(gate, requested_by="test")
    assert releases
    assert {r.query.end for r in releases} == {date(2026, 10, 1)}
    assert {len(r.query.months) for r in releases} == {12}


def test_window_totals_give_every_district_its_own_value(demo_store, catalog):
    """Per month, most districts of the small demo are rolled up and no correlation can be
    drawn; one value per district for the window gives one for (nearly) all of them."""
    gate = Gate(demo_store, catalog, clock=lambda: NOW)

    def series(product, metric, period):
        return Query.ending(product=product, metric=metric, level="dp_medium", months=6,
                            end=date(2026, 10, 1), group_by=("month", "district"),
                            period=period)

    monthly = gate.insight(_principal(), series("education.attendance", "days_present", "month"),
                           series("social.grants", "disbursements", "month"))
    window = gate.insight(_principal(), series("education.attendance", "days_present", "window"),
                          series("social.grants", "disbursements", "window"))
    districts = len(catalog.districts_of("kigali-east"))
    assert len(monthly.points) < districts // 2
    assert len(window.points) >= districts - 1 and window.r is not None
    assert window.r_lower <= window.r <= window.r_upper
    assert {c.key[0] for c in window.x.cells} == {"2026-05..2026-10"}
    # charged once per series, like any release; the stored answer is reused
    again = gate.insight(_principal(), series("education.attendance", "days_present", "window"),
                         series("social.grants", "disbursements", "window"))
    assert again.x.reused and again.y.reused and again.r == window.r


def test_the_clock_is_read_once_per_data_version(demo_store, catalog, monkeypatch):
    """Reading the newest events scans a month of rows: a page view reuses the clock until a
    data version changes (or a minute passes)."""
    import privacy._clock as gate_module

    calls = []
    real = gate_module.newest_events
    monkeypatch.setattr(gate_module, "newest_events",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    now = [NOW]
    gate = Gate(demo_store, catalog, clock=lambda: now[0])
    first = gate.data_clock(_principal(), product="health.vaccinations")
    assert gate.data_clock(_principal(), product="health.vaccinations") == first
    assert len(calls) == 1
    materialize(demo_store, catalog, tenant="kigali-east", product="social.grants")
    gate.data_clock(_principal(), product="health.vaccinations")  # another product's version
    assert len(calls) == 2
    now[0] += timedelta(minutes=2)
    gate.data_clock(_principal(), product="health.vaccinations")
    assert len(calls) == 3
