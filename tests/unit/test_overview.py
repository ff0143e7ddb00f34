"""The home page's tiles: the change against the month before, judged against the noise, and
how released values are shown (no Streamlit, no store)."""

from __future__ import annotations

import math
from datetime import date, datetime

import pytest

from dashboard.components.overview import (
    Change,
    Point,
    Tile,
    change_between,
    format_change,
    format_value,
    interval_text,
    sparkline,
    tenant_series,
)
from privacy import Cell, Epsilon, Query, Release

SEP, OCT = date(2026, 9, 1), date(2026, 10, 1)


def _point(month: date, value: float | None, *, sd: float | None = 10.0,
           half: float = 20.0) -> Point:
    if value is None:
        return Point(month=month, value=None)
    return Point(month=month, value=value, lower=value - half, upper=value + half, sd=sd)


def _release(cells: list[Cell], *, group_by=("month", "state")) -> Release:
    query = Query(product="health.vaccinations", metric="doses", start=date(2026, 8, 1),
                  end=OCT, level="dp_high", group_by=group_by)
    return Release(id="r1", tenant="kigali-east", product="health.vaccinations", query=query,
                   cells=tuple(cells), epsilon=Epsilon(0.5), charged=Epsilon(0.0), reused=True,
                   mechanism="discrete_laplace", k=5, confidence=0.95, privacy_unit="a person",
                   policy_version="p", data_version=1, digest="d",
                   created_at=datetime(2026, 11, 2))


def test_a_change_beyond_1_96_noise_sds_is_larger_than_the_noise():
    """Δ = 30 against sqrt(10² + 10²) · 1.96 ≈ 27.7: larger than the noise."""
    change = change_between(_point(OCT, 130.0), _point(SEP, 100.0))
    assert change.delta == 30.0
    assert change.noise_sd == pytest.approx(math.sqrt(200))
    assert change.beyond_noise


def test_a_change_within_1_96_noise_sds_is_within_the_noise():
    """Δ = −27 < 27.7: within the noise, whichever way it goes."""
    change = change_between(_point(OCT, 73.0), _point(SEP, 100.0))
    assert change.delta == -27.0
    assert not change.beyond_noise


def test_without_sds_the_intervals_decide():
    """Releases stored before sd was recorded: a change counts only if the intervals part."""
    apart = change_between(_point(OCT, 150.0, sd=None), _point(SEP, 100.0, sd=None))
    overlapping = change_between(_point(OCT, 130.0, sd=None), _point(SEP, 100.0, sd=None))
    assert (apart.noise_sd, apart.beyond_noise) == (None, True)
    assert (overlapping.noise_sd, overlapping.beyond_noise) == (None, False)


def test_no_change_is_claimed_when_a_month_was_not_released():
    """A suppressed month has no value: no change, not a change from or to zero."""
    assert change_between(_point(OCT, 130.0), _point(SEP, None)) is None
    assert change_between(_point(OCT, None), _point(SEP, 100.0)) is None


def test_values_are_shown_as_their_measure_reads():
    """Counts whole and never negative, means to one decimal, sums whole; "—" when absent."""
    assert format_value(1234.6, measure="count") == "1,235"
    assert format_value(-3.2, measure="count") == "0"
    assert format_value(61.26, measure="mean") == "61.3"
    assert format_value(15000.4, measure="sum") == "15,000"
    assert format_value(None, measure="count") == "—"


def test_changes_carry_their_sign():
    """A rise reads "+", a fall "-" (Streamlit draws the arrow from it), no change no sign."""
    assert format_change(Change(delta=45.4, noise_sd=1.0, beyond_noise=True),
                         measure="count") == "+45"
    assert format_change(Change(delta=-1234.0, noise_sd=1.0, beyond_noise=True),
                         measure="count") == "-1,234"
    assert format_change(Change(delta=0.2, noise_sd=1.0, beyond_noise=False),
                         measure="count") == "0"
    assert format_change(Change(delta=-0.25, noise_sd=1.0, beyond_noise=False),
                         measure="mean") == "-0.2"


def test_the_interval_is_shown_with_its_half_width():
    """The released bounds, a count's lower bound floored at 0, and ± half the width."""
    assert interval_text(Point(OCT, 523.3, lower=493.7, upper=553.0, sd=15.0),
                         measure="count", level="95.2") == "95.2% interval 494 – 553 (± 30)"
    assert interval_text(Point(OCT, 3.0, lower=-12.0, upper=18.0), measure="count") == (
        "95% interval 0 – 18 (± 9)")
    assert interval_text(Point(OCT, None), measure="count") == ""


def test_the_tenant_series_takes_the_tenant_total_of_each_month():
    """From an area release: the tenant's "total" cell per month; a month without one is a
    gap, not a zero."""
    cells = [
        Cell(key=("2026-08", "KGL"), value=300.0, lower=280.0, upper=320.0, noise_scale=9.0,
             status="noisy", sd=12.0),
        Cell(key=("2026-08", "kigali-east"), value=500.0, lower=480.0, upper=520.0,
             noise_scale=9.0, status="total", sd=10.0),
        Cell(key=("2026-09", "kigali-east"), value=None, lower=None, upper=None,
             noise_scale=9.0, status="suppressed"),
        Cell(key=("2026-10", "kigali-east"), value=560.0, lower=540.0, upper=580.0,
             noise_scale=9.0, status="total", sd=10.0),
    ]
    points = tenant_series(_release(cells))
    assert [p.month for p in points] == [date(2026, 8, 1), SEP, OCT]
    assert [p.value for p in points] == [500.0, None, 560.0]
    assert points[0].sd == 10.0 and points[2].lower == 540.0


def test_the_tenant_series_of_a_release_by_month_only():
    """A release by month alone carries the tenant as the area of its one cell per month."""
    cells = [Cell(key=(m, "kigali-east"), value=v, lower=v - 5, upper=v + 5, noise_scale=2.0,
                  status="noisy", sd=2.5)
             for m, v in (("2026-08", 10.0), ("2026-09", 12.0), ("2026-10", 20.0))]
    points = tenant_series(_release(cells, group_by=("month",)))
    assert [p.value for p in points] == [10.0, 12.0, 20.0]


def test_a_tile_compares_its_last_two_months():
    """The latest month against the one before, from the tile's own points."""
    tile = Tile(title="Doses", product="Vaccinations", measure="count",
                points=(_point(SEP, 100.0), _point(OCT, 160.0)), source="Published snapshot",
                level="95")
    assert tile.latest.month == OCT and tile.previous.month == SEP
    assert tile.change.delta == 60.0 and tile.change.beyond_noise


def test_the_sparkline_draws_gaps_where_a_month_was_not_released():
    """Line and band are broken at a suppressed month; no axes; the last point is marked."""
    figure = sparkline((_point(date(2026, 8, 1), 100.0), _point(SEP, None), _point(OCT, 90.0)),
                       measure="count")
    upper, lower, line = figure.data
    assert list(line.y) == [100.0, None, 90.0]
    assert list(upper.y) == [120.0, None, 110.0] and list(lower.y) == [80.0, None, 70.0]
    assert line.connectgaps is False and list(line.marker.size) == [0, 0, 7]
    assert figure.layout.xaxis.visible is False and figure.layout.height == 72
