"""Distinct-person metrics of education.sessions (issue 20, S2-15): weekly active learners and
learner status (new / returning / churned), built from the events on both stores, and what
their releases cost.

The privacy unit is one learner's month. A learner counts once per month-aligned week (days
1–7, 8–14, 15–21, 22–end), so one person-month moves the month's weekly vector by at most 4;
learner status reads the month before, so one person-month moves months M and M+1 by at most
2 each, and a release charges the month before each month it computes.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import delete, func, insert, select

from data.bootstrap import demo_username, init_store
from data.catalog import MetricSpec, MetricVersion, PeriodPolicy, PlannerPolicy
from data.engine import open_store
from data.geo import geography
from data.materialize import STATUSES, _distinct_counts, materialize
from data.models import (
    CubeMonthly,
    CubePending,
    EducationEvent,
    PeriodBudget,
    PeriodCharge,
    ProductVersion,
    ReleasePeriod,
    RetentionPurge,
    SubjectConsent,
)
from privacy import Gate, Principal, Query
from privacy._mechanisms import discrete_laplace

TENANT = "kigali-east"
PRODUCT = "education.sessions"
NOW = datetime(2026, 11, 21, 12, 0)
JAN, FEB, MAR, APR, MAY = (date(2026, m, 1) for m in range(1, 6))
DEC = date(2025, 12, 1)


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def places(catalog) -> list[tuple[str, str]]:
    """(district, H3 cell) of the tenant: two cells in each of its first three districts."""
    cells = geography(catalog).cells_by_district
    districts = [d.code for d in catalog.districts_of(TENANT)][:3]
    return [(d, c) for d in districts for c in cells[d][:2]]


def _event(who: str, day: date, place: tuple[str, str], *, slot: int = 0,
           subject: str = "literacy", minutes: float = 30.0) -> dict:
    district, cell = place
    return dict(event_id=uuid.uuid4().hex, tenant_id=TENANT, product_id=PRODUCT,
                event_type="learning_session", pseudonym=who,
                ts=datetime(day.year, day.month, day.day, 14) + timedelta(minutes=15 * slot),
                day=day, month=day.replace(day=1), h3_cell=cell, district=district,
                age_bucket="6-12", gender="female", category=subject, value=minutes)


def _add(store, events: list[dict]) -> None:
    with store.write.begin() as session:
        session.execute(insert(EducationEvent.__table__), events)


def _cube(store, metric: str) -> dict[tuple, int]:
    """metric's cube: (period, district, h3_cell, category) → n (age and gender are fixed)."""
    with store.read() as session:
        rows = session.execute(select(
            CubeMonthly.period, CubeMonthly.district, CubeMonthly.h3_cell, CubeMonthly.category,
            CubeMonthly.n_events).where(CubeMonthly.tenant_id == TENANT,
                                        CubeMonthly.product_id == PRODUCT,
                                        CubeMonthly.metric == metric)).all()
    out: Counter = Counter()
    for period, district, cell, category, n in rows:
        out[(date.fromisoformat(str(period)[:10]), district, cell, category)] += int(n)
    return dict(out)


def _rebuild(store, catalog) -> None:
    materialize(store, catalog, tenant=TENANT, product=PRODUCT)


def _week(day: date) -> int:
    return min((day.day - 1) // 7, 3)


def _reference(events: list[dict]) -> tuple[dict, dict]:
    """Weekly active learners and learner status of ``events``, computed plainly in Python."""
    ordered = sorted(events, key=lambda e: (e["ts"], e["event_id"]))
    weekly: Counter = Counter()
    seen: set = set()
    first: dict = {}
    last: dict = {}
    for e in ordered:
        place = (e["district"], e["h3_cell"])
        if (e["pseudonym"], e["month"], _week(e["day"])) not in seen:
            seen.add((e["pseudonym"], e["month"], _week(e["day"])))
            weekly[(e["month"], *place, "-")] += 1
        first.setdefault((e["pseudonym"], e["month"]), place)
        last[(e["pseudonym"], e["month"])] = place
    active = {month for _, month in first}
    status: Counter = Counter()
    for (who, month), place in first.items():
        before = (who, _month_before(month)) in first
        status[(month, *place, "returning" if before else "new")] += 1
    for (who, month), place in last.items():
        following = _month_after(month)
        if following in active and (who, following) not in first:
            status[(following, *place, "churned")] += 1
    return dict(weekly), dict(status)


def _month_before(month: date) -> date:
    return (month - timedelta(days=1)).replace(day=1)


def _month_after(month: date) -> date:
    return (month + timedelta(days=32)).replace(day=1)


def _l1(before: dict, after: dict) -> Counter:
    """L1 distance of two cube vectors, per month."""
    out: Counter = Counter()
    for key in before.keys() | after.keys():
        out[key[0]] += abs(before.get(key, 0) - after.get(key, 0))
    return Counter({month: d for month, d in out.items() if d})


# --- exact values on a tiny hand-made dataset ------------------------------------------------


def test_a_learner_counts_once_per_week_in_the_place_of_their_first_session(store, catalog,
                                                                           places):
    """Three sessions in one week count once, where the first was; the month's weeks are
    days 1–7, 8–14, 15–21 and 22 to its end (day 31 is in week 4)."""
    p1, p2 = places[0], places[2]
    _add(store, [
        _event("a", date(2026, 3, 2), p1, subject="literacy"),
        _event("a", date(2026, 3, 3), p2, subject="numeracy"),
        _event("a", date(2026, 3, 5), p2, subject="science"),
        _event("a", date(2026, 3, 16), p2),
        _event("b", date(2026, 3, 7), p1), _event("b", date(2026, 3, 8), p1),
        _event("b", date(2026, 3, 22), p2), _event("b", date(2026, 3, 29), p1),
        _event("c", date(2026, 3, 31), p1),
    ])
    _rebuild(store, catalog)
    assert _cube(store, "weekly_active_learners") == {
        (MAR, *p1, "-"): 4,   # a week 1, b weeks 1 and 2, c week 4
        (MAR, *p2, "-"): 2,   # a week 3, b week 4 (its first session that week)
    }
    assert sum(_cube(store, "sessions").values()) == 9  # the event count is unchanged


def test_learner_status_is_new_returning_or_churned_against_the_month_before(store, catalog,
                                                                            places):
    """new: this month, not the one before; returning: both; churned: the month before, not
    this one, placed by their last session then; a month nobody is active in has no rows."""
    p1, p2, p3 = places[0], places[2], places[4]
    _add(store, [
        _event("a", date(2026, 1, 5), p1), _event("a", date(2026, 2, 3), p1),
        _event("a", date(2026, 2, 20), p2),                 # last February session: p2
        _event("b", date(2026, 2, 10), p3), _event("b", date(2026, 3, 11), p1),
        _event("c", date(2026, 1, 6), p2), _event("c", date(2026, 3, 1), p3),
        _event("d", date(2026, 1, 9), p3), _event("d", date(2026, 1, 9), p1, slot=2),
    ])
    _rebuild(store, catalog)
    assert _cube(store, "learner_status") == {
        (JAN, *p1, "new"): 1, (JAN, *p2, "new"): 1, (JAN, *p3, "new"): 1,
        (FEB, *p1, "returning"): 1,                         # a
        (FEB, *p3, "new"): 1,                               # b
        (FEB, *p2, "churned"): 1,                           # c, last seen in January at p2
        (FEB, *p1, "churned"): 1,                           # d, whose last session was at p1
        (MAR, *p1, "returning"): 1,                         # b
        (MAR, *p2, "churned"): 1,                           # a, last seen at p2
        (MAR, *p3, "new"): 1,                               # c: back after a break
    }  # April: nobody active, so nobody is churned into a month without data
    status = _cube(store, "learner_status")
    for metric, kept in (("new_learners", "new"), ("returning_learners", "returning"),
                         ("churned_learners", "churned")):
        # one status on its own: exactly learner_status's cells of it, whatever the subject
        assert _cube(store, metric) == {key: n for key, n in status.items() if key[-1] == kept}


def test_a_rebuild_split_in_two_halves_counts_as_one(store, catalog, places):
    """On SQLite a full rebuild counts persons in two halves of the months at once, cut where
    half the events fall on each side — here after February (data.materialize._split_month).
    The cube must be what one count gives: the later half reads the month before its first
    (y returns in March, x churns into March) but writes none of it."""
    p1, p2 = places[0], places[2]
    events = [
        _event("z", date(2026, 1, 5), p1), _event("w", date(2026, 1, 6), p2),
        _event("x", date(2026, 2, 3), p1), _event("y", date(2026, 2, 4), p2),
        _event("y", date(2026, 3, 2), p1), _event("v", date(2026, 3, 3), p1),
    ]
    _add(store, events)
    _rebuild(store, catalog)
    weekly, status = _reference(events)
    assert status[(MAR, *p1, "returning")] == 1 and status[(MAR, *p1, "churned")] == 1
    assert _cube(store, "learner_status") == status
    assert _cube(store, "weekly_active_learners") == weekly
    assert _cube(store, "churned_learners") == {
        key: n for key, n in status.items() if key[-1] == "churned"}


def test_the_counts_read_one_product_s_months_through_their_index(settings_for, catalog):
    """SQLite keeps no statistics: a person-ordered window made it read the events through
    the (tenant, pseudonym, day) index — every event of the tenant's vertical, each a lookup
    in the table, to keep one product's (the large demo's sessions month rebuild took 18 s
    for it). Every distinct metric's read, of a month or of every month, must seek the
    (tenant, product, month) index instead."""
    sqlite_store = open_store(settings_for("sqlite"))
    try:
        init_store(sqlite_store, catalog, demo_accounts=False)
        product = catalog.product(PRODUCT)
        distinct = [m for m in product.metrics if m.measure == "distinct"]
        assert {m.lookback_months for m in distinct} == {0, 1}
        with sqlite_store.engine.connect() as connection:
            for metric in distinct:
                for months in ((MAR,), None):
                    statement = _distinct_counts(
                        tenant=TENANT, product=product, metric=metric, anti_join=False,
                        months=months, after=None, every_status=True).compile(
                        dialect=connection.dialect, compile_kwargs={"literal_binds": True})
                    plan = [row[-1] for row in connection.exec_driver_sql(
                        f"EXPLAIN QUERY PLAN {statement}")]
                    reads = [line for line in plan if "education_events" in line]
                    assert reads and all("ix_education_events_period (tenant_id=? AND "
                                         "product_id=?" in line for line in reads), (
                        metric.id, months, plan)
    finally:
        sqlite_store.dispose()


def test_a_rebuild_reports_the_rows_it_wrote(store, catalog, places):
    """The job's row count is the cube's, distinct metrics included (SQLite's driver counts no
    rows for an INSERT rendered with its CTEs first)."""
    _add(store, [_event("a", date(2026, 1, 5), places[0]),
                 _event("a", date(2026, 2, 3), places[1]),
                 _event("b", date(2026, 2, 10), places[2])])
    [full] = materialize(store, catalog, tenant=TENANT, product=PRODUCT)
    with store.read() as session:
        rows = session.scalar(select(func.count()).select_from(CubeMonthly).where(
            CubeMonthly.tenant_id == TENANT, CubeMonthly.product_id == PRODUCT))
        by_status = session.scalar(select(func.count()).select_from(CubeMonthly).where(
            CubeMonthly.product_id == PRODUCT, CubeMonthly.metric == "learner_status"))
    assert by_status > 0 and full.rows == rows


def test_the_status_domain_is_what_the_cube_writes(catalog):
    """The catalog's learner_status domain holds exactly the statuses materialisation writes."""
    assert catalog.domains["learner_status"] == STATUSES
    metric = catalog.product(PRODUCT).metric("learner_status")
    assert (metric.category_domain, metric.distinct_per, metric.lookback_months) == (
        "learner_status", "month", 1)


def test_a_metric_without_categories_adds_up_every_category(store, catalog, places):
    """A count metric declaring category_domain "none" over events with subjects has one
    row per key, "-", holding every subject's events (the catalog's MetricSpec plumbing)."""
    product = catalog.product(PRODUCT)
    every = MetricSpec(id="all_sessions", title="All sessions", measure="count",
                       event_type="learning_session",
                       versions=(MetricVersion(1, date(2024, 1, 1), "All sessions."),),
                       category_domain="none")
    changed = dataclasses.replace(product, metrics=product.metrics + (every,))
    products = tuple(changed if p.id == PRODUCT else p for p in catalog.products)
    custom = dataclasses.replace(catalog, products=products,
                                 _product_index={p.id: p for p in products})
    _add(store, [_event("a", date(2026, 3, 2), places[0], subject=s)
                 for s in ("literacy", "numeracy", "science")]
         + [_event("b", date(2026, 3, 9), places[0], subject="science")])
    materialize(store, custom, tenant=TENANT, product=PRODUCT)
    assert _cube(store, "all_sessions") == {(MAR, *places[0], "-"): 4}
    assert _cube(store, "sessions") == {(MAR, *places[0], "literacy"): 1,
                                        (MAR, *places[0], "numeracy"): 1,
                                        (MAR, *places[0], "science"): 2}


# --- the DP audit: one person-month moves the vectors by at most the derived sensitivity -----


def _population(rng: random.Random, places) -> list[dict]:
    """40 learners over January–April 2026, each month at random with 1–20 sessions (at most
    4 a day), and one learner "w" active in every week of every month."""
    events = []
    for i in range(40):
        for month in (JAN, FEB, MAR, APR):
            if rng.random() < 0.45:
                events += _sessions(rng, f"p{i}", month, rng.randint(1, 20), places)
    for month in (JAN, FEB, MAR, APR):
        events += _sessions(rng, "w", month, 20, places)
    return events


def _sessions(rng: random.Random, who: str, month: date, many: int, places) -> list[dict]:
    """``many`` sessions of ``who`` in ``month``, within the bounds (4 a day), spread over
    the month's days; with 20 they cover every week."""
    days = [month.replace(day=d) for d in range(1, 29)]
    per_day: Counter = Counter()
    out = []
    for n in range(many):
        day = days[(n * 7 + n // 4) % 28] if many == 20 else rng.choice(days)
        while per_day[day] >= 4:
            day = rng.choice(days)
        per_day[day] += 1
        out.append(_event(who, day, rng.choice(places), slot=rng.randrange(16),
                          subject=rng.choice(("literacy", "numeracy", "science"))))
    return out


def test_one_person_month_moves_each_vector_by_at_most_its_sensitivity(store, catalog, places):
    """Remove, or add, one learner's month (seeded, many learners): the month's weekly
    vector moves by exactly their active weeks (≤ 4) and no other month; learner status moves
    months M and M+1 by ≤ 2 each (≤ 4 in all) and no other; both match a plain reference."""
    rng = random.Random(20)
    events = _population(rng, places)
    _add(store, events)
    _rebuild(store, catalog)
    weekly, status = _cube(store, "weekly_active_learners"), _cube(store, "learner_status")
    assert (weekly, status) == _reference(events)
    held = sorted({(e["pseudonym"], e["month"]) for e in events if e["pseudonym"] != "w"})
    trials = [("w", FEB)] + rng.sample(held, 7)
    worst = 0
    for who, month in trials:
        mine = [e for e in events if e["pseudonym"] == who and e["month"] == month]
        with store.write.begin() as session:
            session.execute(delete(EducationEvent).where(
                EducationEvent.pseudonym == who, EducationEvent.month == month))
        _rebuild(store, catalog)
        without = [e for e in events if e not in mine]
        weekly_without = _cube(store, "weekly_active_learners")
        status_without = _cube(store, "learner_status")
        assert (weekly_without, status_without) == _reference(without)
        moved = _l1(weekly, weekly_without)
        assert set(moved) <= {month}
        assert moved[month] == len({_week(e["day"]) for e in mine}) <= 4
        moved = _l1(status, status_without)
        assert set(moved) <= {month, _month_after(month)}
        assert all(d <= 2 for d in moved.values()) and sum(moved.values()) <= 4
        worst = max(worst, sum(moved.values()))
        _add(store, mine)  # back as it was, for the next trial
    assert worst == 4  # "w" in February: returning → churned, and March returning → new

    # adding a new learner with the monthly bound's 20 sessions over all weeks and districts
    newcomer = _sessions(rng, "n", MAR, 20, places)
    assert len({e["district"] for e in newcomer}) > 1 and len({_week(e["day"])
                                                               for e in newcomer}) == 4
    _add(store, newcomer)
    _rebuild(store, catalog)
    assert _l1(weekly, _cube(store, "weekly_active_learners")) == {MAR: 4}
    assert _l1(status, _cube(store, "learner_status")) == {MAR: 1, APR: 1}  # new, churned


# --- consent, incremental rebuilds and retention ---------------------------------------------


def test_a_withdrawn_learner_is_in_neither_metric(store, catalog, places):
    """A learner who withdrew consent for education counts in no week and no status."""
    events = [_event("a", date(2026, 1, 5), places[0]), _event("a", date(2026, 2, 5), places[0]),
              _event("b", date(2026, 1, 6), places[1]), _event("b", date(2026, 2, 9), places[1]),
              _event("b", date(2026, 2, 16), places[1])]
    _add(store, events)
    with store.write.begin() as session:
        session.add(SubjectConsent(tenant_id=TENANT, pseudonym="a", vertical="education",
                                   status="withdrawn", changed_at=NOW))
    _rebuild(store, catalog)
    weekly, status = _reference([e for e in events if e["pseudonym"] != "a"])
    assert _cube(store, "weekly_active_learners") == weekly
    assert _cube(store, "learner_status") == status == {(JAN, *places[1], "new"): 1,
                                                        (FEB, *places[1], "returning"): 1}


def test_an_incremental_rebuild_of_a_month_rebuilds_the_month_after_it(store, catalog, places):
    """A late February session turns the learner's March from new into returning: only
    February is marked, and the incremental cube equals a full rebuild's."""
    _add(store, [_event("c", date(2026, 1, 6), places[0]),
                 _event("c", date(2026, 3, 2), places[0]),
                 _event("e", date(2026, 2, 6), places[1]),
                 _event("e", date(2026, 3, 6), places[1])])
    _rebuild(store, catalog)
    assert _cube(store, "learner_status")[(MAR, *places[0], "new")] == 1
    _add(store, [_event("c", date(2026, 2, 12), places[0])])
    with store.write.begin() as session:
        session.add(CubePending(tenant_id=TENANT, product_id=PRODUCT, month=FEB,
                                reason="ingest", marked_at=NOW))
    [job] = materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    assert job.months == (FEB,)
    incremental = {m.id: _cube(store, m.id) for m in catalog.product(PRODUCT).metrics}
    assert incremental["learner_status"][(MAR, *places[0], "returning")] == 1
    _rebuild(store, catalog)
    assert incremental == {m.id: _cube(store, m.id) for m in catalog.product(PRODUCT).metrics}


def test_after_a_purge_the_month_reading_it_keeps_its_status_rows(store, catalog, places):
    """Once January's raw events are purged, January's rows and February's learner status
    (which read January) stay final through full and incremental rebuilds."""
    _add(store, [_event("a", date(2026, 1, 5), places[0]), _event("a", date(2026, 2, 5), places[0]),
                 _event("d", date(2026, 1, 7), places[1]), _event("b", date(2026, 2, 8), places[1]),
                 _event("b", date(2026, 3, 8), places[1])])
    _rebuild(store, catalog)
    before = {m.id: _cube(store, m.id) for m in catalog.product(PRODUCT).metrics}
    with store.write.begin() as session:
        session.execute(delete(EducationEvent).where(EducationEvent.month == JAN))
        session.add(RetentionPurge(tenant_id=TENANT, product_id=PRODUCT, month=JAN, rows=2,
                                   retention_days=31, purged_at=NOW))
    _rebuild(store, catalog)
    assert {m.id: _cube(store, m.id) for m in catalog.product(PRODUCT).metrics} == before
    with store.write.begin() as session:
        session.add_all([CubePending(tenant_id=TENANT, product_id=PRODUCT, month=month,
                                     reason="ingest", marked_at=NOW) for month in (FEB, MAR)])
    materialize(store, catalog, tenant=TENANT, product=PRODUCT, incremental=True)
    assert {m.id: _cube(store, m.id) for m in catalog.product(PRODUCT).metrics} == before


# --- what releases cost ----------------------------------------------------------------------


def _maker() -> Principal:
    return Principal(subject=demo_username("policy_maker", TENANT), display_name="maker",
                     role="policy_maker", tenant=TENANT, source="demo")


def _spent(store) -> dict[date, float]:
    with store.read() as session:
        rows = session.execute(select(PeriodBudget.period, PeriodBudget.spent).where(
            PeriodBudget.tenant_id == TENANT, PeriodBudget.product_id == PRODUCT)).all()
    return {date.fromisoformat(str(period)[:10]): spent for period, spent in rows}


@pytest.fixture
def gate(store, catalog, places) -> Gate:
    rng = random.Random(3)
    _add(store, _population(rng, places))
    _rebuild(store, catalog)
    return Gate(store, catalog, clock=lambda: NOW)


def test_a_status_release_charges_the_month_before_each_month_it_computes(gate, store):
    """learner_status for January–March draws once on December to March, each its ε; then
    April alone draws on March and April; a stored month is reused free."""
    query = Query(product=PRODUCT, metric="learner_status", level="dp_medium", start=JAN,
                  end=MAR, group_by=("month", "category"))
    release = gate.release(_maker(), query)
    epsilon = release.charged.value
    assert epsilon > 0
    assert _spent(store) == {DEC: pytest.approx(epsilon), JAN: pytest.approx(epsilon),
                             FEB: pytest.approx(epsilon), MAR: pytest.approx(epsilon)}
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(PeriodCharge)) == 4
    gate.release(_maker(), dataclasses.replace(query, start=APR, end=APR))
    assert _spent(store) == {DEC: pytest.approx(epsilon), JAN: pytest.approx(epsilon),
                             FEB: pytest.approx(epsilon), MAR: pytest.approx(2 * epsilon),
                             APR: pytest.approx(epsilon)}
    again = gate.release(_maker(), dataclasses.replace(query, start=FEB, end=APR))
    assert again.charged.value == 0.0 and _spent(store)[MAR] == pytest.approx(2 * epsilon)


def test_a_weekly_release_charges_its_months_only(gate, store):
    """Weeks never cross a month: weekly active learners for February–March draws on those
    two months only."""
    release = gate.release(_maker(), Query(product=PRODUCT, metric="weekly_active_learners",
                                           level="dp_medium", start=FEB, end=MAR,
                                           group_by=("month", "category")))
    assert _spent(store) == {FEB: pytest.approx(release.charged.value),
                             MAR: pytest.approx(release.charged.value)}
    assert release.measure == "count"  # released as counts: persons, whole numbers
    assert {c.key[2] for c in release.cells} == {"-"}  # one category: every subject


def test_distinct_metrics_are_noised_for_sensitivity_4(gate, catalog):
    """Both distinct metrics' noise is calibrated to L1 sensitivity 4 (the event counts' to
    the monthly bound, 20), at the same ε."""
    epsilon = catalog.policy.levels["dp_medium"].epsilon
    confidence = catalog.policy.interval_confidence
    scales = {}
    for metric in ("weekly_active_learners", "learner_status", "sessions"):
        plan = gate._plan(_maker(), Query(product=PRODUCT, metric=metric, level="dp_medium",
                                          start=MAR, end=MAR))
        assert plan.loss.epsilon.value == pytest.approx(epsilon)
        scales[metric] = plan.measured[0].count.scale
    expected = discrete_laplace(sensitivity=4, epsilon=epsilon, confidence=confidence).scale
    assert scales == {"weekly_active_learners": pytest.approx(expected),
                      "learner_status": pytest.approx(expected),
                      "sessions": pytest.approx(5 * expected)}
    # and loosely, the noise drawn: a release's finest cells stay within a few scales
    release = gate.release(_maker(), Query(product=PRODUCT, metric="weekly_active_learners",
                                           level="dp_medium", start=MAR, end=MAR))
    [cell] = [c for c in release.cells if c.value is not None]
    assert cell.noise_scale == pytest.approx(expected)


def test_every_status_release_charges_what_it_computed_and_the_months_before(gate, store,
                                                                            catalog):
    """Fresh, reused and derived status releases alike: a release draws on exactly the months
    it computed afresh and the month before each (a derived or stored month costs nothing,
    its measurement having paid both when it was computed)."""
    # derive whenever a stored measurement answers (the policy's accuracy rule aside)
    gate._catalog = dataclasses.replace(catalog, policy=dataclasses.replace(
        catalog.policy, planner=PlannerPolicy(derive=True, max_width_ratio=100.0,
                                              max_relative_half_width=0.5),
        periods=PeriodPolicy(epsilon=1e6)))  # rounds of fresh noise on the same months
    views = [dict(start=JAN, end=MAR, group_by=("month", "district")),
             dict(start=JAN, end=MAR, group_by=("month",)),
             dict(start=FEB, end=APR, group_by=("month", "state")),
             dict(start=JAN, end=MAR, group_by=("month",), period="window")]
    derived = 0
    # whether a derived view is accurate enough depends on the noise drawn: a new data version
    # (fresh noise, nothing stored) until one was derived; each round's accounting is exact
    for _round in range(8):
        if derived:
            break
        derived += _release_views(gate, store, views)
        with store.write.begin() as session:
            session.get(ProductVersion, (TENANT, PRODUCT)).data_version += 1
    assert derived > 0  # the tenant view of January–March came free from the districts


def _release_views(gate, store, views) -> int:
    derived = 0
    for view in views:
        release = gate.release(_maker(), Query(product=PRODUCT, metric="learner_status",
                                               level="dp_low", **view))
        derived += release.derived
        with store.read() as session:
            computed = session.execute(select(ReleasePeriod.period).where(
                ReleasePeriod.release_id == release.id, ReleasePeriod.derived.is_(False))
            ).scalars().all()
            charged = session.execute(select(PeriodBudget.period).join(
                PeriodCharge, PeriodCharge.budget_id == PeriodBudget.id).where(
                PeriodCharge.release_id == release.id)).scalars().all()
        computed = {date.fromisoformat(str(m)[:10]) for m in computed}
        if view.get("period") == "window" and computed:
            computed = {JAN, FEB, MAR}  # one measurement of all the window's months
        expected = {m for month in computed for m in (month, _month_before(month))}
        assert {date.fromisoformat(str(m)[:10]) for m in charged} == expected, view
        assert (release.charged.value > 0) == bool(computed)
    return derived
