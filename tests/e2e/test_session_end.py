"""Sign-out holds, and broken secrets let nobody in (issue 15.2 and 15.5), in Chromium.

A copy of the identity cookie taken before sign-out signs nobody back in: the server keeps a
record of each sign-in and refuses one that has ended. A dashboard whose secrets file does not
parse offers no sign-in at all — not even the demo accounts — and names the file and line.
"""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import APPS, USERS, _free_port, start_streamlit
from tests.e2e.test_sign_in import audit, expect_home, nav_links, settled, sign_in, sign_out

pytestmark = pytest.mark.e2e


def _loopback_context(browser, external_requests: list[str]):
    """A fresh browser context (no cookies) whose traffic is confined to 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def loopback_only(route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            external_requests.append(url)
            route.abort()

    context.route("**/*", loopback_only)
    context.set_default_timeout(30_000)
    return context


def test_a_cookie_copied_before_sign_out_does_not_sign_back_in(
        page, app, browser, shot, artifacts, request, external_requests):
    """Copy the identity cookie, sign out, replay it in a fresh browser: the sign-in page."""
    user = USERS["ana"]
    sign_in(page, app, user, shot)
    expect_home(page, user, "Policy maker")
    copied = [c for c in page.context.cookies() if c["name"].startswith("_streamlit_user")]
    assert copied, "the identity cookie is there to copy"

    # Before sign-out the copy is as good as the original: this is what has to stop.
    thief = _loopback_context(browser, external_requests)
    try:
        thief.add_cookies(copied)
        replay = thief.new_page()
        replay.goto(app.url)
        expect_home(replay, user, "Policy maker")
    finally:
        thief.close()

    sign_out(page, app, user, shot)
    refused_before = len(audit(app, principal=user.email, action="login", outcome="refused"))

    thief = _loopback_context(browser, external_requests)
    try:
        thief.add_cookies(copied)
        replay = thief.new_page()
        for path in ("/", "/trends"):
            replay.goto(f"{app.url}{path}")
            expect(replay.get_by_role("button", name="Sign in with your organisation")
                   ).to_be_visible()
            expect(replay.get_by_text("This sign-in has ended")).to_be_visible()
            expect(replay.get_by_role("heading", name=f"Welcome, {user.name}")).to_have_count(0)
            expect(replay.get_by_role("heading", name="Trends")).to_have_count(0)
            assert nav_links(replay) == []
            expect(replay.get_by_text(user.email)).to_have_count(0)
            replay.screenshot(path=str(artifacts / request.node.name /
                                       f"replayed-cookie-at{path.replace('/', '-')}.png"),
                              full_page=True)
    finally:
        thief.close()
    refused = audit(app, principal=user.email, action="login", outcome="refused")
    assert len(refused) >= refused_before + 2, "each replayed request is refused on record"
    assert {a.detail["reason"] for a in refused[refused_before:]} == {"sign-in signed out"}
    assert external_requests == []


@pytest.fixture
def broken_secrets_app(provider, e2e_var, e2e_mappings, e2e_dir, artifacts):
    """The dashboard in demo mode (demo accounts would be on) with a secrets file that does
    not parse: an [auth] section whose closing bracket is missing."""
    port = _free_port()
    secrets = e2e_dir / "secrets-broken.toml"
    secrets.write_text(f"""[auth
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "veil-e2e-cookie-secret-broken-0123456789abcdef"
client_id = "veil-e2e"
client_secret = "veil-e2e-client-secret"
server_metadata_url = "{provider.issuer}/.well-known/openid-configuration"
""")
    assert "broken" not in APPS
    log = e2e_dir / "streamlit-broken-secrets.log"
    process = start_streamlit(secrets=secrets, port=port, log=log, what="(broken secrets)",
                              VEIL_VAR_DIR=str(e2e_var), VEIL_DEMO_MODE="1",
                              VEIL_ROLE_MAPPINGS=str(e2e_mappings), VEIL_EXPORT_WORKER="0")
    try:
        yield f"http://127.0.0.1:{port}", secrets
    finally:
        process.stop()
        shutil.copy(log, artifacts / log.name)


def test_unparsable_secrets_offer_no_sign_in_and_name_the_file(
        page, broken_secrets_app, shot, external_requests):
    """Demo mode, broken secrets: no demo form, no organisation button; the file and line."""
    url, secrets = broken_secrets_app
    page.goto(url)
    expect(page.get_by_text(f"{secrets}: cannot be read as TOML")).to_be_visible()
    settled(page)
    expect(page.get_by_text("line 1", exact=False)).to_be_visible()
    expect(page.get_by_text("Demo identity source")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign in with your organisation")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_have_count(0)
    expect(page.get_by_label("Username")).to_have_count(0)
    shot("broken-secrets")
    assert external_requests == []
