"""Each persona's whole product in Debian's Chromium (issue 17): the overview's tiles, every page
of the role (a screenshot of each in test-artifacts/e2e/), views that survive a refresh through
the address bar, a chart's numbers downloaded, a demo sign-in that survives a refresh (and dies
with its sign-out), and the dark theme.

No request leaves 127.0.0.1. Every wait is for an element or a URL, never a fixed sleep, except
the short paint delay before a screenshot.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import USERS, App
from tests.e2e.test_sign_in import audit, expect_home, nav_links, settled, sign_in

pytestmark = pytest.mark.e2e

#: a page's link in the sidebar → the heading it opens on
HEADINGS = {"Trends": "Trends", "Map": "Map", "Insights": "Cross-vertical insights",
            "Exports": "Exports", "Operational lists": "Operational lists",
            "Published trends": "Published trends", "Compliance": "Compliance"}
#: persona → (role title, the sidebar links of its pages after Home)
PERSONAS = {"ana": ("Policy maker", ["Trends", "Map", "Insights", "Exports"]),
            "dana": ("Donor", ["Published trends"]),
            "cyril": ("Case worker", ["Operational lists", "Exports"]),
            "colin": ("Compliance officer", ["Compliance"])}


def _query(page: Page) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(page.url).query).items()}


def _release_if_asked(page: Page, name: str, shown: str) -> None:
    """Click the release button if this view is not stored yet (another test may have
    released it): wait until either the drawn view (test id ``shown``) or the button shows."""
    button = page.get_by_role("button", name=re.compile(name))
    expect(page.get_by_test_id(shown).or_(button).first).to_be_visible(timeout=60_000)
    if button.count():
        button.click()
    expect(page.get_by_test_id(shown)).to_be_visible(timeout=60_000)


def _expect_tiles(page: Page, login: str) -> None:
    """The overview a persona opens on: the numbers its role looks at first."""
    metrics = page.get_by_test_id("stMetric")
    if login == "ana":
        expect(page.get_by_role("heading", name="Headline numbers")).to_be_visible()
        for title in ("Doses administered", "Screenings", "Pupil-days present",
                      "Grant disbursements"):
            # the tile labelled exactly so ("NeuroScreen screenings" contains "Screenings")
            expect(metrics.filter(has=page.get_by_test_id("stMetricLabel").get_by_text(
                title, exact=True))).to_be_visible()
        expect(page.get_by_text("Data as of 31 Oct 2026").first).to_be_visible()
    elif login == "dana":
        expect(metrics).to_have_count(5)
        expect(page.get_by_text("Data as of 31 Oct 2026").first).to_be_visible()
    elif login == "cyril":
        expect(page.get_by_role("heading", name=re.compile("Open work"))).to_be_visible()
        expect(metrics.filter(has_text="Waiting for verification")).to_be_visible()
        expect(metrics.filter(has_text="Verified")).to_be_visible()
    else:
        expect(page.get_by_role("heading", name="Needs your attention")).to_be_visible()
        expect(metrics.first).to_be_visible()


@pytest.mark.parametrize("login", list(PERSONAS))
def test_every_page_of_the_persona(login, page, app, shot, external_requests):
    """The overview's tiles, then every page of the role opened from the menu, each on its
    heading with no error box; a full-page screenshot of each (light theme)."""
    user, (title, links) = USERS[login], PERSONAS[login]
    sign_in(page, app, user, shot)
    expect_home(page, user, title)
    page.set_viewport_size({"width": 1280, "height": 1800})  # each page whole, pager included
    _expect_tiles(settled(page), login)
    page.wait_for_timeout(1000)  # let plotly paint the sparklines
    shot("home")
    for link in links:
        page.get_by_test_id("stSidebarNavLink").filter(has_text=link).click()
        expect(page.get_by_role("heading", name=HEADINGS[link], exact=True)).to_be_visible()
        settled(page)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        page.wait_for_timeout(500)
        shot(link.lower().replace(" ", "-"))
    assert len(nav_links(page)) == len(links) + 1
    assert external_requests == []


def test_policy_makers_trend_survives_a_refresh_and_its_numbers_download(
        page, app, shot, external_requests, tmp_path):
    """A Trends address (metric, areas, months from–to) opens that view; after a refresh the
    address and the view are the same; the chart's CSV is the release with its privacy note."""
    sign_in(page, app, USERS["ana"], shot)
    view = ("metric=health.vaccinations/doses&view=areas&level=dp_medium&from=2026-05"
            "&to=2026-10&by=district&areas=KGL-GAS,EAS-RWA")
    page.goto(f"{app.url}/trends?{view}")
    expect(page.get_by_role("heading", name="Trends")).to_be_visible()
    _release_if_asked(page, "Show trend", "stPlotlyChart")
    expect(page.get_by_test_id("stPlotlyChart")).to_be_visible(timeout=60_000)
    before = _query(page)
    assert (before["from"], before["to"], before["areas"]) == ("2026-05", "2026-10",
                                                               "KGL-GAS,EAS-RWA")
    shot("trends-from-the-address")
    page.reload()
    expect(page.get_by_role("heading", name="Trends")).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart")).to_be_visible(timeout=60_000)
    assert _query(settled(page)) == before
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()  # still signed in
    expect(page.get_by_text("May 2026").first).to_be_visible()
    expect(page.get_by_text("Gasabo").first).to_be_visible()
    shot("trends-after-refresh")

    with page.expect_download() as download:
        page.get_by_role("button", name=re.compile("Download the numbers")).first.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    text = saved.read_text()
    assert text.startswith("# Veil release ")
    assert "95% intervals" in text or "% intervals" in text
    header = next(line for line in text.splitlines() if not line.startswith("#"))
    assert header == "month,district,value,lower,upper,status"
    assert "2026-05" in text and "2026-10" in text and "2026-04" not in text
    assert external_requests == []


def test_the_map_opens_from_its_address_after_a_refresh(page, app, shot, external_requests):
    """?month=…&areas=… picks the map's month and areas, and a refresh keeps them."""
    sign_in(page, app, USERS["ana"], shot)
    page.goto(f"{app.url}/map?month=2026-09&areas=district&level=dp_medium")
    expect(page.get_by_role("heading", name="Map")).to_be_visible()
    expect(page.get_by_role("combobox", name="Month")).to_have_value("September 2026")
    page.reload()
    expect(page.get_by_role("combobox", name="Month")).to_have_value("September 2026")
    assert _query(settled(page))["month"] == "2026-09"
    _release_if_asked(page, "Show map", "stDeckGlJsonChart")
    expect(page.get_by_test_id("stDeckGlJsonChart")).to_be_visible(timeout=60_000)
    expect(page.locator(".veil-map-legend")).to_contain_text("district outline")
    page.wait_for_timeout(1500)  # let deck.gl paint
    shot("map-after-refresh")
    assert external_requests == []


def test_compliance_filters_live_in_the_address(page, app, shot, external_requests):
    """A compliance link opens its section with its filters; a filter chosen on the page is
    written to the address and is still chosen after a refresh."""
    sign_in(page, app, USERS["colin"], shot)
    page.goto(f"{app.url}/compliance?section=Audit+log&audit_period=All+time"
              "&audit_outcome=refused")
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible(timeout=60_000)
    outcome = page.get_by_role("combobox", name="Outcome")
    expect(outcome).to_have_value("refused")
    expect(page.get_by_role("combobox", name="Period")).to_have_value("All time")
    outcome.click()
    page.get_by_role("option", name="allowed", exact=True).click()
    page.wait_for_url(re.compile(r"[?&]audit_outcome=allowed\b"))
    assert _query(settled(page))["audit_period"] == "All time"
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=60_000)
    page.reload()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("combobox", name="Outcome")).to_have_value("allowed")
    assert _query(settled(page))["section"] == "Audit log"
    shot("compliance-audit-from-the-address")
    assert external_requests == []


def test_compliance_sees_the_cost_of_each_domain(page, app, shot, external_requests):
    """The showback names every domain with its storage, rebuilds and ε, linked by address."""
    sign_in(page, app, USERS["colin"], shot)
    page.goto(f"{app.url}/compliance?section=Cost+by+domain&showback_days=366")
    expect(page.get_by_role("heading", name="Cost by domain")).to_be_visible(timeout=60_000)
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"\(366 days\)"))).to_be_visible()
    page.wait_for_timeout(800)  # let the grid paint
    shot("compliance-cost-by-domain")
    assert external_requests == []


def test_case_workers_list_page_and_size_survive_a_refresh(page, app, shot,
                                                            external_requests):
    """The pager sits beside "Page x of y · … per page"; page and size are in the address."""
    sign_in(page, app, USERS["cyril"], shot)
    page.goto(f"{app.url}/lists?status=any&size=25&page=2")
    expect(page.get_by_role("heading", name="Operational lists")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Page 2 of \d+ · [\d,]+ records · 25 per page"))
           ).to_be_visible()
    page.reload()
    where = page.get_by_text(re.compile(r"Page 2 of \d+ · [\d,]+ records · 25 per page"))
    expect(where).to_be_visible()
    shot("list-page-2-after-refresh")
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text(re.compile(r"Page 3 of \d+ · [\d,]+ records · 25 per page"))
           ).to_be_visible()
    page.wait_for_url(re.compile(r"[?&]page=3\b"))
    assert _query(page)["size"] == "25"
    shot("list-page-3")
    assert external_requests == []


def _demo_sign_in(page: Page, app: App, username: str) -> None:
    page.goto(app.url)
    expect(page.get_by_text("Demo identity source")).to_be_visible()
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill("veil-demo")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile("Welcome, "))).to_be_visible()


def _demo_cookie(page: Page) -> dict | None:
    return next((c for c in page.context.cookies() if c["name"] == "veil_demo"), None)


def test_a_demo_sign_in_survives_a_refresh_and_not_its_sign_out(page, demo_app, shot,
                                                                external_requests):
    """A demo sign-in resumes after a reload (on the gate's record, via a SameSite cookie);
    after sign-out the same cookie, replayed, gets the sign-in page and is audited."""
    app = demo_app
    _demo_sign_in(page, app, "policy.maker@kigali-east.demo")
    page.wait_for_function("() => document.cookie.includes('veil_demo=')")
    cookie = _demo_cookie(page)
    assert cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    shot("demo-signed-in")
    page.goto(f"{app.url}/trends?metric=health.vaccinations/doses&from=2026-06&to=2026-10")
    expect(page.get_by_role("heading", name="Trends")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="Trends")).to_be_visible()
    expect(page.get_by_text("Demo identity", exact=True)).to_be_visible()
    assert (_query(settled(page))["from"], _query(page)["to"]) == ("2026-06", "2026-10")
    expect(page.get_by_text("Jun 2026").first).to_be_visible()
    shot("demo-still-signed-in-after-refresh")
    signed_in = audit(app, action="login", target="demo", outcome="allowed")
    assert [a.principal for a in signed_in].count("policy.maker@kigali-east.demo") == 1

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("Demo identity source")).to_be_visible()
    page.wait_for_function("() => !document.cookie.includes('veil_demo=')")
    shot("demo-signed-out")
    page.context.add_cookies([cookie])  # a copy of the cookie, kept from before the sign-out
    page.goto(app.url)
    expect(page.get_by_text("This sign-in has ended (signed out)")).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile("Welcome, "))).to_have_count(0)
    assert nav_links(page) == []
    shot("demo-cookie-replayed-after-sign-out")
    refused = audit(app, action="login", target="demo", outcome="refused")
    assert refused and refused[-1].detail["reason"] == "sign-in signed out"
    assert refused[-1].principal == "policy.maker@kigali-east.demo"
    assert external_requests == []


@pytest.mark.parametrize("color_scheme", ["dark"])
def test_the_dark_theme_follows_the_system_and_keeps_the_map_readable(
        color_scheme, page, app, shot, external_requests):
    """With the system in dark mode the app opens in Veil's dark theme; the map is drawn on a
    dark ground with light names."""
    sign_in(page, app, USERS["ana"], shot)
    # Streamlit paints its own default theme first and Veil's once the app's config arrives:
    # wait for Veil's (a single read right after sign-in raced it on a loaded CI machine).
    expect(page.get_by_test_id("stApp")).to_have_css("background-color", "rgb(20, 30, 37)",
                                                     timeout=60_000)
    page.set_viewport_size({"width": 1280, "height": 1400})
    page.wait_for_timeout(1000)
    shot("home-dark")
    page.goto(f"{app.url}/map?month=2026-09&areas=district&level=dp_medium")
    _release_if_asked(page, "Show map", "stDeckGlJsonChart")
    expect(page.get_by_test_id("stDeckGlJsonChart")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1500)  # let deck.gl paint
    shot("map-dark")
    page.goto(f"{app.url}/trends?metric=health.vaccinations/doses&from=2026-05&to=2026-10")
    _release_if_asked(page, "Show trend", "stPlotlyChart")
    expect(page.get_by_test_id("stPlotlyChart")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1000)
    shot("trends-dark")
    assert external_requests == []
