"""Shareable views beyond Trends (issue 17): the map, insights, exports, operational lists and
published trends read their view from the URL, ignore what is not a choice, and write the view
they show back, so a refresh (a new session on the same address) shows the same thing."""

from __future__ import annotations

from datetime import date

from streamlit.testing.v1 import AppTest

from tests.app.conftest import open_page, widget


def _open(page: str, role: str, query_params: dict | None = None, *,
          tenant: str = "kigali-east") -> AppTest:
    at = open_page(page, role, query_params, tenant=tenant)
    assert not at.exception
    return at


def _refresh(at: AppTest, page: str, role: str, **kwargs) -> AppTest:
    """A new session on the address the page wrote."""
    return _open(page, role, dict(at.query_params.items()), **kwargs)


def test_the_map_reads_and_writes_its_month_areas_and_level(private_demo_env):
    """?month=…&areas=…&level=… pick the map's view; a refresh keeps it."""
    at = _open("map", "researcher", {"month": "2026-09", "areas": "district",
                                     "level": "dp_high", "metric": "nope"})
    assert widget(at, "selectbox", "Month").value == date(2026, 9, 1)
    assert widget(at, "selectbox", "Areas").value == "district"
    assert widget(at, "selectbox", "Privacy level").value == "dp_high"
    assert at.query_params["metric"] == "health.vaccinations/doses"  # the unknown one ignored
    widget(at, "selectbox", "Month").set_value(date(2026, 8, 1)).run()
    assert at.query_params["month"] == "2026-08"
    again = _refresh(at, "map", "researcher")
    assert widget(again, "selectbox", "Month").value == date(2026, 8, 1)


def test_insights_read_and_write_both_metrics_and_the_window(private_demo_env):
    """?x=…&y=…&from=…&to=… open that comparison; unknown months fall back to the default."""
    at = _open("insights", "policy_maker", {
        "x": "education.attendance/days_present", "y": "social.grants/disbursements",
        "from": "2026-03", "to": "2026-08"})
    assert widget(at, "selectbox", "First metric").value == "education.attendance/days_present"
    assert widget(at, "select_slider", "Months").value == (date(2026, 3, 1), date(2026, 8, 1))
    again = _refresh(at, "insights", "policy_maker")
    assert widget(again, "select_slider", "Months").value == (date(2026, 3, 1),
                                                               date(2026, 8, 1))
    junk = _open("insights", "policy_maker", {"from": "1999-01", "to": "2026-13"})
    assert widget(junk, "select_slider", "Months").value == (date(2025, 11, 1),
                                                              date(2026, 10, 1))


def test_the_list_keeps_its_status_size_and_page_and_the_pager_moves_it(private_demo_env):
    """?status=…&size=…&page=… open that page; Next moves to the following one; the search is
    never written to the address."""
    at = _open("lists", "case_worker", {"status": "any", "size": "25", "page": "2"},
               tenant="south")
    assert widget(at, "selectbox", "Verification status").value == "any"
    assert widget(at, "selectbox", "Rows per page").value == "25"
    assert len(at.dataframe[0].value) == 25
    assert at.caption[-1].value.startswith("Page 2 of ")
    assert at.caption[-1].value.endswith(" · 25 per page")
    [b for b in at.button if b.label == "Next"][0].click().run()
    assert at.caption[-1].value.startswith("Page 3 of ")
    assert at.query_params["page"] == "3"
    again = _refresh(at, "lists", "case_worker", tenant="south")
    assert again.caption[-1].value.startswith("Page 3 of ")
    widget(again, "text_input", "Search agent, district or registration id").input(
        "AG-0").run()
    assert "AG-0" not in "".join(again.query_params.values())
    assert again.caption[-1].value.startswith("Page 1 of ")  # a new search starts at page 1


def test_an_old_link_past_the_last_page_opens_the_last_page(private_demo_env):
    """A page number beyond the list (it shrank since) shows its last page, not an error."""
    at = _open("lists", "case_worker", {"status": "any", "size": "100", "page": "99999"},
               tenant="south")
    caption = at.caption[-1].value
    last = caption.split(" of ")[1].split(" ")[0]
    assert caption.startswith(f"Page {last} of {last} ")


def test_exports_read_and_write_the_product_metric_and_breakdown(private_demo_env):
    """?product=…&metric=…&by=…&from=…&to=… fill the export form's choices."""
    at = _open("exports", "policy_maker", {
        "product": "health.nutrition", "metric": "screenings", "by": "district",
        "from": "2026-07", "to": "2026-10"})
    assert widget(at, "selectbox", "Data product").value == "health.nutrition"
    assert widget(at, "selectbox", "Metric").value == "screenings"
    assert widget(at, "selectbox", "Break down by").value == "district"
    assert widget(at, "select_slider", "Months").value == (date(2026, 7, 1), date(2026, 10, 1))
    assert at.query_params["by"] == "district"


def test_published_trends_keep_the_chosen_series(private_demo_env):
    """?series=product/metric opens that published series; a refresh keeps the choice."""
    first = _open("donor", "donor", tenant="south")
    box = widget(first, "selectbox", "Series")
    assert len(box.options) > 1
    box.select_index(1).run()
    chosen = widget(first, "selectbox", "Series").value
    assert first.query_params["series"] == f"{chosen.product}/{chosen.query.metric}"
    again = _refresh(first, "donor", "donor", tenant="south")
    assert widget(again, "selectbox", "Series").value.id == chosen.id
