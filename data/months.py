"""Calendar-month arithmetic on dates: a month's first and last day, months ahead or behind.

Owns the one way data/ moves between calendar months; a month is named by its first day (as
the record stores' ``month`` column and the cubes' ``period`` hold it). Plain ``datetime.date``
arithmetic: no time zones (every stored day is a UTC day), no clock, no database.
"""

from __future__ import annotations

from datetime import date, timedelta

__all__ = ["add_months", "month_end", "month_start", "months_between"]


def month_start(day: date) -> date:
    """The first day of ``day``'s month."""
    return date(day.year, day.month, 1)


def add_months(month: date, count: int) -> date:
    """The first day of the month ``count`` months after ``month``'s (before, if negative)."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def month_end(day: date) -> date:
    """The last day of ``day``'s month."""
    return add_months(day, 1) - timedelta(days=1)


def months_between(first: date, later: date) -> int:
    """Whole calendar months from ``first``'s month to ``later``'s (0: the same month)."""
    return (later.year - first.year) * 12 + later.month - first.month
