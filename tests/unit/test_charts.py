"""Charts and tables of releases: months on the axis, gaps not zeros, intervals everywhere."""

from __future__ import annotations

from datetime import date, datetime
from types import SimpleNamespace

import pandas as pd
import pytest

from dashboard.components.charts import (
    mark_definition_changes,
    period_chart,
    period_frame,
    release_frame,
    series_chart,
    trend_chart,
)
from privacy import Cell, Epsilon, Query, Release, VeilBug

SUPPRESSED = None


def _release(start: date, end: date, values, *, measure: str = "count",
             half: float = 10.3) -> Release:
    """An ungrouped monthly release built by hand: None is a suppressed month."""
    query = Query(product="p", metric="m", start=start, end=end, level="dp_medium")
    cells = []
    for month, value in zip(query.months, values, strict=True):
        key = (f"{month:%Y-%m}", "T")
        if value is None:
            cells.append(Cell(key=key, value=None, lower=None, upper=None, noise_scale=1.0,
                              status="suppressed"))
        else:
            cells.append(Cell(key=key, value=float(value), lower=value - half,
                              upper=value + half, noise_scale=1.0, status="noisy"))
    return _wrap(query, cells, measure=measure)


def _wrap(query: Query, cells, *, measure: str = "count") -> Release:
    return Release(id="r" * 16, tenant="T", product="p", query=query, cells=tuple(cells),
                   epsilon=Epsilon(1.0), charged=Epsilon(1.0), reused=False,
                   mechanism="laplace", k=5, confidence=0.95, privacy_unit="person",
                   policy_version="a" * 40, data_version=1, digest="d",
                   created_at=datetime(2026, 12, 5), measure=measure)


def _current_and_earlier():
    """Dec 2025–Nov 2026 (March suppressed) and Dec 2024–Nov 2025."""
    current = [100, 101, 102, SUPPRESSED, 104, 105, 106, 107, 108, 109, 110, 111]
    earlier = [50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61]
    return (_release(date(2025, 12, 1), date(2026, 11, 1), current),
            _release(date(2024, 12, 1), date(2025, 11, 1), earlier))


def _line(figure, name):
    """The trace that draws ``name``'s values (not its band)."""
    return next(t for t in figure.data if t.name == name and t.mode == "lines+markers")


def _points(trace) -> dict[date, float | None]:
    return dict(zip(trace.x, trace.y))


def _value_points(figure):
    """Every (x, y) drawn on the value axis, bands excluded."""
    return [(x, y) for t in figure.data if t.fill is None and t.yaxis in (None, "y")
            for x, y in zip(t.x, t.y) if x is not None]


# --- the year-earlier comparison --------------------------------------------------------------


def test_period_chart_x_is_the_current_window_in_order_for_both_series():
    """Dec 2025 comes first and Nov 2026 last; December never follows November."""
    current, earlier = _current_and_earlier()
    figure = period_chart(current, earlier, title="t", unit="people")
    expected = list(current.query.months)
    for name in ("Dec 2025–Nov 2026", "Dec 2024–Nov 2025"):
        assert list(_line(figure, name).x) == expected
    assert expected[0] == date(2025, 12, 1) and expected[-1] == date(2026, 11, 1)


def test_period_chart_aligns_the_earlier_january_with_the_current_january():
    """The point drawn at Jan 2026 on the earlier line is January 2025's value, named so."""
    current, earlier = _current_and_earlier()
    figure = period_chart(current, earlier, title="t", unit="people")
    now, before = _line(figure, "Dec 2025–Nov 2026"), _line(figure, "Dec 2024–Nov 2025")
    january = list(now.x).index(date(2026, 1, 1))
    assert before.x[january] == date(2026, 1, 1)
    assert before.y[january] == 51.0 and now.y[january] == 101.0
    assert before.customdata[january][0] == "Jan 2025"
    assert now.customdata[january][0] == "Jan 2026"


def test_period_chart_hover_gives_the_interval():
    """Hover reads "Nov 2025: 61 (95% interval 50–72)"-style: month label, value, bounds."""
    current, earlier = _current_and_earlier()
    before = _line(period_chart(current, earlier, title="t", unit="people"),
                   "Dec 2024–Nov 2025")
    assert before.hovertemplate.startswith(
        "%{customdata[0]}: %{y:,.0f} (95% interval %{customdata[1]:,.0f}–%{customdata[2]:,.0f})")
    assert list(before.customdata[-1]) == ["Nov 2025", pytest.approx(50.7), pytest.approx(71.3)]


def test_period_chart_draws_a_band_for_each_series():
    """Each year has a filled band that spans its own bounds."""
    current, earlier = _current_and_earlier()
    figure = period_chart(current, earlier, title="t", unit="people")
    bands = {t.name: t for t in figure.data if t.fill == "toself"}
    assert set(bands) == {"95% interval, Dec 2025 to Nov 2026",
                          "95% interval, Dec 2024 to Nov 2025"}
    earlier_band = [y for y in bands["95% interval, Dec 2024 to Nov 2025"].y if y is not None]
    assert max(earlier_band) == pytest.approx(61 + 10.3)
    assert min(earlier_band) == pytest.approx(50 - 10.3)


def test_period_chart_shows_a_suppressed_month_as_a_gap():
    """March 2026 is suppressed: the current line has no value there, and nothing is 0."""
    current, earlier = _current_and_earlier()
    figure = period_chart(current, earlier, title="t", unit="people")
    assert _points(_line(figure, "Dec 2025–Nov 2026"))[date(2026, 3, 1)] is None
    assert _line(figure, "Dec 2025–Nov 2026").connectgaps is False
    assert all(y != 0 for _, y in _value_points(figure))


def test_period_frame_labels_both_years_and_the_change_in_window_order():
    """One row per current month next to the same month a year earlier, with the change."""
    current, earlier = _current_and_earlier()
    frame = period_frame(current, earlier)
    assert list(frame.columns) == ["month", "value", "lower", "upper", "status",
                                   "earlier_month", "earlier_value", "earlier_lower",
                                   "earlier_upper", "earlier_status", "change"]
    assert list(frame["month"]) == [f"{m:%Y-%m}" for m in current.query.months]
    january = frame.set_index("month").loc["2026-01"]
    assert (january["earlier_month"], january["value"], january["earlier_value"],
            january["change"]) == ("2025-01", 101, 51, 50)
    march = frame.set_index("month").loc["2026-03"]
    assert pd.isna(march["value"]) and pd.isna(march["change"])
    assert march["status"] == "suppressed" and march["earlier_value"] == 53


def test_period_chart_refuses_a_grouped_release():
    """Only ungrouped monthly series compare month by month."""
    query = Query(product="p", metric="m", start=date(2026, 1, 1), end=date(2026, 1, 1),
                  level="dp_medium", group_by=("month", "district"))
    grouped = _wrap(query, [Cell(key=("2026-01", "D1"), value=9.0, lower=1.0, upper=17.0,
                                 noise_scale=1.0, status="noisy")])
    with pytest.raises(VeilBug, match="ungrouped monthly series"):
        period_chart(grouped, grouped, title="t", unit="people")


# --- axes, gaps and partial months ------------------------------------------------------------


@pytest.mark.parametrize("chart", ["trend", "period", "series"])
def test_month_axis_ticks_are_months(chart):
    """Real dates on the first of each month, ticks every month, labelled month over year."""
    current, earlier = _current_and_earlier()
    if chart == "trend":
        figure = trend_chart(current, title="t", unit="people")
    elif chart == "period":
        figure = period_chart(current, earlier, title="t", unit="people")
    else:
        figure = series_chart(_by_district(), title="t", unit="people", names={})
    axis = figure.layout.xaxis
    assert (axis.type, axis.tickformat, axis.dtick) == ("date", "%b<br>%Y", "M1")
    assert all(x.day == 1 for t in figure.data for x in t.x if x is not None
               and t.fill is None)


def test_long_windows_tick_every_third_month():
    """Two years of months get a tick every quarter, still on months."""
    release = _release(date(2025, 1, 1), date(2026, 12, 1), list(range(100, 124)))
    axis = trend_chart(release, title="t", unit="people").layout.xaxis
    assert (axis.dtick, axis.tick0) == ("M3", date(2025, 1, 1))


def test_trend_chart_never_draws_a_suppressed_month_as_zero():
    """The suppressed month is a gap on the value axis; its marker lives on a hidden axis."""
    current, _ = _current_and_earlier()
    figure = trend_chart(current, title="t", unit="people")
    assert _points(_line(figure, "people"))[date(2026, 3, 1)] is None
    assert all(not (x == date(2026, 3, 1) and y is not None) for x, y in _value_points(figure))
    assert all(y != 0 for _, y in _value_points(figure))
    marker = next(t for t in figure.data if t.name == "suppressed (< k = 5)")
    assert marker.yaxis == "y2" and list(marker.x) == [date(2026, 3, 1)]
    assert figure.layout.yaxis2.visible is False
    assert any(s.x0 < date(2026, 3, 1) < s.x1 for s in figure.layout.shapes)


def test_trend_chart_draws_partial_months_hollow_and_off_the_solid_line():
    """A partial month is a hollow marker labelled "partial month", joined by a dashed line."""
    current, _ = _current_and_earlier()
    figure = trend_chart(current, title="t", unit="people", partial={"2026-11"})
    assert _points(_line(figure, "people"))[date(2026, 11, 1)] is None
    hollow = next(t for t in figure.data if t.name == "partial month")
    assert list(hollow.x) == [date(2026, 11, 1)] and list(hollow.y) == [111.0]
    assert hollow.marker.symbol == "circle-open"
    dashed = next(t for t in figure.data if t.mode == "lines" and t.line.dash == "dash")
    assert list(dashed.x) == [date(2026, 10, 1), date(2026, 11, 1), None]


def test_trend_chart_without_partial_months_has_no_partial_legend():
    """Nothing is labelled partial unless the caller says so."""
    current, _ = _current_and_earlier()
    assert not any(t.name == "partial month"
                   for t in trend_chart(current, title="t", unit="people").data)


def _by_district() -> Release:
    """Two districts over Dec 2025–Nov 2026; D2 is rolled up into its state in April."""
    query = Query(product="p", metric="m", start=date(2025, 12, 1), end=date(2026, 11, 1),
                  level="dp_medium", group_by=("month", "district"))
    cells = []
    for i, month in enumerate(query.months):
        for district in ("D1", "D2"):
            key = (f"{month:%Y-%m}", district)
            if district == "D2" and month == date(2026, 4, 1):
                cells.append(Cell(key=key, value=None, lower=None, upper=None,
                                  noise_scale=1.0, status="rolled_up:S1"))
            else:
                cells.append(Cell(key=key, value=20.0 + i, lower=10.0 + i, upper=30.0 + i,
                                  noise_scale=1.0, status="noisy"))
    return _wrap(query, cells)


def test_series_chart_shows_a_rolled_up_month_as_a_gap():
    """D2's April is counted in its state: a gap in D2's line, not a zero."""
    figure = series_chart(_by_district(), title="t", unit="people",
                          names={"D1": "One", "D2": "Two"})
    two = _line(figure, "Two")
    assert list(two.x) == list(_by_district().query.months)
    assert _points(two)[date(2026, 4, 1)] is None
    assert _points(_line(figure, "One"))[date(2026, 4, 1)] == 24.0


def test_series_chart_keeps_only_the_chosen_areas():
    """``only`` limits the lines drawn."""
    figure = series_chart(_by_district(), title="t", unit="people", names={}, only=["D1"])
    assert {t.name for t in figure.data if t.mode == "lines+markers"} == {"D1"}


def test_definition_change_marker_sits_on_the_month_date():
    """The KPI marker is placed on the month's date, on the same axis as the values."""
    current, _ = _current_and_earlier()
    figure = trend_chart(current, title="t", unit="people")
    metric = SimpleNamespace(versions=[
        SimpleNamespace(version=1, effective_from=date(2020, 1, 1)),
        SimpleNamespace(version=2, effective_from=date(2026, 5, 14))])
    before = len(figure.layout.shapes)
    mark_definition_changes(figure, metric, current.query)
    line = figure.layout.shapes[before]
    assert (line.x0, line.x1) == (date(2026, 5, 1), date(2026, 5, 1))
    assert figure.layout.annotations[-1].text == "KPI v2"


# --- display rounding -------------------------------------------------------------------------


def test_release_frame_rounds_counts_to_whole_numbers_outwards():
    """Counts show as integers; the interval is rounded outwards; the release is unchanged."""
    release = _release(date(2026, 1, 1), date(2026, 2, 1), [100, SUPPRESSED], half=10.3)
    frame = release_frame(release)
    assert str(frame["value"].dtype) == "Int64"
    assert list(frame.loc[0, ["value", "lower", "upper"]]) == [100, 89, 111]
    assert pd.isna(frame.loc[1, "value"])
    assert release.cells[0].lower == pytest.approx(89.7)
    assert release_frame(release, rounded=False).loc[0, "lower"] == pytest.approx(89.7)


def test_release_frame_rounds_means_to_two_decimals():
    """Means keep two decimals, bounds rounded outwards."""
    release = _release(date(2026, 1, 1), date(2026, 1, 1), [3.14159], measure="mean",
                       half=0.005)
    row = release_frame(release).loc[0]
    assert (row["value"], row["lower"], row["upper"]) == (3.14, 3.13, 3.15)
