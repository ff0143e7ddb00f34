"""The map in Debian's Chromium, as a policy maker sees it: outlines, names, a legend, tooltips
in place names, and a click on an area that opens its trend. No request leaves 127.0.0.1."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from dashboard.components.geography import project, tenant_geography
from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.geo import geography
from tests.e2e.conftest import USERS
from tests.e2e.test_sign_in import settled, sign_in

pytestmark = pytest.mark.e2e


def _district_pixel(canvas, tenant: str, code: str) -> tuple[float, float]:
    """Where the centroid of district ``code`` is drawn in the page at the map's opening view."""
    catalog = load_catalog(PROJECT_ROOT / "catalog")
    drawn = tenant_geography(catalog, geography(catalog), tenant)
    [district] = [d for d in catalog.districts_of(tenant) if d.code == code]
    box = canvas.bounding_box()
    x, y = project(drawn.view, district.lat, district.lng, width=box["width"],
                   height=box["height"])
    return box["x"] + x, box["y"] + y


def test_policy_maker_reads_the_map_and_opens_a_districts_trend(page, app, shot,
                                                                 external_requests):
    """The map opens on the whole tenant with its legend; hovering Nyagatare (the northern
    district the old view cut off) names it with value ± interval; a click opens its trend."""
    page.set_viewport_size({"width": 1280, "height": 1500})  # the map and legend in one shot
    sign_in(page, app, USERS["ana"], shot)
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Map").click()
    expect(page.get_by_role("heading", name="Map")).to_be_visible()
    # September, not the default October: test_pages.py releases October's map itself
    settled(page).get_by_role("combobox", name="Month").click()
    page.get_by_role("option", name="September 2026").click()
    settled(page).get_by_role("button", name=re.compile("Show map")).click()
    chart = page.get_by_test_id("stDeckGlJsonChart")
    expect(chart).to_be_visible(timeout=60_000)
    canvas = chart.locator("canvas").last
    expect(canvas).to_be_visible()
    legend = page.locator(".veil-map-legend")
    expect(legend).to_be_visible()
    expect(legend).to_contain_text("Doses administered, September 2026")
    expect(legend).to_contain_text("district outline")
    expect(page.get_by_text("Click an area to open its trend.")).to_be_visible()
    settled(page).wait_for_timeout(1500)  # let deck.gl paint before the screenshot
    shot("map")

    x, y = _district_pixel(canvas, "kigali-east", "EAS-NYA")
    page.mouse.move(x, y)
    tip = page.locator(".deck-tooltip")
    expect(tip).to_contain_text(re.compile(r"Nyagatare.*: [\d,]+ \([\d.]+% interval"))
    assert not re.search(r"\b8[0-9a-f]{14}\b", tip.inner_text())
    shot("tooltip")
    page.mouse.click(x, y)
    link = page.get_by_role("link", name=re.compile("Open the trend of .* in Nyagatare"))
    expect(link).to_be_visible()
    shot("selected")
    assert "district=EAS-NYA" in link.get_attribute("href")
    link.click()
    expect(page.get_by_role("heading", name="Trends")).to_be_visible()
    # Trends reads ?district= and opens on Nyagatare (among its neighbours)
    expect(settled(page).get_by_text("Nyagatare").first).to_be_visible()
    assert "EAS-NYA" in page.url
    shot("trend-of-the-district")
    assert external_requests == []
