"""Shareable views (issue 17): the Trends view lives in the URL, survives a refresh, opens from a
map click, and its numbers can be taken away exactly as drawn."""

from __future__ import annotations

from datetime import date

from streamlit.testing.v1 import AppTest

from tests.app.conftest import open_page, widget


def _open(query_params: dict | None = None, role: str = "policy_maker") -> AppTest:
    return open_page("trends", role, query_params)


def test_a_url_opens_the_view_it_names_and_the_page_writes_its_state_back(private_demo_env):
    """metric, view, level, months from–to, areas from the URL set the widgets; unknown values
    are ignored (a URL is user input); the page writes the view it shows back to the URL."""
    at = _open({"metric": "health.nutrition/screenings", "view": "areas", "level": "dp_high",
                "from": "2026-05", "to": "2026-10", "by": "district",
                "areas": "KGL-GAS,EAS-RWA,NOT-A-PLACE"})
    assert not at.exception
    assert widget(at, "selectbox", "Metric").value == "health.nutrition/screenings"
    assert widget(at, "radio", "Show").value == "Compare areas"
    assert widget(at, "selectbox", "Privacy level").value == "dp_high"
    assert widget(at, "select_slider", "Months").value == (date(2026, 5, 1), date(2026, 10, 1))
    assert widget(at, "multiselect", "Up to five areas").value == ["KGL-GAS", "EAS-RWA"]
    assert at.query_params["areas"] == "KGL-GAS,EAS-RWA"
    widget(at, "select_slider", "Months").set_value((date(2026, 2, 1), date(2026, 10, 1))).run()
    # the address bar follows the view
    assert (at.query_params["from"], at.query_params["to"]) == ("2026-02", "2026-10")
    again = _open(dict(at.query_params.items()))
    # a refresh keeps it
    assert widget(again, "select_slider", "Months").value == (date(2026, 2, 1),
                                                               date(2026, 10, 1))
    junk = _open({"metric": "x" * 5000, "view": "<script>", "months": "-3", "level": "exact",
                  "from": "2026-13", "to": "<b>"})
    assert not junk.exception
    assert widget(junk, "radio", "Show").value == "Whole tenant"
    assert widget(junk, "selectbox", "Privacy level").value == "dp_medium"
    # the default: the 12 latest complete months
    assert widget(junk, "select_slider", "Months").value == (date(2025, 11, 1),
                                                              date(2026, 10, 1))


def test_an_older_months_link_opens_the_latest_months(private_demo_env):
    """?months=6 (links made before the month range) still opens the 6 latest months, and the
    page rewrites it as from–to."""
    at = _open({"months": "6"})
    assert widget(at, "select_slider", "Months").value == (date(2026, 5, 1), date(2026, 10, 1))
    assert "months" not in at.query_params
    assert (at.query_params["from"], at.query_params["to"]) == ("2026-05", "2026-10")


def test_a_map_click_opens_that_districts_trend_among_neighbours(private_demo_env):
    """?district=CODE (what the map's click links to) compares that district with two others."""
    at = _open({"district": "EAS-RWA"})
    assert widget(at, "radio", "Show").value == "Compare areas"
    assert widget(at, "radio", "Areas").value == "district"
    chosen = widget(at, "multiselect", "Up to five areas").value
    assert chosen[0] == "EAS-RWA" and len(chosen) == 3
    assert "district" not in at.query_params
    assert at.query_params["areas"].startswith("EAS-RWA,")


def test_the_numbers_of_a_chart_download_free_with_their_privacy_note(private_demo_env,
                                                                      monkeypatch):
    """After the release, a CSV of exactly the released cells, the guarantee on top; downloading
    spends nothing (it is the stored release)."""
    # released afresh on the click (stored releases could otherwise derive it for free)
    from privacy import Gate
    monkeypatch.setattr(Gate, "_derive", lambda self, *args, **kwargs: {})
    # a view no other test releases (the store is a copy of the shared demo, taken when this
    # module starts, so it holds what earlier test modules released)
    view = {"metric": "health.nutrition/screenings", "months": "5", "level": "dp_high"}
    at = _open(view)
    [button] = [b for b in at.button if b.label.startswith("Show trend")]
    button.click().run()
    assert not at.exception
    [download] = at.get("download_button")
    assert download.proto.label.startswith("Download the numbers")
    again = _open(view)  # a second visit: free, and the same file
    [same] = again.get("download_button")
    assert same.proto.label == download.proto.label
    assert "this view is free" in again.get("progress")[0].proto.text
