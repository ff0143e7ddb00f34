"""The Exports page (D6) for each persona that has it: request form, purpose required, progress,
download link — server-side through AppTest on the small demo store.

Jobs are processed in the test with the gate's worker (``run_worker(once=True)``) so that none is
left for a dashboard worker thread started by another test.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import context
from dashboard.context import PRINCIPAL_KEY, SIGNED_IN_AT_KEY, now
from data.config import PROJECT_ROOT, load_settings
from privacy import Principal, RecordQuery, open_gate

PAGE = str(PROJECT_ROOT / "pages" / "exports.py")


def _principal(role: str, tenant: str) -> Principal:
    # A subject of its own: its budget account and exports are this test module's alone.
    return Principal(subject=f"exports-page.{role.replace('_', '.')}@{tenant}.demo",
                     display_name=role, role=role, tenant=tenant, source="demo")


def _open(principal: Principal, *, download: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[PRINCIPAL_KEY] = principal
    at.session_state[SIGNED_IN_AT_KEY] = now()
    if download is not None:
        at.query_params["download"] = download
    return at.run()


def _select(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label == label)


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in (*at.success, *at.error, *at.warning, *at.info)]
    parts += [p.proto.text for p in at.get("progress")]
    return "\n".join(parts)


@pytest.fixture
def gate(demo_env):
    opened = open_gate(load_settings())
    yield opened
    opened.close()


def _finish(gate, principal: Principal, demo_env) -> None:
    """Run the worker until every export of ``principal`` has finished."""
    deadline = time.monotonic() + 60
    while any(s.active for s in gate.exports.mine(principal)):
        gate.exports.run_worker(directory=demo_env / "exports", once=True)
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.05)


def test_case_worker_cannot_request_without_a_purpose(demo_env, gate):
    """Submitting with no purpose chosen shows the refusal; nothing is queued."""
    principal = _principal("case_worker", "kigali-east")
    at = _open(principal)
    assert not at.exception
    assert at.title[0].value == "Exports"
    assert _select(at, "Purpose (required)").value is None
    _button(at, "Request export").click().run()
    assert not at.exception
    assert any("needs a purpose" in e.value for e in at.error)
    assert gate.exports.mine(principal) == []


@pytest.mark.parametrize("budget", [None, 5.0], ids=["catalog", "given_a_budget"])
def test_case_worker_is_offered_record_products_only(demo_env, gate, monkeypatch, budget):
    """A case worker's form offers its operational lists and no metric set, metric or privacy
    level, even with a budget: no aggregate is released at its level, so none is offered."""
    if budget is not None:
        roles = dict(gate.catalog.roles)
        roles["case_worker"] = dataclasses.replace(roles["case_worker"], budget_epsilon=budget)
        budgeted = dataclasses.replace(gate.catalog, roles=roles)
        gate._catalog = gate.exports._catalog = gate.admin._catalog = budgeted
        monkeypatch.setattr(context, "current_gate", lambda: gate)
    principal = _principal("case_worker", "kigali-east")
    at = _open(principal)
    assert not at.exception
    lists = [p for p in gate.catalog.products if p.kind == "operational_list"
             and p.id in gate.catalog.roles["case_worker"].record_products]
    assert _select(at, "Data product").options == [p.title for p in lists] != []
    assert not [s for s in at.selectbox if s.label in ("Metric", "Privacy level")]


def test_aggregate_exports_offer_noisy_levels_only(demo_env, gate):
    """Roles that export aggregates choose among differential-privacy levels only."""
    noisy = {level.title for level in gate.catalog.policy.levels.values() if level.noisy}
    for role in ("policy_maker", "researcher"):
        at = _open(_principal(role, "kigali-east"))
        assert not at.exception
        offered = set(_select(at, "Privacy level").options)
        assert offered and offered <= noisy


def test_case_worker_requests_sees_progress_and_gets_the_download_link(demo_env, gate):
    """Request with a purpose → queued with a progress bar → done → link → download button."""
    principal = _principal("case_worker", "kigali-east")
    at = _open(principal)
    assert _select(at, "Data product").value == "social.registrations"
    _select(at, "Purpose (required)").select("case_follow_up")
    at.text_area[0].input("verification round, Gasabo")
    _button(at, "Request export").click().run()
    assert not at.exception
    assert any("is queued" in s.value for s in at.success)
    assert "queued: 0%" in _texts(at)
    [requested] = gate.exports.mine(principal)
    assert (requested.purpose, requested.justification) == ("case_follow_up",
                                                            "verification round, Gasabo")

    _finish(gate, principal, demo_env)
    at.run()
    assert not at.exception
    text = _texts(at)
    assert "ready" in text and "household_size mask" in text and "SHA-256" in text
    _button(at, "Get download link").click().run()
    assert not at.exception
    token = at.query_params["download"]
    token = token[0] if isinstance(token, list) else token
    assert token.startswith(requested.id + ".")
    download = at.get("download_button")[0]
    assert download.proto.label == f"Download veil-social.registrations-{requested.id[:8]}.csv"
    assert any("is ready" in s.value for s in at.success)
    assert any(f"exports?download={token}" in c.value for c in at.code)


def test_a_link_for_someone_else_is_refused_on_the_page(demo_env, gate):
    """Another person's or a tampered link shows a plain refusal and the page still works."""
    owner = _principal("case_worker", "kigali-east")
    gate.exports.request(owner, RecordQuery(
        product="social.registrations", filters=(("status", "verified"),)),
        purpose="data_quality_review")
    _finish(gate, owner, demo_env)
    export = gate.exports.mine(owner)[0]
    token = gate.exports.link(owner, export.id).token
    other = _principal("case_worker", "south")
    at = _open(other, download=token)
    assert not at.exception
    assert any("another tenant" in e.value for e in at.error)
    assert not at.get("download_button")
    assert _button(at, "Request export")  # the rest of the page is there
    at = _open(owner, download=token[:-3] + "abc")
    assert any("not valid" in e.value for e in at.error)


def test_policy_maker_exports_an_aggregate_and_sees_its_cost(demo_env, gate):
    """Metric export: the budget meter previews the cost; the finished export shows ε charged."""
    principal = _principal("policy_maker", "north-west")
    at = _open(principal)
    assert not at.exception
    _select(at, "Break down by").select("gender")
    at.run()
    assert "this view costs ε 1" in _texts(at)
    _select(at, "Purpose (required)").select("donor_reporting")
    next(r for r in at.radio if r.label == "Format").set_value("parquet")
    _button(at, "Request export").click().run()
    assert any("is queued" in s.value for s in at.success)
    _finish(gate, principal, demo_env)
    at.run()
    assert not at.exception
    [done] = gate.exports.mine(principal)
    assert done.status == "done" and done.format == "parquet"
    assert f"ε {done.epsilon.value:g} charged" in _texts(at)
    assert done.epsilon.value > 0


def test_researcher_asks_for_an_umbrella_export_that_awaits_approval(demo_env, gate):
    """Umbrella toggle → pending with "approvals: 0 of 2"; nothing runs, nothing is spent."""
    principal = _principal("researcher", "south")
    at = _open(principal)
    assert not at.exception
    _select(at, "Break down by").select("state")
    at.toggle[0].set_value(True).run()
    assert not [p for p in at.get("progress") if "Privacy budget" in p.proto.text]
    _select(at, "Purpose (required)").select("approved_research")
    _button(at, "Request export").click().run()
    assert not at.exception
    assert any("two platform administrators" in s.value for s in at.success)
    assert "approvals: 0 of 2" in _texts(at)
    [pending] = gate.exports.mine(principal)
    assert (pending.status, pending.umbrella, len(pending.scope)) == ("pending", True, 3)
    assert gate.budget(principal, product=pending.product).spent.value == 0


def test_purposes_offered_are_the_roles_own(demo_env):
    """Each persona is offered only its role's coded purposes."""
    offered = {}
    for role, tenant in (("case_worker", "south"), ("researcher", "kigali-east"),
                         ("policy_maker", "south")):
        at = _open(_principal(role, tenant))
        assert not at.exception
        offered[role] = set(_select(at, "Purpose (required)").options)
    assert "Case follow-up: verification visits and referrals" in offered["case_worker"]
    assert not any("Case follow-up" in p for p in offered["researcher"])
    assert any("Approved research" in p for p in offered["researcher"])
    assert "Reporting to a funder" in offered["policy_maker"]
