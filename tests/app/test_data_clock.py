"""Pages default to the data's clock, not the calendar's (issue 13).

Every page that shows numbers says how far the data reaches ("Data as of …") and defaults to
windows ending at the latest complete month with data; a partial month is shown only when asked
for, and marked. Moving the wall clock a year ahead changes none of that (it only makes the
data stale, which the page says). Spending controls are disabled when the budget cannot pay.
"""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.context import PRINCIPAL_KEY, SIGNED_IN_AT_KEY, now
from data import clock
from data.config import PROJECT_ROOT, load_settings
from data.engine import open_store
from tests.app.conftest import build_demo, copy_demo
from privacy import Epsilon, Principal
from privacy._budget import Ledger
from tests.pinned import DEMO_LATEST, PAGES_NOW

AS_OF_TEXT = "Data as of 31 Oct 2026"


@pytest.fixture(scope="module")
def clock_var(demo_var, tmp_path_factory) -> Path:
    """A private copy of the shared demo store: these tests release the default views, which
    other page tests expect to release themselves."""
    return copy_demo(demo_var, tmp_path_factory.mktemp("clock-var"))


@pytest.fixture
def demo_env(clock_var, monkeypatch) -> Path:
    monkeypatch.setenv("VEIL_VAR_DIR", str(clock_var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    return clock_var


def _open(page: str, role: str, *, subject: str | None = None, tenant: str = "kigali-east",
          query_params: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / f"{page}.py"), default_timeout=60)
    at.session_state[PRINCIPAL_KEY] = Principal(
        subject=subject or f"{role.replace('_', '.')}@{tenant}.demo", display_name=role,
        role=role, tenant=tenant, source="demo")
    at.session_state[SIGNED_IN_AT_KEY] = now()
    for key, value in (query_params or {}).items():
        at.query_params[key] = value
    return at.run()


def _captions(at) -> str:
    return " ".join(c.value for c in at.caption)


def _click(at, prefix: str) -> AppTest:
    """Release the view if it is not stored yet (another test may have released it)."""
    for button in at.button:
        if button.label.startswith(prefix):
            button.click().run()
            break
    assert not at.exception
    return at


def _chart(at) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def _last_month(spec: dict) -> str:
    """The last month that carries a value in any trace of a monthly chart ("YYYY-MM")."""
    months = [x for trace in spec["data"] if trace.get("yaxis", "y") == "y"
              for x, y in zip(trace.get("x", []), trace.get("y", []) or [])
              if isinstance(x, str) and y is not None]
    return max(months)[:7]


# --- defaults follow the data ------------------------------------------------------------------


def test_trends_default_window_ends_at_the_latest_complete_month(demo_env):
    """The default 12 months end with October 2026, the demo's last complete month."""
    at = _open("trends", "policy_maker")
    assert AS_OF_TEXT in _captions(at)
    _click(at, "Show trend")
    assert _last_month(_chart(at)) == "2026-10"


def test_map_defaults_to_the_latest_complete_month(demo_env):
    """The month picker opens on October 2026 and offers no month after the data."""
    at = _open("map", "researcher")
    assert AS_OF_TEXT in _captions(at)
    [month] = [box for box in at.selectbox if box.label == "Month"]
    assert month.value == DEMO_LATEST
    assert month.options[0] == "October 2026"  # the newest offered: no empty month after it


def test_donor_snapshots_end_at_the_latest_complete_month(demo_env):
    """Published snapshots cover the months up to October 2026, never an empty month."""
    at = _open("donor", "donor")
    assert AS_OF_TEXT in _captions(at)
    assert "November 2025 – October 2026" in _captions(at)
    assert _last_month(_chart(at)) == "2026-10"


def test_insights_defaults_produce_a_correlation(demo_env):
    """The default comparison gives r with its interval on the small demo."""
    at = _open("insights", "policy_maker")
    assert AS_OF_TEXT in _captions(at)
    _click(at, "Compare")
    text = " ".join(m.value for m in at.markdown)
    assert "Correlation across" in text and "interval" in text
    assert not any("Too few districts" in w.value for w in at.warning)


def test_bias_check_defaults_to_months_with_data(demo_env):
    """The bias check's default months are the latest complete ones (never an empty month)."""
    at = _open("compliance", "compliance_officer", query_params={"section": "Bias check"})
    assert AS_OF_TEXT in _captions(at)
    _click(at, "Release the bias-check dataset")
    [month] = [box for box in at.selectbox if box.label == "Month"]
    assert month.options[0] == "2026-10" and month.value == "2026-10"


def test_exports_page_says_how_far_the_data_reaches(demo_env):
    """A metric export's window is built from the data clock too."""
    at = _open("exports", "policy_maker")
    assert AS_OF_TEXT in _captions(at)


# --- sliders offer only what the gate accepts ----------------------------------------------


def _span(window) -> int:
    start, end = window
    return (end.year - start.year) * 12 + end.month - start.month + 1


def test_trends_range_stops_at_the_gates_limit_for_an_ad_hoc_product(demo_env):
    """Education mastery is not a published series: at most 3 months (90 days) per query; a
    longer range is shortened to 3 months from the end that did not move."""
    at = _open("trends", "policy_maker")
    options = at.selectbox[0].options
    at.selectbox[0].select_index(next(i for i, o in enumerate(options)
                                      if o.startswith("Assessments"))).run()
    [months] = [s for s in at.select_slider if s.label == "Months"]
    assert months.value == (date(2026, 8, 1), date(2026, 10, 1))
    months.set_value((date(2026, 1, 1), date(2026, 10, 1))).run()
    [months] = [s for s in at.select_slider if s.label == "Months"]
    assert months.value == (date(2026, 1, 1), date(2026, 3, 1))
    assert any("At most 3 months per view" in c.value for c in at.caption)
    _click(at, "Show trend")
    assert not any("refused" in w.value for w in at.warning)


def test_insights_range_stops_at_the_gates_limit(demo_env):
    """Comparing with an ad-hoc product offers at most its 3 months."""
    at = _open("insights", "policy_maker")
    options = at.selectbox[0].options
    at.selectbox[0].select_index(next(i for i, o in enumerate(options)
                                      if o.startswith("Assessments"))).run()
    [months] = [s for s in at.select_slider if s.label == "Months"]
    assert _span(months.value) == 3
    months.set_value((date(2025, 11, 1), date(2026, 10, 1))).run()
    [months] = [s for s in at.select_slider if s.label == "Months"]
    # the start was dragged: the window keeps it and ends 3 months later
    assert months.value == (date(2025, 11, 1), date(2026, 1, 1))


def test_year_earlier_needs_a_year_of_data_before_the_window(demo_env):
    """Two years of data: the year-earlier comparison offers at most 12 months, both inside it."""
    at = _open("trends", "researcher")
    at.radio[0].set_value("Compare with a year earlier").run()
    [months] = [s for s in at.select_slider if s.label == "Months"]
    assert len(months.options) == 12 and _span(months.value) == 12


# --- the wall clock does not move what is shown ------------------------------------------


def test_a_year_later_the_pages_still_show_the_data_and_say_it_is_stale(demo_env, monkeypatch):
    """With the clock a year ahead the defaults are unchanged and the page flags stale data."""
    monkeypatch.setattr(clock, "utcnow", lambda: PAGES_NOW + timedelta(days=365))
    at = _open("trends", "policy_maker")
    assert not at.exception
    assert AS_OF_TEXT in _captions(at)
    assert any("may be out of date" in w.value for w in at.warning)
    _click(at, "Show trend")
    assert _last_month(_chart(at)) == "2026-10"
    at = _open("map", "researcher")
    [month] = [box for box in at.selectbox if box.label == "Month"]
    assert month.value == DEMO_LATEST


# --- a partial month is shown only when asked for, and marked ---------------------------------


@pytest.fixture(scope="module")
def partial_var(tmp_path_factory) -> Path:
    """A small demo generated on 16 Nov 2026: November holds data to the 15th only."""
    return build_demo(tmp_path_factory.mktemp("partial-var"), as_of=date(2026, 11, 16))


@pytest.fixture
def partial_env(partial_var, monkeypatch) -> Path:
    monkeypatch.setenv("VEIL_VAR_DIR", str(partial_var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    return partial_var


def test_a_partial_month_is_left_out_unless_asked_for_and_then_marked(partial_env):
    """Data to 15 Nov: trends end in October; with the box ticked November is 'partial'."""
    at = _open("trends", "policy_maker")
    assert "Data as of 15 Nov 2026" in _captions(at)
    _click(at, "Show trend")
    assert _last_month(_chart(at)) == "2026-10"
    [partial] = [c for c in at.checkbox if "partial" in c.label]
    assert partial.value is False and "November 2026" in partial.label
    partial.check().run()
    _click(at, "Show trend")
    spec = _chart(at)
    assert _last_month(spec) == "2026-11"
    assert any("partial" in (t.get("name") or "") for t in spec["data"])


def test_the_map_labels_a_partial_month_and_opens_on_a_complete_one(partial_env):
    at = _open("map", "researcher")
    [month] = [box for box in at.selectbox if box.label == "Month"]
    assert month.value == date(2026, 10, 1)
    assert month.options[0] == "November 2026 (partial, to 15 Nov)"


# --- spending controls ---------------------------------------------------------------------


def test_the_release_button_is_disabled_when_the_budget_cannot_pay(demo_env, monkeypatch):
    """ε 0.25 left of 10, a view costing ε 0.5 (dp_high: a view no other test of the shared
    demo releases, since releases are shared between viewers): the button is disabled and
    says short by ε 0.25."""
    pinned = PAGES_NOW
    subject = "nearly.spent@kigali-east.demo"
    # a view computed afresh: the stored donor snapshots (states, dp_high) would otherwise
    # answer the tenant's trend for free (privacy._derive)
    from privacy import Gate
    monkeypatch.setattr(Gate, "_derive", lambda self, *args, **kwargs: {})
    settings = load_settings({"VEIL_VAR_DIR": str(demo_env), "VEIL_DEMO_MODE": "1"})
    store = open_store(settings)
    try:
        Ledger(store).reserve(tenant="kigali-east", principal=subject, role="researcher",
                              product="health.vaccinations", epsilon=Epsilon(9.75),
                              cap=10.0, today=pinned.date())
    finally:
        store.dispose()
    at = _open("trends", "researcher", subject=subject)
    next(s for s in at.selectbox if s.label == "Privacy level").set_value("dp_high").run()
    [button] = [b for b in at.button if b.label.startswith("Show trend")]
    assert "costs ε 0.5" in button.label
    assert button.disabled
    assert "short by ε 0.25" in _captions(at) + " ".join(
        str(b.proto.help) for b in at.button)


# --- totals agree across map levels and pages --------------------------------------------------


def _total(at) -> tuple[float, float, float]:
    """The tenant total and its interval from the map's caption."""
    import re

    [text] = [c.value for c in at.caption if " total " in c.value and "interval" in c.value]
    total, lower, upper = re.search(
        r"total ([\d,]+) \(95% interval ([\d,]+) – ([\d,]+)\)", text).groups()
    return tuple(float(v.replace(",", "")) for v in (total, lower, upper))


def test_the_tenant_total_agrees_on_both_map_levels_and_with_trends(demo_env):
    """October's tenant total on the district map, the H3 map and the Trends series agree
    within their intervals (the H3 total was 6× the district total before issue 13). A policy
    maker: researchers see H3 cells only generalised to districts (issue 15.6)."""
    at = _open("map", "policy_maker")
    _click(at, "Show map")
    districts = _total(at)
    [areas] = [box for box in at.selectbox if box.label == "Areas"]
    areas.set_value("h3_cell").run()
    _click(at, "Show map")
    cells = _total(at)
    assert "probability at most" in _captions(at)  # the legend states the empty-cell rate
    trends = _open("trends", "policy_maker")
    _click(trends, "Show trend")
    [series] = [t for t in _chart(trends)["data"] if t.get("name") == "Doses administered"]
    october = dict(zip(series["x"], series["y"]))
    trend_total = next(v for x, v in october.items() if x.startswith("2026-10"))
    # the series' own 95% half-width at ε = 1 (sensitivity 3) is under 10
    trend = (trend_total, trend_total - 10, trend_total + 10)
    for (a, a_low, a_high), (b, b_low, b_high) in ((districts, cells), (districts, trend),
                                                   (cells, trend)):
        # each interval is ±1.96 σ: the difference of two unbiased estimates stays within 4 σ
        # of zero but for a chance well under 1 in 1,000 (the H3 total was 6× before)
        sigma = math.hypot((a_high - a_low) / 3.92, (b_high - b_low) / 3.92)
        assert abs(a - b) <= 4 * sigma + 1
    # the parts drawn never exceed the total
    assert cells[0] > 0 and districts[0] > 0


def test_the_map_offers_h3_cells_only_to_a_role_that_sees_them(demo_env):
    """Issue 15.6: researchers see H3 cells generalised to districts, so their map offers
    districts only; policy makers get both."""
    options = {}
    for role in ("researcher", "policy_maker"):
        at = _open("map", role)
        [areas] = [box for box in at.selectbox if box.label == "Areas"]
        options[role] = list(areas.options)
    assert options["researcher"] == ["Districts"]
    assert options["policy_maker"] == ["Districts", "H3 cells (~5 km²)"]


# --- donor snapshots follow the data (issue 14) --------------------------------------------------


def test_donor_sees_a_withdrawn_snapshot_as_being_republished(demo_var, tmp_path, monkeypatch):
    """After a consent withdrawal and rebuild, the health snapshots' old numbers are gone from
    the donor page, which says they are being republished; other series still show."""
    from sqlalchemy import select

    from data.catalog import load_catalog
    from data.consent import withdraw_consent
    from data.models import HealthEvent, SubjectConsent

    var = copy_demo(demo_var, tmp_path)
    monkeypatch.setenv("VEIL_VAR_DIR", str(var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    settings = load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"})
    store = open_store(settings)
    try:
        with store.read() as session:  # a consenting person with vaccinations in the window
            subject = session.scalars(
                select(HealthEvent.pseudonym)
                .join(SubjectConsent, (SubjectConsent.tenant_id == HealthEvent.tenant_id)
                      & (SubjectConsent.pseudonym == HealthEvent.pseudonym)
                      & (SubjectConsent.vertical == "health"))
                .where(HealthEvent.tenant_id == "kigali-east",
                       HealthEvent.product_id == "health.vaccinations",
                       HealthEvent.month >= date(2026, 1, 1),
                       SubjectConsent.status == "granted")
                .order_by(HealthEvent.pseudonym)).first()
        withdraw_consent(store, load_catalog(settings.catalog_dir), tenant="kigali-east",
                         pseudonym=subject, vertical="health")
    finally:
        store.dispose()
    at = _open("donor", "donor")
    assert not at.exception
    notes = " ".join(i.value for i in at.info)
    assert "Doses administered — Vaccinations administered: being republished" in notes
    [series] = [box for box in at.selectbox if box.label == "Series"]
    assert not any("Vaccinations" in str(option) for option in series.options)
