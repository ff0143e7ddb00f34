"""The compliance page (D7) per persona on small demo data: the compliance officer opens every
section through the gate; every other role is refused server-side."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.context import PRINCIPAL_KEY, SIGNED_IN_AT_KEY, now
from data.config import PROJECT_ROOT, load_settings
from data.engine import open_store
from data.models import Export
from privacy import Principal
from tests.app.conftest import copy_demo, sign_in

PAGE = str(PROJECT_ROOT / "pages" / "compliance.py")
EXPORT_ID = "0c0ffee0-0000-4000-8000-00000000e1d7"
SECTIONS = {"Export records": "Export records", "Audit log": "Audit log",
            "Release log": "Release log", "Budget usage": "Budget usage",
            "Policy versions": "Policy versions", "KPI definitions": "KPI definition history",
            "Consent": "Consent statistics",
            "Freshness & completeness": "Freshness and completeness against SLOs",
            "Cost by domain": "Cost by domain",
            "Bias check": "Bias check: outcomes by gender and age group"}


@pytest.fixture(scope="module")
def compliance_var(demo_var, tmp_path_factory) -> Path:
    """A copy of the shared demo store with one finished export, so other tests never see it."""
    var = copy_demo(demo_var, tmp_path_factory.mktemp("compliance-var"))
    store = open_store(load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"}))
    with store.write.begin() as session:
        session.add(Export(
            id=EXPORT_ID, tenant_id="kigali-east", requester="policy.maker@kigali-east.demo",
            product_id="health.vaccinations", query={"metric": "doses"},
            purpose="programme_monitoring", justification="quarterly review", format="csv",
            umbrella=False, status="done", progress=1.0, row_count=96, digest="ab" * 32,
            policy_version="cd" * 32, epsilon=0.5, masking={},
            created_at=datetime(2026, 11, 2, 9, 30), finished_at=datetime(2026, 11, 2, 9, 31)))
    store.dispose()
    return var


@pytest.fixture
def compliance_env(compliance_var, monkeypatch) -> Path:
    monkeypatch.setenv("VEIL_VAR_DIR", str(compliance_var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    return compliance_var


def _open(role: str = "compliance_officer", *, section: str | None = None,
          tenant: str = "kigali-east", params: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[PRINCIPAL_KEY] = Principal(
        subject=f"{role.replace('_', '.')}@{tenant}.demo", display_name=role, role=role,
        tenant=tenant, source="demo")
    at.session_state[SIGNED_IN_AT_KEY] = now()
    if section is not None:
        at.query_params["section"] = section
    at.query_params.update(params or {})
    return at.run()


def test_export_records_open_first_with_what_who_why_and_policy(compliance_env):
    """The first section is a table of export records: id, requester, purpose, status, …"""
    at = _open()
    assert not at.exception
    assert at.subheader[0].value == "Export records"
    frame = at.table[0].value
    row = frame[frame["Export id"] == EXPORT_ID].iloc[0]
    assert (row["Requester"], row["Purpose"], row["Status"], row["Rows"], row["ε"],
            row["Policy version"], row["Digest"]) == (
        "policy.maker@kigali-east.demo", "programme_monitoring", "done", "96", "0.5",
        "cd" * 32, "ab" * 32)


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_section_renders_for_the_compliance_officer(compliance_env, section):
    """Each section, opened by its link (?section=…), renders under its heading."""
    at = _open(section=section)
    assert not at.exception
    assert [h.value for h in at.subheader] == [SECTIONS[section]]


def test_audit_log_shows_the_officers_own_views(compliance_env):
    """Opening a section is on the record: the audit log lists the officer's compliance views."""
    _open(section="Consent")
    at = _open(section="Audit log")
    at.text_input(key="audit_action").input("compliance").run()
    frame = at.dataframe[0].value
    assert set(frame["Action"]) == {"compliance_view"}
    assert "consent_statistics" in set(frame["Target"])


@pytest.mark.parametrize("role", ["policy_maker", "researcher", "case_worker", "donor",
                                  "tenant_admin", "platform_admin"])
def test_other_personas_are_refused(compliance_env, role):
    """Every role but the compliance officer is refused the page, whatever the section."""
    at = _open(role, section="Audit log")
    assert not at.exception
    assert any("Not permitted" in e.value for e in at.error)
    assert not at.subheader


def test_bias_check_costs_once_then_shows_intervals_and_a_csv(compliance_env):
    """The dataset is released on a click, drawn with error bars, free to view again."""
    at = _open(section="Bias check")
    [release] = [b for b in at.button if b.label.startswith("Release the bias-check dataset")]
    assert "costs ε 0.5" in release.label
    release.click().run()
    assert not at.exception
    assert not [b for b in at.button if b.label.startswith("Release")]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    bars = [t for t in spec["data"] if t["type"] == "bar"]
    assert bars and all(t["error_y"]["type"] == "data" for t in bars)
    # suppressed cells are marked off the value axis, never as a value of 0
    assert all(t.get("yaxis") == "y2" for t in spec["data"] if t["type"] == "scatter")
    assert "this view is free (stored release)" in at.get("progress")[0].proto.text
    assert at.get("download_button")[0].proto.label == "Download CSV"


def test_compliance_officer_reaches_the_page_from_the_navigation(compliance_env):
    """Signed in through the app, the compliance officer's menu leads to the page."""
    at = sign_in("compliance.officer@kigali-east.demo")
    at.switch_page(PAGE).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Compliance"]


def test_audit_filters_come_from_the_url(compliance_env):
    """A linked audit view (?section=Audit log&audit_period=…&audit_outcome=…) opens with
    those filters and lists only what they select (the browser test checks that a changed
    filter is written back to the address bar: Streamlit's front end does that)."""
    at = _open(section="Audit log", params={"audit_period": "All time",
                                            "audit_outcome": "refused", "audit_who": "policy"})
    assert not at.exception
    assert at.selectbox(key="audit_period").value == "All time"
    assert at.selectbox(key="audit_outcome").value == "refused"
    assert at.text_input(key="audit_who").value == "policy"
    assert all(set(frame.value["Outcome"]) == {"refused"} for frame in at.dataframe)
    at.text_input(key="audit_who").set_value("").run()
    at.selectbox(key="audit_outcome").set_value("allowed").run()
    assert set(at.dataframe[0].value["Outcome"]) == {"allowed"}


def test_a_filter_value_the_page_does_not_offer_is_ignored(compliance_env):
    """A hand-edited URL (?jobs_status=deleted) falls back to the default, not an error."""
    at = _open(section="Job history", params={"jobs_status": "deleted",
                                              "jobs_period": "Last 7 days"})
    assert not at.exception
    assert at.selectbox(key="jobs_status").value == "any"
    assert at.selectbox(key="jobs_period").value == "Last 7 days"


def test_cost_by_domain_lists_every_domain_of_the_tenant(compliance_env):
    """The showback names each domain with its storage, rebuilds and ε spent."""
    at = _open(section="Cost by domain", params={"showback_days": "366"})
    assert not at.exception
    frame = at.dataframe[0].value
    assert list(frame["Domain"]) == ["Health", "Education", "Social protection"]
    assert (frame["Rows stored"] > 0).all() and (frame["Aggregate rows"] > 0).all()
    assert frame.loc[frame["Domain"] == "Health", "ε by exports"].item() == 0.5
