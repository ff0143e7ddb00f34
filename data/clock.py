"""The wall clock, in one place.

Owns "what time is it" for everything that stamps or windows by the calendar: audit entries,
budget windows, freshness checks and the demo generator's as-of day. Nothing that decides
*which data* a page shows reads it: pages default to the data's own clock (the latest complete
month with data, ``Gate.data_clock``), so what Veil shows never ages with the calendar.

Tests move this clock (``monkeypatch.setattr(data.clock, "utcnow", ...)``), and a whole run can
be rehearsed at another date with ``VEIL_CLOCK_SHIFT_DAYS`` (e.g. 365: the suite a year from
now). ``faketime`` cannot do that for Veil: under libfaketime 0.9.10 Python's timed waits
(``threading.Event.wait``) never return, and faking only the wall clock breaks ``time.sleep``.
"""

from __future__ import annotations

import os
from functools import cache
from datetime import UTC, date, datetime, timedelta

from data.errors import ConfigError

__all__ = ["today", "utcnow"]


@cache
def _shift() -> timedelta:
    """``VEIL_CLOCK_SHIFT_DAYS``, read on first use (a bad value fails closed, named)."""
    raw = os.environ.get("VEIL_CLOCK_SHIFT_DAYS", "").strip()
    if not raw:
        return timedelta(0)
    try:
        days = int(raw)
    except ValueError:
        raise ConfigError(f"VEIL_CLOCK_SHIFT_DAYS must be a whole number of days, got {raw!r}") \
            from None
    if abs(days) > 36_500:
        raise ConfigError(f"VEIL_CLOCK_SHIFT_DAYS must be within ±36500 days, got {days}")
    return timedelta(days=days)


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the store keeps."""
    return datetime.now(UTC).replace(tzinfo=None) + _shift()


def today() -> date:
    """Today's date in UTC (read through ``utcnow``, so moving that moves this)."""
    return utcnow().date()
