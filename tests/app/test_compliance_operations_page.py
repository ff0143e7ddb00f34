"""The compliance page's issue-20 sections on small demo data: the attention list, the job
history with failed runs highlighted, and the evidence bundle built and offered for download."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from streamlit.testing.v1 import AppTest

from dashboard.context import PRINCIPAL_KEY, SIGNED_IN_AT_KEY, now
from data.config import PROJECT_ROOT, load_settings
from data.engine import open_store
from data.models import AuditEntry, Export, JobRun
from privacy import Principal
from tests.app.conftest import copy_demo
from tests.pinned import PAGES_NOW

PAGE = str(PROJECT_ROOT / "pages" / "compliance.py")
FAILED_EXPORT = "0c0ffee0-0000-4000-8000-0000000fa11d"
HIGHLIGHT = "#FBE3E4"


@pytest.fixture(scope="module")
def operations_var(demo_var, tmp_path_factory) -> Path:
    """A copy of the demo store with a failed materialisation and a failed export of the
    compliance officer's tenant, an hour before the pages' clock."""
    var = copy_demo(demo_var, tmp_path_factory.mktemp("operations-var"))
    store = open_store(load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"}))
    at = PAGES_NOW - timedelta(hours=1)
    with store.write.begin() as session:
        # the demo's own (successful) runs of the product are later than the pinned clock:
        # without them the failure below is the product's last run, still unresolved
        session.execute(delete(JobRun).where(JobRun.tenant_id == "kigali-east",
                                             JobRun.product_id == "health.nutrition"))
        session.add(JobRun(job="materialize", tenant_id="kigali-east",
                           product_id="health.nutrition", status="failed", started_at=at,
                           finished_at=at + timedelta(seconds=3), rows=None, duration_s=3.0,
                           error="StoreError: the cube could not be written"))
        session.add(Export(
            id=FAILED_EXPORT, tenant_id="kigali-east", requester="policy.maker@kigali-east.demo",
            role="policy_maker", product_id="health.vaccinations", query={"metric": "doses"},
            scope=["kigali-east"], purpose="programme_monitoring", format="csv",
            umbrella=False, status="failed", progress=0.0, policy_version="cd" * 32,
            epsilon=0.0, masking={}, error="the ε budget is exhausted", created_at=at,
            started_at=at, finished_at=at + timedelta(seconds=2)))
    store.dispose()
    return var


@pytest.fixture
def operations_env(operations_var, monkeypatch) -> Path:
    monkeypatch.setenv("VEIL_VAR_DIR", str(operations_var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    monkeypatch.delenv("VEIL_ALERT_WEBHOOK_URL", raising=False)
    return operations_var


def _open(section: str, role: str = "compliance_officer") -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[PRINCIPAL_KEY] = Principal(
        subject=f"{role.replace('_', '.')}@kigali-east.demo", display_name=role, role=role,
        tenant="kigali-east", source="demo")
    at.session_state[SIGNED_IN_AT_KEY] = now()
    at.query_params["section"] = section
    return at.run()


def _highlighted_rows(element) -> set[int]:
    """Row numbers of a styled table painted with the breach colour."""
    rows = set()
    for rule in element.proto.arrow_data.styler.styles.split("}"):
        if HIGHLIGHT in rule:
            rows |= {int(n) for n in re.findall(r"_row(\d+)_col", rule)}
    return rows


def test_attention_lists_the_failed_jobs_as_critical(operations_env):
    """The attention list names both failed runs, critical, with their webhook state."""
    at = _open("Attention")
    assert not at.exception
    assert [h.value for h in at.subheader] == ["Needs attention"]
    frame = at.dataframe[0].value
    failed = frame[frame["Kind"] == "Job failed"]
    assert set(failed["Severity"]) == {"‼ critical"}
    assert any("StoreError: the cube could not be written" in w for w in failed["What"])
    assert f"job:export:{FAILED_EXPORT}" in set(failed["Alert id"])
    assert set(failed["Webhook"]) == {"not sent yet"}
    assert _highlighted_rows(at.dataframe[0]) == set(frame[frame["Severity"] == "‼ critical"]
                                                     .index)
    assert any("need attention" in e.value for e in at.error)


def test_job_history_highlights_failed_runs(operations_env):
    """Failed runs are marked, painted and counted above the table."""
    at = _open("Job history")
    assert not at.exception
    assert [h.value for h in at.subheader] == ["Job history"]
    frame = at.dataframe[0].value
    failed = frame[frame["Status"] == "✗ failed"]
    assert set(failed["Run"]) >= {FAILED_EXPORT}
    assert set(failed["Error"]) == {"StoreError: the cube could not be written",
                                    "the ε budget is exhausted"}
    assert set(frame["Job"]) == {"materialize", "export"}
    assert _highlighted_rows(at.dataframe[0]) == set(failed.index)
    assert any(e.value.startswith("2 of ") and "runs failed" in e.value for e in at.error)


def test_job_history_filters_to_failures(operations_env):
    """Choosing status 'failed' leaves only the failed runs."""
    at = _open("Job history")
    at.selectbox(key="jobs_status").select("failed").run()
    assert not at.exception
    assert set(at.dataframe[0].value["Status"]) == {"✗ failed"}
    assert len(at.dataframe[0].value) == 2


def test_evidence_bundle_is_built_signed_and_offered_for_download(operations_env):
    """One click builds the period's signed bundle: its members are listed with their
    SHA-256, a download button offers the zip, and the build is in the audit log."""
    at = _open("Evidence bundle")
    assert not at.exception
    assert not at.get("download_button")
    at.button(key="evidence_build").click().run()
    assert not at.exception
    [download] = at.get("download_button")
    assert download.proto.label == "Download the evidence bundle"
    members = at.dataframe[0].value
    assert {"README.txt", "releases.csv", "exports.csv", "approvals.csv", "audit_summary.csv",
            "policy/versions.json", "budgets/period_budgets.csv"} <= set(members["Member"])
    assert all(len(sha) == 64 for sha in members["SHA-256"])
    assert any("Evidence bundle for 2026-05 – 2026-10" in s.value for s in at.success)
    assert any("demo key" in w.value for w in at.warning)
    store = open_store(load_settings({"VEIL_VAR_DIR": str(operations_env),
                                      "VEIL_DEMO_MODE": "1"}))
    with store.read() as session:
        entries = session.scalars(select(AuditEntry).where(
            AuditEntry.target == "evidence_bundle", AuditEntry.outcome == "allowed")).all()
    store.dispose()
    assert entries and entries[-1].detail["from"] == "2026-05"
    assert len(entries[-1].detail["sha256"]) == 64


@pytest.mark.parametrize("section", ["Attention", "Job history", "Evidence bundle"])
def test_other_personas_are_refused_the_new_sections(operations_env, section):
    """A policy maker opening these sections by their link sees 'Not permitted'."""
    at = _open(section, role="policy_maker")
    assert not at.exception
    assert any("Not permitted" in e.value for e in at.error)
    assert not at.subheader
