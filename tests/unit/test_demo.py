"""The demo generator's promises about the data it loads (SPEC B5), on the embedded store.

One small demo is generated per module; every test reads it and none changes it. Properties
that must also hold on PostgreSQL (determinism, domains, bounds, cubes) are in
tests/system/test_demo_materialize.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date, datetime

import pytest
from sqlalchemy import func, select

from data.bootstrap import init_store
from data.catalog import Catalog, load_catalog
from data.config import load_settings
from data.demo import DemoReport, demo_window, generate, pseudonym
from data.engine import Store, open_store
from data.errors import InvalidInput
from data.models import (
    VERTICAL_EVENT_MODELS,
    ConsentEvent,
    Registration,
    Subject,
    SubjectConsent,
)

from tests.pinned import DEMO_AS_OF

SECRET = "unit-test-secret-0123456789"
WINDOW_START, WINDOW_END = demo_window(DEMO_AS_OF)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[tuple[Store, Catalog]]:
    settings = load_settings({"VEIL_VAR_DIR": str(tmp_path_factory.mktemp("demo")),
                              "VEIL_DEMO_MODE": "1"})
    store = open_store(settings)
    catalog = load_catalog(settings.catalog_dir)
    init_store(store, catalog, demo_accounts=False)
    try:
        yield store, catalog
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def demo(env) -> tuple[Store, Catalog, DemoReport, list[tuple[str, int, int]]]:
    store, catalog = env
    calls: list[tuple[str, int, int]] = []
    report = generate(store, catalog, size="small", seed=7, secret=SECRET, as_of=DEMO_AS_OF,
                      progress=lambda stage, done, total: calls.append((stage, done, total)))
    return store, catalog, report, calls


@pytest.fixture(scope="module")
def events(demo) -> list:
    """Every stored event of the three vertical tables, as plain rows."""
    store = demo[0]
    rows = []
    with store.read() as session:
        for model in VERTICAL_EVENT_MODELS.values():
            rows.extend(session.execute(select(*model.__table__.columns)).all())
    return rows


def _of(events: list, product: str) -> list:
    return [e for e in events if e.product_id == product]


def test_unknown_size_is_refused_with_the_allowed_values(env):
    """An unknown size names the sizes that exist."""
    store, catalog = env
    with pytest.raises(InvalidInput, match="'huge'.*small, medium, large"):
        generate(store, catalog, size="huge", secret=SECRET, as_of=DEMO_AS_OF)


def test_a_secret_is_required(env):
    """Without a secret there is no way to key pseudonyms, so nothing is generated."""
    store, catalog = env
    with pytest.raises(InvalidInput, match="secret"):
        generate(store, catalog, secret="", as_of=DEMO_AS_OF)


def test_small_size_loads_50_to_80_thousand_events(demo):
    """The small demo is big enough to be realistic and small enough for the test suite."""
    _, _, report, _ = demo
    assert 50_000 <= report.events <= 80_000


def test_report_counts_match_the_store(demo, events):
    """The report's per-table and per-tenant counts are what the store holds."""
    store, catalog, report, _ = demo
    with store.read() as session:
        for model in (*VERTICAL_EVENT_MODELS.values(), Subject, ConsentEvent, SubjectConsent,
                      Registration):
            stored = session.scalar(select(func.count()).select_from(model))
            assert report.tables[model.__tablename__] == stored, model.__tablename__
        for tenant in catalog.tenants:
            events = sum(session.scalar(select(func.count()).select_from(m).where(
                m.tenant_id == tenant.id)) for m in VERTICAL_EVENT_MODELS.values())
            assert report.tenants[tenant.id]["events"] == events
    assert sum(report.products.values()) == report.events
    assert report.seconds > 0


def test_tenant_volume_follows_demo_scale(demo):
    """A tenant with a larger demo_scale gets more events."""
    _, catalog, report, _ = demo
    by_scale = sorted(catalog.tenants, key=lambda t: t.demo_scale)
    volumes = [report.tenants[t.id]["events"] for t in by_scale]
    assert volumes == sorted(volumes)


def test_progress_is_reported_up_to_each_stage_total(demo):
    """Progress callbacks are monotone per stage and end at their total."""
    _, _, _, calls = demo
    stages = defaultdict(list)
    for stage, done, total in calls:
        stages[stage].append((done, total))
    assert {"subjects", "events"} <= set(stages)
    for stage, seen in stages.items():
        dones = [d for d, _ in seen]
        assert dones == sorted(dones), stage
        assert seen[-1][0] == seen[-1][1], stage


def test_pseudonym_is_the_keyed_hmac_of_the_raw_id():
    """pseudonym() is hmac-sha256(secret, raw) cut to 32 hex characters."""
    expected = hmac.new(b"k" * 20, b"south-person-3", hashlib.sha256).hexdigest()[:32]
    assert pseudonym("k" * 20, "south-person-3") == expected


def test_subjects_are_stored_under_pseudonyms_only(demo):
    """Stored subject keys are keyed pseudonyms of the raw ids, never the raw ids."""
    store, catalog, _, _ = demo
    with store.read() as session:
        keys = set(session.scalars(select(Subject.pseudonym)))
    assert all(re.fullmatch(r"[0-9a-f]{32}", key) for key in keys)
    assert not any("person" in key for key in keys)
    for tenant in catalog.tenants:
        assert pseudonym(SECRET, f"{tenant.id}-person-0") in keys


def test_times_are_floored_to_15_minutes_inside_the_window(events):
    """ts sits on a 15-minute boundary, day and month derive from it, all inside the window."""
    for event in events:
        assert event.ts.minute % 15 == 0 and event.ts.second == 0 and event.ts.microsecond == 0
        assert event.day == event.ts.date()
        assert event.month == event.day.replace(day=1)
        assert WINDOW_START <= event.day <= WINDOW_END


def test_every_month_of_both_years_has_events(events):
    """Two full years of monthly data, with visible seasonality."""
    per_month = Counter(e.month for e in _of(events, "education.attendance"))
    assert len(per_month) == 24
    # School holidays in August are far quieter than a term month.
    assert per_month[date(2025, 8, 1)] < 0.5 * per_month[date(2025, 10, 1)]


def test_subjects_live_in_their_tenants_districts(demo, events):
    """Subjects and their events stay in the states their tenant operates in."""
    store, catalog, _, _ = demo
    with store.read() as session:
        homes = session.execute(select(Subject.tenant_id, Subject.district)).all()
    allowed = {t.id: {d.code for d in catalog.districts_of(t.id)} for t in catalog.tenants}
    assert all(district in allowed[tenant] for tenant, district in homes)
    assert all(e.district in allowed[e.tenant_id] for e in events)


def test_age_groups_fit_each_product(events):
    """Vaccinations and nutrition reach under-fives, school products pupils, grants adults."""
    expected = {
        "health.vaccinations": {"0-5"},
        "health.nutrition": {"0-5"},
        "education.attendance": {"6-12", "13-18"},
        "education.mastery": {"6-12", "13-18"},
        "social.grants": {"19-35", "36-60", "60+"},
    }
    for product, ages in expected.items():
        rows = _of(events, product)
        share = sum(e.age_bucket in ages for e in rows) / len(rows)
        assert share > 0.75, (product, share)


def test_consent_is_granted_per_vertical_before_any_activity(demo, events):
    """Each subject has a grant for each vertical, no later than their first event."""
    store, catalog, _, _ = demo
    with store.read() as session:
        grants = session.execute(select(ConsentEvent.tenant_id, ConsentEvent.pseudonym,
                                        ConsentEvent.vertical, ConsentEvent.at)
                                 .where(ConsentEvent.status == "granted")).all()
        subjects = session.scalar(select(func.count()).select_from(Subject))
    granted_at = {(t, p, v): at for t, p, v, at in grants}
    assert len(granted_at) == len(grants) == 3 * subjects
    for event in events:
        vertical = catalog.product(event.product_id).vertical
        assert granted_at[(event.tenant_id, event.pseudonym, vertical)] <= event.ts


def test_about_two_percent_withdraw_and_current_consent_shows_it(demo):
    """~2% of subjects withdraw one vertical; SubjectConsent holds the latest status."""
    store, _, _, _ = demo
    with store.read() as session:
        withdrawals = session.execute(select(ConsentEvent.tenant_id, ConsentEvent.pseudonym,
                                             ConsentEvent.vertical, ConsentEvent.at)
                                      .where(ConsentEvent.status == "withdrawn")).all()
        current = {(c.tenant_id, c.pseudonym, c.vertical): c
                   for c in session.scalars(select(SubjectConsent))}
        subjects = session.scalar(select(func.count()).select_from(Subject))
    assert 0.01 < len(withdrawals) / subjects < 0.03
    for tenant, key, vertical, at in withdrawals:
        assert current[(tenant, key, vertical)].status == "withdrawn"
        assert current[(tenant, key, vertical)].changed_at == at
    withdrawn_keys = {(t, k, v) for t, k, v, _ in withdrawals}
    assert all(c.status == "granted" for k, c in current.items() if k not in withdrawn_keys)


def test_withdrawn_subjects_have_events_only_before_withdrawal(demo, events):
    """No event of a withdrawn subject in that vertical is at or after the withdrawal."""
    store, catalog, _, _ = demo
    with store.read() as session:
        withdrawn_at = {(t, k, v): at for t, k, v, at in session.execute(
            select(ConsentEvent.tenant_id, ConsentEvent.pseudonym, ConsentEvent.vertical,
                   ConsentEvent.at).where(ConsentEvent.status == "withdrawn"))}
    before = 0
    for event in events:
        vertical = catalog.product(event.product_id).vertical
        at = withdrawn_at.get((event.tenant_id, event.pseudonym, vertical))
        if at is not None:
            assert event.ts < at
            before += 1
    assert before > 0  # withdrawn subjects did have events before they withdrew


def test_values_exist_exactly_where_a_metric_needs_them(demo, events):
    """Products with sum/mean metrics carry values, mostly inside bounds; the others none."""
    _, catalog, _, _ = demo
    for product in catalog.products:
        if product.kind != "metric_set":
            continue
        bounds = [m.value_bounds for m in product.metrics if m.measure in {"sum", "mean"}]
        values = [e.value for e in _of(events, product.id)]
        if not bounds:
            assert all(v is None for v in values), product.id
            continue
        lo, hi = bounds[0]
        if product.event_categories:  # per-type events: only the types a value metric reads
            valued = {m.event_type for m in product.metrics if m.measure in {"sum", "mean"}}
            rows = _of(events, product.id)
            assert all(e.value is None for e in rows if e.event_type not in valued), product.id
            values = [e.value for e in rows if e.event_type in valued]
        assert all(v is not None for v in values), product.id
        outside = sum(not lo <= v <= hi for v in values)
        # A few out-of-bounds values make clamping matter; most are realistic.
        assert 0 < outside < 0.03 * len(values), (product.id, outside)


def test_scores_improve_gently_over_the_two_years(events):
    """Nutrition and mastery scores trend upward: the last six months beat the first six."""
    for product in ("health.nutrition", "education.mastery"):
        rows = _of(events, product)
        early = [e.value for e in rows if e.month < date(2025, 5, 1)]
        late = [e.value for e in rows if e.month >= date(2026, 5, 1)]
        gain = sum(late) / len(late) - sum(early) / len(early)
        assert 2 < gain < 20, (product, gain)


def test_cells_are_skewed_so_small_cells_exist(events):
    """Some H3 cells have under 5 events in a month while central cells have many."""
    per_cell = Counter((e.product_id, e.month, e.h3_cell) for e in events)
    assert min(per_cell.values()) < 5
    assert max(per_cell.values()) >= 25


def test_registrations_have_agents_and_a_verification_backlog(demo):
    """Thousands of registrations per tenant, a handful of agents per district, ~15% unverified."""
    store, catalog, _, _ = demo
    with store.read() as session:
        registrations = list(session.scalars(select(Registration)))
        homes = {(s.tenant_id, s.pseudonym): s.district
                 for s in session.scalars(select(Subject))}
    per_tenant = Counter(r.tenant_id for r in registrations)
    assert all(per_tenant[t.id] >= 1_000 for t in catalog.tenants)
    unverified = sum(r.status == "unverified" for r in registrations) / len(registrations)
    assert 0.10 <= unverified <= 0.20
    assert {r.status for r in registrations} == {"verified", "unverified"}
    agents = defaultdict(set)
    for r in registrations:
        assert re.fullmatch(r"AG-\d{3}", r.agent_code)
        assert homes[(r.tenant_id, r.pseudonym)] == r.district
        assert r.birth_date < r.registered_at.date()
        assert 1 <= r.household_size <= 14
        assert r.gender in catalog.domains["gender"]
        assert datetime.combine(WINDOW_START, datetime.min.time()) <= r.registered_at
        agents[r.district].add(r.agent_code)
    assert all(2 <= len(codes) <= 8 for codes in agents.values())


def test_health_services_events_draw_categories_from_their_own_types_domain(demo, events):
    """GovSahay's service events: each type's categories from its own domain (none for tele-
    consultations and wellness logs), every type present, most triages advising self-care."""
    _, catalog, _, _ = demo
    product = catalog.product("health.services")
    rows = _of(events, product.id)
    by_type: dict[str, Counter] = defaultdict(Counter)
    for e in rows:
        by_type[e.event_type][e.category] += 1
    assert set(by_type) == set(product.event_types)
    for event_type, categories in by_type.items():
        domain = catalog.domains[product.domain_of(event_type)]
        allowed = {None} if domain == ("-",) else set(domain)
        assert set(categories) <= allowed, (event_type, categories)
    triage = by_type["triage_completed"]
    assert set(triage) == {"self_care", "phc", "emergency"}
    assert triage.most_common(1)[0][0] == "self_care"
    assert all(e.value is not None for e in rows if e.event_type == "daily_wellness_logged")
    neuro = {e.category for e in _of(events, "health.neuroscreen")}
    assert neuro == {"low", "medium", "high"}
