"""The overview home in Debian's Chromium (issue 17): a policy maker and a donor sign in through
the local provider and see their headline tiles — value, interval, change against the noise,
sparkline, data date — and the policy maker follows the link to release what is missing.

Screenshots go to test-artifacts/e2e/<test>/. No request leaves 127.0.0.1.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import USERS
from tests.e2e.test_sign_in import expect_home, settled, sign_in

pytestmark = pytest.mark.e2e


def _tile(page, title: str):
    """The tile labelled exactly ``title`` (another tile's label may contain it)."""
    return page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(title, exact=True))


def test_policy_maker_home_shows_headline_tiles(page, app, shot, external_requests):
    """Tiles from the published snapshots with sparklines; Learning mastery links to Trends
    with its cost, and the link opens Trends in the same session."""
    user = USERS["ana"]
    sign_in(page, app, user, shot)
    expect_home(page, user, "Policy maker")
    settled(page)
    expect(page.get_by_role("heading", name="Headline numbers")).to_be_visible()
    expect(page.get_by_text("Data as of 31 Oct 2026").first).to_be_visible()
    for title in ("Doses administered", "Screenings", "Pupil-days present",
                  "Grant disbursements"):
        expect(_tile(page, title)).to_be_visible()
        expect(_tile(page, title).get_by_text("vs Sep ·")).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(4, timeout=60_000)
    expect(page.get_by_text("95% interval", exact=False).first).to_be_visible()
    # every product with no published series has one (mastery's among them)
    link = page.get_by_role("link", name="Release it on Trends (ε 1)").first
    expect(link).to_be_visible()
    page.set_viewport_size({"width": 1280, "height": 1600})  # the whole overview in one shot
    page.wait_for_timeout(1000)  # let plotly paint the sparklines
    shot("home")
    link.click()
    expect(page.get_by_role("heading", name="Trends")).to_be_visible()
    expect(page).to_have_url(re.compile(rf"^{re.escape(app.url)}/trends(\?.*)?$"))
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()  # still signed in
    assert external_requests == []


def test_donor_home_shows_the_published_tiles(page, app, shot, external_requests):
    """Five published series as tiles, with the way to the published trends."""
    user = USERS["dana"]
    sign_in(page, app, user, shot)
    expect_home(page, user, "Donor")
    settled(page)
    expect(page.get_by_test_id("stMetric")).to_have_count(5)
    expect(page.get_by_text("Data as of 31 Oct 2026").first).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(5, timeout=60_000)
    link = page.get_by_role("link", name="See the published trends by region")
    expect(link).to_be_visible()
    page.set_viewport_size({"width": 1280, "height": 1600})  # the whole overview in one shot
    page.wait_for_timeout(1000)  # let plotly paint the sparklines
    shot("home")
    link.click()
    expect(page.get_by_role("heading", name="Published trends")).to_be_visible()
    assert external_requests == []
