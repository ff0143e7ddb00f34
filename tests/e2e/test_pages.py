"""The insight pages in Debian's Chromium: each persona opens its pages and sees the chart or map.

Screenshots of every step go to test-artifacts/e2e/. No request leaves 127.0.0.1.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import USERS
from tests.e2e.test_sign_in import nav_links, settled, sign_in

pytestmark = pytest.mark.e2e


def _open(page, name: str):
    page.get_by_test_id("stSidebarNavLink").filter(has_text=name).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    return settled(page)


def test_policy_maker_opens_trends_map_and_insights(page, app, shot, external_requests):
    """Trends and insights draw plotly charts; the map draws a deck.gl map of districts."""
    sign_in(page, app, USERS["ana"], shot)
    assert nav_links(page) == ["Home", "Trends", "Map", "Insights", "Exports"]
    _open(page, "Trends")
    # the default window ends at the data's latest complete month, whatever today is
    expect(page.get_by_text("Data as of 31 Oct 2026").first).to_be_visible()
    page.get_by_role("button", name="Show trend").click()
    expect(page.get_by_test_id("stPlotlyChart")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Oct 2026").first).to_be_visible()
    shot("trends-chart")
    _open(page, "Map")
    expect(page.get_by_text("Data as of 31 Oct 2026").first).to_be_visible()
    expect(page.get_by_role("combobox", name="Month")).to_have_value("October 2026")
    page.get_by_role("button", name="Show map").click()
    expect(page.get_by_test_id("stDeckGlJsonChart")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("this view is free (stored release)")).to_be_visible()
    page.wait_for_timeout(1500)  # let deck.gl paint the hexagons before the screenshot
    shot("map")
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Insights").click()
    expect(page.get_by_role("heading", name="Cross-vertical insights")).to_be_visible()
    settled(page).get_by_role("button", name="Compare").click()
    expect(page.get_by_test_id("stPlotlyChart")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Correlation across")).to_be_visible()
    shot("insights")
    assert external_requests == []


def test_case_worker_opens_the_operational_list(page, app, shot, external_requests):
    """The list shows records of the case worker's tenant, with birthdates."""
    sign_in(page, app, USERS["cyril"], shot)
    assert nav_links(page) == ["Home", "lists", "Exports"]
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Operational lists").click()
    expect(page.get_by_role("heading", name="Operational lists")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("records", exact=False).last).to_be_visible()
    shot("operational-list")
    assert external_requests == []


def test_donor_opens_published_trends(page, app, shot, external_requests):
    """The donor sees the published snapshot chart and its CSV download."""
    sign_in(page, app, USERS["dana"], shot)
    assert nav_links(page) == ["Home", "trends"]
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Published trends").click()
    expect(page.get_by_role("heading", name="Published trends")).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("button", name="Download CSV")).to_be_visible()
    shot("donor-view")
    assert external_requests == []
