"""The demo's window and calendar: which days it covers, and per-day facts as arrays.

Owns ``demo_window`` (two years up to the day before the as-of day, starting on a month's first
day) and the calendar the generator indexes by day number: month, weekday, day of month and the
stored day, month and 15-minute timestamp strings. It never reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np

from data.errors import InvalidInput
from data.months import add_months, month_end, month_start, months_between

_SLOTS_PER_DAY = 96  # 15-minute buckets


def demo_window(as_of: date) -> tuple[date, date]:
    """The days a demo generated on ``as_of`` covers: two years up to the day before.

    It starts on the first day of a month so that the demo holds 24 complete months, followed
    by the partial month of its last day when that day is not a month's end. The caller names
    the day (``veil demo`` takes today unless ``--as-of`` pins it): the generator never reads
    the clock, so a pinned as-of day gives the same rows a year later.
    """
    if not isinstance(as_of, date) or isinstance(as_of, datetime):
        raise InvalidInput(f"as_of must be a date, got {as_of!r}")
    last = as_of - timedelta(days=1)
    complete = last == month_end(last)
    return add_months(last, -23 if complete else -24), last


@dataclass(frozen=True)
class _Calendar:
    """Per-day calendar facts and preformatted strings for the window.

    Timestamps are written as text in SQLAlchemy's SQLite format (``YYYY-MM-DD HH:MM:SS.ffffff``),
    which PostgreSQL's COPY also parses. There are only 730 days × 96 slots, so formatting them
    once and indexing is far cheaper than formatting millions of datetimes.
    """

    start: date  # the first day of the window
    n_days: int  # days in the window
    month: np.ndarray  # calendar month 1..12
    month_index: np.ndarray  # months since the window's first month (0, 1, …)
    weekday: np.ndarray  # 0 = Monday
    day_of_month: np.ndarray
    day_str: np.ndarray
    month_str: np.ndarray
    ts_str: np.ndarray  # index: day * 96 + slot


def _calendar(as_of: date) -> _Calendar:
    start, last = demo_window(as_of)
    n_days = (last - start).days + 1
    days = [start + timedelta(days=i) for i in range(n_days)]
    day_str = np.array([d.isoformat() for d in days], dtype=object)
    month_str = np.array([month_start(d).isoformat() for d in days], dtype=object)
    clock = [f" {s // 4:02d}:{(s % 4) * 15:02d}:00.000000" for s in range(_SLOTS_PER_DAY)]
    ts_str = np.array([d + c for d in day_str for c in clock], dtype=object)
    return _Calendar(
        start=start, n_days=n_days,
        month=np.array([d.month for d in days]),
        month_index=np.array([months_between(start, d) for d in days]),
        weekday=np.array([d.weekday() for d in days]),
        day_of_month=np.array([d.day for d in days]),
        day_str=day_str, month_str=month_str, ts_str=ts_str,
    )
