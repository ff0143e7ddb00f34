"""Sign-in end to end (A1–A3) in Debian's Chromium against a real OIDC provider.

Each persona signs in on the provider's page, sees its role's navigation, is refused (and
audited) when it opens a page outside its role by URL, and signs out of Veil and of the
provider. An unknown user gets "No access". A session ends after VEIL_SESSION_HOURS even though
the provider's cookie lives on. No request ever leaves 127.0.0.1.
"""

from __future__ import annotations

import re

import time
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from data.bootstrap import utcnow
from data.config import load_settings
from data.engine import open_store
from data.models import AuditEntry
from tests.e2e.conftest import PASSWORD, USERS, App, User

pytestmark = pytest.mark.e2e


def audit(app: App, **where) -> list[AuditEntry]:
    store = open_store(load_settings({"VEIL_VAR_DIR": str(app.var), "VEIL_DEMO_MODE": "1"}))
    try:
        with store.read() as session:
            statement = select(AuditEntry).order_by(AuditEntry.id)
            for column, value in where.items():
                statement = statement.where(getattr(AuditEntry, column) == value)
            return list(session.scalars(statement))
    finally:
        store.dispose()


def settled(page: Page) -> Page:
    """Wait until Streamlit has finished the current run (call once its output shows)."""
    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state",
                                                            "notRunning")
    return page


def nav_links(page: Page) -> list[str]:
    """The labels of the sidebar's page links (an icon's ligature name comes first)."""
    return [text.split()[-1] for text in
            settled(page).get_by_test_id("stSidebarNavLink").all_inner_texts()]


def sign_in(page: Page, app: App, user: User, shot) -> None:
    """Veil's sign-in page → the provider's sign-in page → back in Veil."""
    page.goto(app.url)
    organisation = page.get_by_role("button", name="Sign in with your organisation")
    expect(organisation).to_be_visible()
    # OIDC is configured, so the demo accounts are off.
    expect(page.get_by_text("Demo identity source")).to_have_count(0)
    shot("veil-sign-in-page")
    organisation.click()
    page.wait_for_url(f"{app.issuer}/interaction/**")
    page.get_by_label("Username").fill(user.login)
    page.get_by_label("Password").fill(PASSWORD)
    shot("provider-sign-in-page")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{app.url}/")


def sign_out(page: Page, app: App, user: User, shot) -> None:
    """Veil's sign-out → the provider's sign-out confirmation → Veil's sign-in page."""
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{app.issuer}/session/end**")
    shot("provider-sign-out-page")
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(f"{app.url}/**")
    expect(page.get_by_role("button", name="Sign in with your organisation")).to_be_visible()
    assert nav_links(page) == []
    shot("signed-out")
    assert not [c for c in page.context.cookies() if c["name"].startswith("_streamlit_user")]


def expect_home(page: Page, user: User, title: str) -> None:
    expect(page.get_by_role("heading", name=f"Welcome, {user.name}")).to_be_visible()
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text(user.email)).to_be_visible()
    expect(sidebar.get_by_text(title, exact=False)).to_be_visible()


@pytest.mark.parametrize("login, title", [
    ("dana", "Donor"), ("cyril", "Case worker"), ("colin", "Compliance officer")])
def test_persona_signs_in_sees_its_navigation_is_refused_a_forbidden_url_and_signs_out(
        login, title, page, app, shot, external_requests):
    """The whole round trip for a persona without the Trends page."""
    user = USERS[login]
    sign_in(page, app, user, shot)
    expect_home(page, user, title)
    assert "Trends" not in nav_links(page)
    shot("home")

    refused_before = len(audit(app, principal=user.email, action="page_view",
                               outcome="refused"))
    page.goto(f"{app.url}/trends")
    expect(page.get_by_text(f"Not permitted: the {title} role cannot open the trends page"
                            )).to_be_visible()
    expect(page.get_by_role("heading", name="Trends")).to_have_count(0)
    expect(page.get_by_text("Page not found")).to_have_count(0)
    assert "Trends" not in nav_links(page), "a refused page is never listed"
    shot("forbidden-url-refused")
    refused = audit(app, principal=user.email, action="page_view", outcome="refused")
    assert len(refused) == refused_before + 1
    assert (refused[-1].target, refused[-1].role, refused[-1].tenant_id) == (
        "trends", user.role, user.tenant)

    sign_out(page, app, user, shot)
    ended = audit(app, principal=user.email, action="logout")[-1].detail
    assert ended["reason"] == "signed out" and ended["sign_ins_ended"] >= 1  # this sign-in
    assert external_requests == []


def test_policy_maker_sees_and_opens_trends(page, app, shot, external_requests):
    """A policy maker's navigation lists Home and Trends, and Trends opens."""
    user = USERS["ana"]
    sign_in(page, app, user, shot)
    expect_home(page, user, "Policy maker")
    assert nav_links(page) == ["Home", "Trends", "Map", "Insights", "Exports"]
    shot("home")
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Trends").click()
    expect(page.get_by_role("heading", name="Trends")).to_be_visible()
    # the page writes its view into the address (?metric=…&view=…): shareable, refreshable
    page.wait_for_url(re.compile(rf"^{re.escape(app.url)}/trends(\?.*)?$"))
    settled(page)
    shot("trends")
    sign_out(page, app, user, shot)
    assert external_requests == []


def test_unknown_user_is_refused_with_no_access(page, app, shot, external_requests):
    """A provider account without a role mapping sees "No access", no navigation, an audit."""
    user = USERS["sam"]
    sign_in(page, app, user, shot)
    expect(page.get_by_role("heading", name="No access")).to_be_visible()
    expect(page.get_by_text(f"{user.email} is signed in but has no role in Veil")).to_be_visible()
    assert nav_links(page) == []
    shot("no-access")
    refused = audit(app, principal=user.email, action="login")
    assert refused and (refused[-1].outcome, refused[-1].target) == ("refused", "oidc")
    page.goto(f"{app.url}/trends")  # a URL does not get round it
    expect(page.get_by_role("heading", name="No access")).to_be_visible()
    shot("no-access-on-page-url")
    sign_out(page, app, user, shot)
    assert external_requests == []


def test_wrong_password_is_refused_by_the_provider(page, app, shot):
    """The provider's sign-in page checks the password; Veil gets no identity."""
    page.goto(app.url)
    page.get_by_role("button", name="Sign in with your organisation").click()
    page.wait_for_url(f"{app.issuer}/interaction/**")
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Unknown username or wrong password.")
    shot("wrong-password")
    assert page.url.startswith(app.issuer)
    assert not [c for c in page.context.cookies() if c["name"].startswith("_streamlit_user")]


def test_session_ends_after_its_lifetime_though_the_cookie_lives_on(
        page, short_session_app, shot, external_requests):
    """VEIL_SESSION_HOURS bounds the sign-in, in the open session and after a reload."""
    app, user = short_session_app, USERS["ana"]
    sign_in(page, app, user, shot)
    expect_home(page, user, "Policy maker")
    expect(page.get_by_text("Session ends")).to_be_visible()
    shot("signed-in")
    signed_in = audit(app, principal=user.email, action="login", outcome="allowed")[-1].at
    # The session lasts 0.004 h = 14.4 s from the token's issue time, which precedes the login.
    time.sleep(max(0.0, (signed_in + timedelta(seconds=15) - utcnow()).total_seconds()))

    page.get_by_test_id("stSidebarNavLink").filter(has_text="Trends").click()
    expect(page.get_by_role("heading", name="Session ended")).to_be_visible()
    expect(page.get_by_role("heading", name="Trends")).to_have_count(0)
    assert nav_links(page) == [], "nothing of the signed-in app stays on screen"
    expect(page.get_by_text(user.email)).to_have_count(0)
    shot("session-ended")
    ended = audit(app, principal=user.email, action="logout")
    assert ended[-1].detail == {"reason": "expired", "sign_ins_ended": 0}
    assert ended[-1].at > signed_in

    page.reload()  # a new Streamlit session; the identity cookie is still there
    expect(page.get_by_role("heading", name="Session ended")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    assert [c for c in page.context.cookies() if c["name"] == "_streamlit_user"]
    shot("still-ended-after-reload")

    page.get_by_role("button", name="Sign in again").click()
    page.wait_for_url(f"{app.issuer}/interaction/**")  # prompt=login: the provider asks again
    page.get_by_label("Username").fill(user.login)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{app.url}/**")
    expect_home(page, user, "Policy maker")
    shot("signed-in-again")
    assert external_requests == []
