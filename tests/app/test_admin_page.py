"""The admin page (D8) per persona: tenant and platform administrators change settings and
mappings and decide approvals through the gate; every other role is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.context import PRINCIPAL_KEY, SIGNED_IN_AT_KEY, now
from data.bootstrap import PLATFORM_ADMINS, demo_username, init_store
from data.catalog import load_catalog
from data.config import PROJECT_ROOT, load_settings
from data.engine import open_store
from data.models import ProductVersion
from privacy import Principal, Query, open_gate
from tests.pinned import PAGES_NOW

PLATFORM = sorted(PLATFORM_ADMINS)[0]


@pytest.fixture(scope="module")
def admin_var(tmp_path_factory) -> Path:
    """A store of its own (no event data needed): these tests change settings and mappings."""
    var = tmp_path_factory.mktemp("admin-var")
    settings = load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"})
    store = open_store(settings)
    init_store(store, load_catalog(settings.catalog_dir), demo_accounts=True)
    with store.write.begin() as session:  # an umbrella export needs a released product
        for tenant in ("kigali-east", "north-west", "south"):
            session.add(ProductVersion(tenant_id=tenant, product_id="health.vaccinations",
                                       data_version=1, refreshed_at=now().replace(tzinfo=None),
                                       cube_rows=0))
    store.dispose()
    return var


@pytest.fixture
def admin_env(admin_var, monkeypatch) -> Path:
    monkeypatch.setenv("VEIL_VAR_DIR", str(admin_var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    return admin_var


@pytest.fixture
def gate(admin_env):
    opened = open_gate()
    yield opened
    opened.close()


def _principal(role: str, tenant: str = "kigali-east", subject: str | None = None) -> Principal:
    return Principal(subject=subject or demo_username(role, tenant), display_name=role,
                     role=role, tenant=tenant, source="demo")


def _open(principal: Principal) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "admin.py"), default_timeout=60)
    at.session_state[PRINCIPAL_KEY] = principal
    at.session_state[SIGNED_IN_AT_KEY] = now()
    return at.run()


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _frame(at: AppTest, column: str):
    """The first table on the page with ``column``."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _messages(at: AppTest) -> str:
    return " ".join(e.value for kind in ("success", "error", "warning", "info")
                    for e in getattr(at, kind))


def test_tenant_admin_tightens_k_on_the_page(admin_env, gate):
    """A tenant admin raises k: in force at once, shown as the new version in the history."""
    at = _open(_principal("tenant_admin", "north-west"))
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Approvals", "Privacy settings", "Role mappings"]
    assert not at.selectbox or at.selectbox[0].label != "Tenant"  # own tenant only
    at.number_input(key="k-north-west-0").set_value(8)
    at.text_area(key="settings-reason-north-west-0").input("small districts")
    _button(at, "Save settings").click().run()
    assert not at.exception
    assert "Settings version 1 is in force." in _messages(at)
    history = _frame(at, "decision")
    assert list(history["version"])[:2] == [1, 0]
    assert list(history["status"])[:2] == ["active", "superseded"]
    assert gate.admin.effective("north-west").settings.k == 8


def test_invalid_settings_are_refused_with_the_value(admin_env, gate):
    """An ε of 0 is refused on the page with the value quoted; nothing is saved."""
    at = _open(_principal("tenant_admin", "south"))
    at.number_input(key="budget-researcher-south-0").set_value(0.0)
    at.text_area(key="settings-reason-south-0").input("zero")
    _button(at, "Save settings").click().run()
    assert not at.exception
    assert "budget 'researcher' must be ε > 0, got ε=0" in _messages(at)
    assert gate.admin.effective("south").version == 0


def test_weakening_waits_for_a_platform_admin_who_approves_it(admin_env, gate):
    """A lower k is only proposed; its proposer cannot approve it; a platform admin does."""
    proposer = _principal("tenant_admin", "kigali-east")
    at = _open(proposer)
    at.number_input(key="k-kigali-east-0").set_value(3)
    at.text_area(key="settings-reason-kigali-east-0").input("tiny villages")
    _button(at, "Save settings").click().run()
    assert "is proposed: it weakens privacy" in _messages(at)
    assert gate.admin.effective("kigali-east").settings.k == 5
    at = _open(proposer)
    assert not any(b.label == "Approve" for b in at.button)
    assert any("waits for a second administrator" in c.value for c in at.caption)

    at = _open(_principal("platform_admin", subject=PLATFORM))
    assert not at.exception
    assert at.selectbox[0].label == "Tenant"
    assert at.selectbox[0].options == ["Kigali & Eastern Programme Office",
                                       "Northern & Western Programme Office",
                                       "Southern Programme Office"]
    changes = _frame(at, "weakens privacy")
    assert list(changes["before"]) == ["5"] and list(changes["after"]) == ["3"]
    assert list(changes["weakens privacy"]) == ["yes"]
    _button(at, "Approve").click().run()
    assert not at.exception
    assert "is in force" in _messages(at)
    assert gate.admin.effective("kigali-east").settings.k == 3


def test_platform_admin_decides_umbrella_exports_in_the_queue(admin_env, gate):
    """An umbrella export request shows in the platform admin's queue with its purpose."""
    requester = _principal("policy_maker")
    query = Query.trailing(product="health.vaccinations", metric="doses", level="dp_high",
                           months=3, today=PAGES_NOW.date())
    gate.exports.request(requester, query, purpose="programme_monitoring", umbrella=True,
                         justification="regional comparison for the annual review")
    at = _open(_principal("platform_admin", subject=PLATFORM))
    assert not at.exception
    assert "Umbrella (cross-tenant) exports" in [s.value for s in at.subheader]
    assert any("regional comparison" in t.value for t in at.text)
    _button(at, "Approve export").click().run()
    assert not at.exception
    assert "Your approval of export" in _messages(at)
    assert [len(p.approvals) for p in gate.exports.pending_approvals(
        _principal("platform_admin", subject=sorted(PLATFORM_ADMINS)[1]))] == [1]


def test_tenant_admin_adds_and_removes_a_mapping(admin_env, gate):
    """A mapping added on the page resolves an organisation account; removing it revokes."""
    admin = _principal("tenant_admin", "south")
    at = _open(admin)
    form_value = next(t for t in at.text_input if t.label.startswith("Value"))
    form_value.input("board@donor.example")
    next(s for s in at.selectbox if s.label == "Role").set_value("donor")
    at.text_input(key="add-mapping-reason-south").input("board member")
    _button(at, "Add mapping").click().run()
    assert not at.exception
    assert "board@donor.example is mapped to Donor" in _messages(at)
    mappings = _frame(at, "source")
    row = mappings[mappings["value"] == "board@donor.example"]
    assert list(row["source"]) == ["admin"]
    assert gate.resolve({"email": "board@donor.example"}, source="oidc").role == "donor"
    assert "tenant_admin" not in next(s for s in at.selectbox if s.label == "Role").options
    at.text_input(key="remove-mapping-reason-south").input("left the board")
    _button(at, "Remove mapping").click().run()
    assert not at.exception
    assert "no longer has a role (mapping version 2)" in _messages(at)


@pytest.mark.parametrize("role", ["policy_maker", "researcher", "case_worker", "donor",
                                  "compliance_officer"])
def test_other_roles_are_refused_the_admin_page(admin_env, role):
    """Only administrators open the page; others are refused server-side."""
    at = _open(_principal(role))
    assert not at.exception
    assert any("Not permitted" in e.value for e in at.error)
    assert not at.tabs
