"""The data's clock: which months are complete, partial or empty, from public metadata only."""

from __future__ import annotations

from datetime import date

import pytest

from data.errors import InvalidInput
from privacy import DataClock, Query, add_months


def _clock(as_of, newest=None, first=date(2024, 11, 1), longest=24) -> DataClock:
    return DataClock(tenant="t", product="p", as_of=as_of, newest=newest or as_of,
                     first_month=first, max_months=longest)


def test_a_month_covered_to_its_last_day_is_complete():
    """Data to 31 Oct: October is the latest complete month and nothing is partial."""
    clock = _clock(date(2026, 10, 31))
    assert clock.latest_complete == date(2026, 10, 1)
    assert clock.partial is None


def test_a_month_covered_to_the_5th_is_partial_and_the_one_before_complete():
    clock = _clock(date(2026, 12, 5))
    assert clock.latest_complete == date(2026, 11, 1)
    assert clock.partial == date(2026, 12, 1)
    assert clock.months()[-1] == date(2026, 11, 1)
    assert clock.months(include_partial=True)[-1] == date(2026, 12, 1)


def test_a_quiet_product_is_complete_up_to_the_tenants_day():
    """No school on Saturday 31 Oct: attendance's October is still complete."""
    clock = _clock(date(2026, 10, 31), newest=date(2026, 10, 30))
    assert clock.latest_complete == date(2026, 10, 1)


def test_a_stalled_source_has_no_complete_month_after_its_data():
    """Grants stopped in August while other sources reached October: September and October
    are not complete for grants (they would be empty months drawn as data)."""
    clock = _clock(date(2026, 10, 31), newest=date(2026, 8, 14))
    assert clock.latest_complete == date(2026, 8, 1)
    assert clock.partial is None


def test_windows_stop_at_the_data_and_at_the_gates_limit():
    clock = _clock(date(2026, 10, 31), first=date(2026, 3, 1))
    assert clock.longest() == 8  # March..October
    assert _clock(date(2026, 10, 31), longest=3).longest() == 3
    query = clock.query(metric="m", level="dp_medium", months=12)
    assert (query.start, query.end) == (date(2026, 3, 1), date(2026, 10, 1))
    query = clock.query(metric="m", level="dp_medium", months=2, group_by=("month", "state"))
    assert (query.start, query.end, query.group_by) == (
        date(2026, 9, 1), date(2026, 10, 1), ("month", "state"))


def test_no_data_means_no_month_and_a_clear_refusal():
    clock = DataClock(tenant="t", product="p", as_of=None, newest=None, first_month=None,
                      max_months=24)
    assert clock.latest_complete is None and clock.months() == () and clock.longest() == 0
    assert clock.describe() == "No data yet."
    with pytest.raises(InvalidInput, match="no complete month of data"):
        clock.query(metric="m", level="dp_medium", months=3)


def test_data_only_in_a_partial_month_has_no_complete_month():
    clock = _clock(date(2026, 12, 5), first=date(2026, 12, 1))
    assert clock.latest_complete is None
    assert clock.months(include_partial=True) == (date(2026, 12, 1),)


def test_inconsistent_clocks_are_refused():
    with pytest.raises(InvalidInput, match="first_month <= newest <= as_of"):
        _clock(date(2026, 10, 31), newest=date(2026, 11, 2))


def test_describe_says_data_as_of_and_the_latest_complete_month():
    assert _clock(date(2026, 12, 5)).describe() == (
        "Data as of 5 Dec 2026 · latest complete month November 2026")


def test_month_arithmetic_crosses_years():
    assert add_months(date(2026, 11, 1), 2) == date(2027, 1, 1)
    assert add_months(date(2026, 1, 1), -13) == date(2024, 12, 1)
    query = Query.ending(product="p", metric="m", level="dp_medium", months=14,
                         end=date(2026, 2, 17))
    assert (query.start, query.end, len(query.months)) == (date(2025, 1, 1), date(2026, 2, 1), 14)


def test_a_window_query_is_one_period():
    query = Query.ending(product="p", metric="m", level="dp_medium", months=6,
                         end=date(2026, 10, 1), group_by=("month", "district"),
                         period="window")
    assert query.periods == {date(2026, 5, 1): "2026-05..2026-10"}
    assert query.canonical()["period"] == "window"
    monthly = Query.ending(product="p", metric="m", level="dp_medium", months=2,
                           end=date(2026, 10, 1))
    assert "period" not in monthly.canonical()  # monthly keys are unchanged
    with pytest.raises(InvalidInput, match="period must be"):
        Query.ending(product="p", metric="m", level="dp_medium", months=2,
                     end=date(2026, 10, 1), period="week")


def test_the_demo_covers_two_complete_years_up_to_the_day_before():
    """Generated on 1 Nov: Nov 2024 – Oct 2026; on 6 Dec: Dec 2024 – 5 Dec 2026 (24 complete
    months and the partial December)."""
    from data.demo import demo_window

    assert demo_window(date(2026, 11, 1)) == (date(2024, 11, 1), date(2026, 10, 31))
    assert demo_window(date(2026, 12, 6)) == (date(2024, 12, 1), date(2026, 12, 5))
    assert demo_window(date(2028, 3, 1)) == (date(2026, 3, 1), date(2028, 2, 29))
    with pytest.raises(InvalidInput, match="as_of must be a date"):
        demo_window("2026-11-01")


def test_a_rehearsal_shifts_the_wall_clock_and_a_bad_shift_fails_closed(monkeypatch):
    """VEIL_CLOCK_SHIFT_DAYS moves every wall-clock reading; a malformed value is named."""
    from datetime import datetime, timedelta

    from data import clock
    from data.errors import ConfigError

    monkeypatch.setenv("VEIL_CLOCK_SHIFT_DAYS", "365")
    clock._shift.cache_clear()
    try:
        assert clock.utcnow() - datetime.now() > timedelta(days=364)
        monkeypatch.setenv("VEIL_CLOCK_SHIFT_DAYS", "next year")
        clock._shift.cache_clear()
        with pytest.raises(ConfigError, match="VEIL_CLOCK_SHIFT_DAYS must be a whole number"):
            clock.utcnow()
    finally:
        monkeypatch.delenv("VEIL_CLOCK_SHIFT_DAYS")
        clock._shift.cache_clear()
