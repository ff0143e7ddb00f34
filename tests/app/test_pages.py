"""The insight pages render for their personas on small demo data, through the gate only."""

from __future__ import annotations

import json
from datetime import date

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.context import PRINCIPAL_KEY, SIGNED_IN_AT_KEY, now
from data.config import PROJECT_ROOT
from privacy import Principal


def _open(page: str, role: str, tenant: str = "kigali-east") -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / f"{page}.py"), default_timeout=60)
    at.session_state[PRINCIPAL_KEY] = Principal(
        subject=f"{role.replace('_', '.')}@{tenant}.demo", display_name=role, role=role,
        tenant=tenant, source="demo")
    at.session_state[SIGNED_IN_AT_KEY] = now()
    return at.run()


def test_case_worker_lists_unverified_registrations_with_birthdates(demo_env):
    """D3: record-level list, own tenant, birthdates shown, household size masked."""
    at = _open("lists", "case_worker")
    assert not at.exception
    frame = at.dataframe[0].value
    assert 0 < len(frame) <= 50
    assert "Birth date" in frame.columns
    assert set(frame["Household size (masked)"]) == {"•••"}
    assert set(frame["Verification status"]) == {"unverified"}
    assert "records" in at.caption[-1].value


def test_donor_sees_published_trends_by_region_and_can_download_them(demo_env):
    """D4: published snapshots only, one line per state, CSV with the privacy note."""
    at = _open("donor", "donor")
    assert not at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {t["name"] for t in spec["data"] if t.get("showlegend", True) is not False}
    assert {"Kigali City", "Eastern Province"} <= names
    download = at.get("download_button")[0]
    assert download.proto.label == "Download CSV"


def test_researcher_map_releases_once_and_draws_hexagons(demo_env):
    """D2: the map costs ε once, then redraws from the stored release with a table view."""
    at = _open("map", "researcher")
    assert not at.exception
    [b for b in at.button if "Show map" in b.label][0].click().run()
    assert not at.exception
    deck = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    hexes = deck["layers"][0]["data"]
    assert len(hexes) > 100
    assert all(h["value"] is None or h["value"] >= 5 for h in hexes)
    assert "free (stored release)" in at.get("progress")[0].proto.text


@pytest.mark.parametrize("page, role", [("lists", "researcher"), ("donor", "policy_maker"),
                                        ("map", "donor"), ("map", "case_worker")])
def test_pages_refuse_roles_without_them(demo_env, page, role):
    """Opening another role's page is refused server-side."""
    at = _open(page, role)
    assert not at.exception
    assert any("Not permitted" in e.value or "not permitted" in e.value for e in at.error)


def test_policy_maker_compares_attendance_with_grants(demo_env):
    """D5: two verticals by district, a scatter with error bars and r with its interval."""
    at = _open("insights", "policy_maker")
    assert not at.exception
    [b for b in at.button if b.label.startswith("Compare")][0].click().run()
    assert not at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][0]["error_x"]["type"] == "data"
    text = " ".join(m.value for m in at.markdown)
    assert "Correlation across" in text and "interval" in text


def _trend_traces(at) -> dict[str, dict]:
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return {t.get("name"): t for t in spec["data"] if t.get("name")}, spec["layout"]


def test_trends_compares_up_to_five_areas_in_one_release(demo_env):
    """D1: areas compared from one state-level release: one line per chosen area."""
    at = _open("trends", "policy_maker")
    at.radio[0].set_value("Compare areas").run()
    [b for b in at.button if "Show trend" in b.label][0].click().run()
    assert not at.exception
    traces, _ = _trend_traces(at)
    assert {"Kigali City", "Eastern Province"} <= set(traces)
    assert at.multiselect[0].proto.max_selections == 5


def test_trends_compares_a_window_with_the_year_before(demo_env):
    """D1: two periods on one month-of-year axis."""
    at = _open("trends", "researcher")
    options = at.selectbox[0].options  # a metric no other test releases in the shared store
    at.selectbox[0].select_index(next(i for i, o in enumerate(options)
                                      if o.startswith("Screenings"))).run()
    at.radio[0].set_value("Compare with a year earlier").run()
    [b for b in at.button if "Show trend" in b.label][0].click().run()
    assert not at.exception
    traces, _ = _trend_traces(at)
    spans = [name for name in traces if "–" in name]
    assert len(spans) == 2 and spans[0] != spans[1]
    # aligned month by month: both lines share the current window's months, in order
    current, earlier = (traces[name]["x"] for name in sorted(spans, reverse=True))
    assert current == earlier and current == sorted(current) and len(current) == 12
    assert sum("interval" in name for name in traces) == 2  # a band for each year
    table = at.dataframe[0].value  # one labelled table, each month beside a year earlier
    assert {"month", "value", "earlier_month", "earlier_value", "change"} <= set(table.columns)
    assert all(int(m[:4]) - int(e[:4]) == 1 and m[5:] == e[5:]
               for m, e in zip(table["month"], table["earlier_month"]))
    assert any("a year earlier" in c.value for c in at.caption)


def test_trends_marks_a_kpi_definition_change_and_shows_its_history(demo_env):
    """D1: the nutrition score changed definition in July 2025: marked on the axis."""
    at = _open("trends", "policy_maker")
    options = at.selectbox[0].options
    at.selectbox[0].select_index(next(i for i, o in enumerate(options)
                                      if o.startswith("Average nutrition score"))).run()
    [months] = [s for s in at.select_slider if s.label == "Months"]
    months.set_value((date(2024, 11, 1), date(2026, 10, 1))).run()  # 24 months
    [b for b in at.button if "Show trend" in b.label][0].click().run()
    assert not at.exception
    _, layout = _trend_traces(at)
    assert [a["text"] for a in layout.get("annotations", [])] == ["KPI v2"]
    text = " ".join(m.value for m in at.markdown)
    assert "**v2** · from 01 Jul 2025" in text and "**v1**" in text


@pytest.fixture
def own_demo_env(demo_var, tmp_path, monkeypatch):
    """A private copy of the demo store, for a test that changes tenant settings."""
    import shutil

    var = tmp_path / "var"
    shutil.copytree(demo_var, var)
    monkeypatch.setenv("VEIL_VAR_DIR", str(var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    return var


def _switch_off(var, *levels: str, tenant: str = "kigali-east") -> None:
    from data.config import load_settings
    from privacy import open_gate

    gate = open_gate(load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"}))
    try:
        admin = Principal(subject=f"tenant.admin@{tenant}.demo", display_name="admin",
                          role="tenant_admin", tenant=tenant, source="demo")
        current = gate.admin.effective(tenant).settings
        changed = type(current)(k=current.k, budgets=dict(current.budgets),
                                levels=dict(current.levels),
                                disabled_levels=current.disabled_levels | set(levels))
        assert gate.admin.change_settings(admin, changed, reason="test").status == "active"
    finally:
        gate.close()


@pytest.mark.parametrize("page", ["trends", "map", "insights", "exports"])
def test_a_level_the_tenant_switched_off_is_not_offered(own_demo_env, page):
    """A policy maker may release at dp_low, dp_medium and dp_high; once the tenant switches
    dp_low off, the pages offer only the other two (the gate would refuse dp_low anyway)."""
    at = _open(page, "policy_maker")
    [before] = [box for box in at.selectbox if box.label == "Privacy level"]
    assert len(before.options) == 3
    _switch_off(own_demo_env, "dp_low")
    at = _open(page, "policy_maker")
    [after] = [box for box in at.selectbox if box.label == "Privacy level"]
    assert len(after.options) == 2 and before.options[0] not in after.options
    assert after.value == "dp_medium" and not at.exception


def test_a_role_with_every_level_switched_off_is_told_so(own_demo_env):
    """A researcher releases at dp_medium or dp_high: with both switched off the map page says
    why and stops before any release."""
    _switch_off(own_demo_env, "dp_medium", "dp_high")
    at = _open("map", "researcher")
    assert not at.exception
    assert any("switched off every privacy level" in w.value for w in at.warning)
    assert not [box for box in at.selectbox if box.label == "Privacy level"]
    assert not at.get("deck_gl_json_chart")
