"""The wall clock, in one place.

Owns "what time is it" for everything that stamps or windows by the calendar: audit entries,
budget windows, session lifetimes, freshness checks and the demo generator's as-of day. Nothing
that decides *which data* a page shows reads it: pages default to the data's own clock (the
latest complete month with data, ``Gate.data_clock``), so what Veil shows never ages with the
calendar. Tests move this clock (``monkeypatch.setattr(data.clock, "utcnow", ...)``) to prove it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

__all__ = ["today", "utcnow"]


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the store keeps."""
    return datetime.now(UTC).replace(tzinfo=None)


def today() -> date:
    """Today's date in UTC (read through ``utcnow``, so moving that moves this)."""
    return utcnow().date()
