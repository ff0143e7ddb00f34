"""Identity in the app (A1–A3): OIDC personas through ``at.user``, refusals, session lifetime.

Every persona signs in through ``st.user`` claims mapped by a role mappings file, sees exactly
its role's built pages, and is refused (and audited) on every other page. Unknown and
ambiguous identities get no access; sessions end after VEIL_SESSION_HOURS; sign-out works.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from data.bootstrap import init_store
from data.catalog import KNOWN_PAGES, load_catalog
from data.config import PROJECT_ROOT, load_settings
from data.engine import open_store
from data.models import AuditEntry
from data.role_mappings import load_role_mappings
from privacy import AccessDenied, Principal, open_gate
from tests.app.conftest import APP, sign_in

AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "apptest-cookie-secret-0123456789",
    "client_id": "veil",
    "client_secret": "apptest-client-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}


@dataclass(frozen=True)
class Persona:
    claims: dict
    tenant: str
    pages: frozenset[str]  # the built pages this role sees


PERSONAS = {
    "policy_maker": Persona({"email": "ana.policy@programmes.example", "sub": "u-ana",
                             "name": "Ana Policy"}, "kigali-east",
                             frozenset({"home", "trends", "map", "insights", "exports"})),
    # mapped by subject, not e-mail
    "researcher": Persona({"email": "rosa@university.example", "sub": "researcher-7f3a",
                           "name": "Rosa Research"}, "north-west",
                          frozenset({"home", "trends", "map", "insights", "exports"})),
    "case_worker": Persona({"email": "cyril.case@programmes.example", "sub": "u-cyril"},
                           "south", frozenset({"home", "lists", "exports"})),
    "donor": Persona({"email": "dana@donor.example", "sub": "u-dana"}, "south",
                     frozenset({"home", "donor"})),
    # mapped by group membership
    "compliance_officer": Persona({"email": "colin@audit.example", "sub": "u-colin",
                                   "groups": ["staff", "veil-compliance-kigali-east"]},
                                  "kigali-east", frozenset({"home", "compliance"})),
    "tenant_admin": Persona({"email": "tina.admin@programmes.example", "sub": "u-tina"},
                            "north-west", frozenset({"home", "admin"})),
}

MAPPINGS = """
version = 1

[[mapping]]
claim = "email"
value = "Ana.Policy@programmes.example"
role = "policy_maker"
tenant = "kigali-east"

[[mapping]]
claim = "sub"
value = "researcher-7f3a"
role = "researcher"
tenant = "north-west"

[[mapping]]
claim = "email"
value = "cyril.case@programmes.example"
role = "case_worker"
tenant = "south"

[[mapping]]
claim = "email"
value = "dana@donor.example"
role = "donor"
tenant = "south"

[[mapping]]
claim = "group"
value = "veil-compliance-kigali-east"
role = "compliance_officer"
tenant = "kigali-east"

[[mapping]]
claim = "email"
value = "tina.admin@programmes.example"
role = "tenant_admin"
tenant = "north-west"

[[mapping]]
claim = "group"
value = "veil-researchers-south"
role = "researcher"
tenant = "south"

[[mapping]]
claim = "group"
value = "veil-donors-south"
role = "donor"
tenant = "south"
"""

PAGE_FILES = {"home": "../pages/home.py", "trends": "../pages/trends.py",
              "map": "../pages/map.py", "lists": "../pages/lists.py",
              "donor": "../pages/donor.py", "insights": "../pages/insights.py",
              "exports": "../pages/exports.py", "compliance": "../pages/compliance.py",
              "admin": "../pages/admin.py"}
PAGE_TITLES = {"home": "Welcome, ", "trends": "Trends", "map": "Map",
               "lists": "Operational lists", "donor": "Published trends",
               "insights": "Cross-vertical insights", "exports": "Exports",
               "compliance": "Compliance", "admin": "Administration"}


@pytest.fixture(scope="session")
def identity_var(demo_var, tmp_path_factory) -> Path:
    """A copy of the demo store with the personas' role mappings file applied."""
    root = tmp_path_factory.mktemp("identity")
    var = root / "var"
    shutil.copytree(demo_var, var)
    mappings = root / "role_mappings.toml"
    mappings.write_text(MAPPINGS)
    settings = load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1",
                              "VEIL_ROLE_MAPPINGS": str(mappings)})
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=True,
               role_mappings=load_role_mappings(mappings, catalog))
    store.dispose()
    return var


@pytest.fixture
def identity_env(identity_var, monkeypatch) -> Path:
    monkeypatch.setenv("VEIL_VAR_DIR", str(identity_var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.setenv("VEIL_ROLE_MAPPINGS", str(identity_var.parent / "role_mappings.toml"))
    for key in ("VEIL_DATABASE_URL", "VEIL_SESSION_HOURS", "VEIL_DEMO_ACCOUNTS", "VEIL_SECRET"):
        monkeypatch.delenv(key, raising=False)
    return identity_var


def oidc_app(claims: dict, *, issued_ago: timedelta = timedelta(minutes=1),
             url: str | None = None) -> AppTest:
    """The app with [auth] configured and a logged-in st.user carrying ``claims``."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = dict(AUTH)
    # Each sign-in's token has its own nonce, as st.login's do: a sign-in is one record.
    at.user = {"is_logged_in": True, "email_verified": True, "nonce": uuid.uuid4().hex,
               "iat": int(time.time() - issued_ago.total_seconds()), **claims}
    if url:
        at.context = {"url": url}
    return at.run()


def audit_rows(var: Path, **where) -> list[AuditEntry]:
    store = open_store(load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"}))
    with store.read() as session:
        statement = select(AuditEntry).order_by(AuditEntry.id)
        for column, value in where.items():
            statement = statement.where(getattr(AuditEntry, column) == value)
        rows = session.scalars(statement).all()
    store.dispose()
    return rows


def buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


# --- personas ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", PERSONAS)
def test_persona_resolves_to_its_role_and_tenant(role, identity_env):
    """st.user claims → the mapped role and tenant, from the OIDC identity source."""
    persona = PERSONAS[role]
    at = oidc_app(persona.claims)
    assert not at.exception
    principal = at.session_state["veil_principal"]
    assert (principal.role, principal.tenant, principal.source) == (role, persona.tenant, "oidc")
    assert principal.subject == persona.claims["email"]
    assert "Sign out" in buttons(at)


@pytest.mark.parametrize("role", PERSONAS)
def test_persona_navigation_holds_exactly_its_built_pages(role, identity_env):
    """Each of the role's built pages opens; every other built page is not in navigation."""
    persona = PERSONAS[role]
    at = oidc_app(persona.claims)
    for page_id, path in PAGE_FILES.items():
        if page_id in persona.pages:
            at.switch_page(path).run()
            assert not at.exception
            assert not [e.value for e in at.error if "Not permitted" in e.value]
            assert at.title[0].value.startswith(PAGE_TITLES[page_id])
        else:
            with pytest.raises(ValueError, match="Could not find a navigation page"):
                at.switch_page(path)


@pytest.mark.parametrize("role", [r for r, p in PERSONAS.items() if "trends" not in p.pages])
def test_forbidden_page_url_is_refused_and_audited(role, identity_env):
    """Opening /trends by URL without the role routes to the page's guard: refused, audited."""
    persona = PERSONAS[role]
    before = len(audit_rows(identity_env, action="page_view", outcome="refused"))
    at = oidc_app(persona.claims, url="http://127.0.0.1:8501/trends")
    at.switch_page(PAGE_FILES["trends"]).run()
    assert not at.exception
    assert any("Not permitted" in e.value and "trends" in e.value for e in at.error)
    assert not at.get("plotly_chart") and not at.selectbox, "nothing of the page is drawn"
    refused = audit_rows(identity_env, action="page_view", outcome="refused")
    assert len(refused) == before + 1
    assert (refused[-1].principal, refused[-1].role, refused[-1].target) == (
        persona.claims["email"], role, "trends")


def test_forbidden_page_is_routed_but_never_listed(identity_env):
    """A requested forbidden page is registered hidden; the role's own pages stay visible."""

    def script():
        import streamlit as st

        from dashboard.context import current_gate
        from dashboard.navigation import pages_for
        from privacy import Principal

        donor = Principal(subject="d@x.example", display_name="D", role="donor", tenant="south",
                          source="oidc")
        gate = current_gate()
        for requested in (None, "trends", "admin", "nonsense", "home"):
            pages = pages_for(gate, donor, requested=requested)
            st.text(f"{requested}: " + ", ".join(f"{p.title}/{p.visibility}" for p in pages))

    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.text] == [
        "None: Home/visible, Published trends/visible",
        "trends: Home/visible, Published trends/visible, Trends/hidden",
        "admin: Home/visible, Published trends/visible, Administration/hidden",
        # not a page at all: Streamlit's own "page not found"
        "nonsense: Home/visible, Published trends/visible",
        "home: Home/visible, Published trends/visible",
    ]


@pytest.mark.parametrize("role, page", [
    (role, page) for role in PERSONAS for page in KNOWN_PAGES
    if page not in load_catalog(PROJECT_ROOT / "catalog").roles[role].pages])
def test_gate_refuses_every_page_outside_the_role(role, page, identity_env):
    """Defence in depth: the gate itself refuses any page the role does not list, built or not."""
    gate = open_gate()
    principal = Principal(subject=f"{role}@probe.example", display_name=role, role=role,
                          tenant=PERSONAS[role].tenant, source="oidc")
    try:
        with pytest.raises(AccessDenied, match=rf"Not permitted: .* cannot open the {page} page"):
            gate.open_page(principal, page=page)
    finally:
        gate.close()
    last = audit_rows(identity_env, principal=principal.subject)[-1]
    assert (last.action, last.target, last.outcome) == ("page_view", page, "refused")


def test_gate_allows_the_roles_own_pages(identity_env):
    """The gate lets a role open each page roles.toml lists for it."""
    gate = open_gate()
    try:
        for role, spec in gate.catalog.roles.items():
            principal = Principal(subject=f"{role}@ok.example", display_name=role, role=role,
                                  tenant="south", source="oidc")
            for page in spec.pages:
                gate.open_page(principal, page=page)
    finally:
        gate.close()


# --- who gets no access ----------------------------------------------------------------------


def test_unknown_identity_gets_a_no_access_page_and_an_audit_entry(identity_env):
    """A signed-in stranger sees "No access", no navigation, and the refusal is audited."""
    at = oidc_app({"email": "stranger@elsewhere.example", "sub": "u-stranger"})
    assert not at.exception
    assert at.title[0].value == "No access"
    assert "has no role in Veil" in at.error[0].value
    assert "veil_principal" not in at.session_state
    assert buttons(at) == ["Sign out"]
    refused = audit_rows(identity_env, principal="stranger@elsewhere.example")
    assert (refused[-1].action, refused[-1].outcome, refused[-1].target) == (
        "login", "refused", "oidc")


def test_no_access_page_signs_out_of_the_provider(identity_env):
    """Sign out on the no-access page logs out of st.user and shows the sign-in page."""
    at = oidc_app({"email": "stranger@elsewhere.example"})
    at.button[0].click().run()
    assert not at.exception
    assert at.user == {"is_logged_in": False}
    assert at.title[0].value == "Veil"


def test_demo_account_mappings_never_apply_to_an_oidc_identity(identity_env):
    """An OIDC token claiming a demo account's address does not get the demo account's role."""
    at = oidc_app({"email": "policy.maker@kigali-east.demo", "sub": "u-imposter"})
    assert at.title[0].value == "No access"
    assert "veil_principal" not in at.session_state


def test_unverified_email_is_not_used_for_mapping(identity_env):
    """A token that says email_verified=false is not mapped by its e-mail address."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = dict(AUTH)
    at.user = {"is_logged_in": True, "iat": int(time.time()), "email_verified": False,
               **PERSONAS["donor"].claims}
    at.run()
    assert at.title[0].value == "No access"


def test_groups_mapping_to_two_roles_are_refused_as_ambiguous(identity_env):
    """Groups giving one person two different roles: refused, never a pick of one."""
    at = oidc_app({"sub": "u-two-hats", "email": "two.hats@programmes.example",
                   "groups": ["veil-researchers-south", "veil-donors-south"]})
    assert at.title[0].value == "No access"
    assert "map to different roles or tenants" in at.error[0].value
    last = audit_rows(identity_env, principal="two.hats@programmes.example")[-1]
    assert last.detail["reason"] == "ambiguous group mappings"


def test_email_mapping_takes_precedence_over_groups(identity_env):
    """E-mail, then sub, then groups: the first mapped claim decides the role."""
    claims = dict(PERSONAS["donor"].claims, groups=["veil-compliance-kigali-east"])
    at = oidc_app(claims)
    principal = at.session_state["veil_principal"]
    assert (principal.role, principal.tenant) == ("donor", "south")


# --- session lifetime and sign-out -------------------------------------------------------------


def test_oidc_session_ends_after_the_configured_hours(identity_env, monkeypatch):
    """A cookie whose ID token was issued longer ago than VEIL_SESSION_HOURS lets nobody in."""
    monkeypatch.setenv("VEIL_SESSION_HOURS", "2")
    at = oidc_app(PERSONAS["policy_maker"].claims, issued_ago=timedelta(hours=2, minutes=1))
    assert not at.exception
    assert at.title[0].value == "Session ended"
    assert "ended 2 hours after you signed in" in at.warning[0].value
    assert buttons(at) == ["Sign in again", "Sign out"]
    assert "veil_principal" not in at.session_state


def test_oidc_session_within_the_configured_hours_is_let_in(identity_env, monkeypatch):
    """The same cookie inside the lifetime signs in (the bound is the token's iat)."""
    monkeypatch.setenv("VEIL_SESSION_HOURS", "2")
    at = oidc_app(PERSONAS["policy_maker"].claims, issued_ago=timedelta(hours=1, minutes=59))
    assert at.session_state["veil_principal"].role == "policy_maker"


def test_default_session_lifetime_is_eight_hours(identity_env):
    """Without VEIL_SESSION_HOURS a sign-in lasts 8 hours."""
    late = oidc_app(PERSONAS["donor"].claims, issued_ago=timedelta(hours=8, seconds=5))
    assert late.title[0].value == "Session ended"
    fine = oidc_app(PERSONAS["donor"].claims, issued_ago=timedelta(hours=7, minutes=59))
    assert fine.session_state["veil_principal"].role == "donor"


def test_session_that_expires_while_open_returns_to_sign_in(identity_env):
    """A demo session past its lifetime is ended at the next rerun, audited, and says why."""
    at = sign_in("researcher@north-west.demo")
    started = at.session_state["veil_signed_in_at"]
    at.session_state["veil_signed_in_at"] = started - timedelta(hours=8)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Veil"
    assert "Your session ended 8 hours after you signed in" in at.warning[0].value
    assert "veil_principal" not in at.session_state
    last = audit_rows(identity_env, principal="researcher@north-west.demo")[-1]
    assert (last.action, last.detail) == ("logout", {"reason": "expired", "sign_ins_ended": 0})


def test_expired_session_is_refused_by_the_page_guard_too(identity_env):
    """A page run directly with an expired sign-in is refused by page_context as well."""
    at = sign_in("policy.maker@kigali-east.demo")
    direct = AppTest.from_file(str(PROJECT_ROOT / "pages" / "home.py"), default_timeout=60)
    direct.session_state["veil_principal"] = at.session_state["veil_principal"]
    direct.session_state["veil_signed_in_at"] = (
        at.session_state["veil_signed_in_at"] - timedelta(hours=9))
    direct.run()
    assert not direct.exception
    assert "Your session has ended" in direct.warning[0].value
    assert not direct.title


def test_oidc_sign_out_logs_out_of_the_provider_and_is_audited(identity_env):
    """Sign out: st.user logged out, principal gone, sign-in page, an audit entry."""
    at = oidc_app(PERSONAS["case_worker"].claims)
    [b for b in at.button if b.label == "Sign out"][0].click().run()
    assert not at.exception
    assert at.user == {"is_logged_in": False}
    assert "veil_principal" not in at.session_state
    at.run()  # the browser is back from the provider's sign-out page
    assert at.title[0].value == "Veil"
    last = audit_rows(identity_env, principal="cyril.case@programmes.example")[-1]
    assert (last.action, last.detail["reason"]) == ("logout", "signed out")
    assert last.detail["sign_ins_ended"] >= 1  # this one, and any other left open by this person


def test_demo_sign_out_returns_to_the_demo_form(identity_env):
    """A demo account signs out back to the labelled demo form."""
    at = sign_in("donor@south.demo")
    [b for b in at.button if b.label == "Sign out"][0].click().run()
    assert "veil_principal" not in at.session_state
    assert any("Demo identity source" in i.value for i in at.info)
