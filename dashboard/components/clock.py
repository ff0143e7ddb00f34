"""How far the data reaches: "Data as of …", stale-data warnings, and window pickers limited to
what the gate accepts and the data covers.

Windows are built from the gate's data clock (``Gate.data_clock``), never from the calendar, so
a page's default ends at the latest complete month with data and never shows an empty or
partial month as data unless the user asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import streamlit as st

from privacy import DataClock

__all__ = ["data_as_of", "month_range", "month_text", "months_slider", "parse_month",
           "partial_toggle"]


def data_as_of(clock: DataClock, *, title: str | None = None) -> None:
    """One caption line — "Data as of 5 Dec 2026 · latest complete month November 2026" — and a
    warning when the product's freshness SLO is breached."""
    prefix = f"{title}: " if title else ""
    st.caption(f":material/event: {prefix}{clock.describe()}")
    if clock.stale:
        subject = f"{title} data" if title else "This data"
        st.warning(f"{subject} may be out of date — {'; '.join(clock.breaches)}.",
                   icon=":material/schedule:")


def partial_toggle(container: Any, clock: DataClock, *, key: str | None = None) -> bool:
    """Offer the partial month (off by default); False when the data ends on a month's end."""
    if clock.partial is None:
        return False
    return container.checkbox(
        f"Include {clock.partial:%B %Y} so far (partial, to {clock.as_of.day} "
        f"{clock.as_of:%b})", value=False, key=key,
        help="A month still being filled: its numbers will rise as data arrives.")


def months_slider(container: Any, *, longest: int, default: int = 12, label: str = "Months",
                  key: str | None = None) -> int | None:
    """A months slider from 1 to ``longest`` (what the gate accepts and the data covers).

    Returns None, after saying so, when there is not a single month to show.
    """
    if longest < 1:
        container.info("There is no complete month of data for this product yet.")
        return None
    if longest == 1:
        container.markdown(f"{label}: **1** (all the data there is)")
        return 1
    return container.slider(label, min_value=1, max_value=longest, value=min(default, longest),
                            key=key)


def month_text(month: date) -> str:
    """A month as the URL writes it: ``2026-10``."""
    return f"{month:%Y-%m}"


def months_between(first: date, last: date) -> int:
    """Calendar months from ``first``'s month to ``last``'s: 0 for the same month, 11 for a
    window of 12 (month arithmetic beside ``privacy.add_months``, which steps the other way)."""
    return (last.year - first.year) * 12 + last.month - first.month


def parse_month(text: str | None, options: Sequence[date]) -> date | None:
    """The month ``text`` (``YYYY-MM``) names if it is one of ``options``, else None (a URL is
    user input: anything else is ignored)."""
    if not text:
        return None
    return next((m for m in options if month_text(m) == text), None)


def _span(options: Sequence[date], start: date, end: date) -> int:
    return options.index(end) - options.index(start) + 1


def _limited(options: Sequence[date], start: date, end: date, *, most: int,
             keep: str = "end") -> tuple[date, date]:
    """(start, end) in order and at most ``most`` months long, keeping ``keep``'s month."""
    if options.index(start) > options.index(end):
        start, end = end, start
    if _span(options, start, end) <= most:
        return start, end
    if keep == "start":
        return start, options[options.index(start) + most - 1]
    return options[options.index(end) - most + 1], end


def _keep_within(key: str, options: Sequence[date], most: int) -> None:
    """After a drag: a window longer than the gate accepts is shortened, from the handle that
    did not move (the one just moved is where the person wants the window to reach)."""
    start, end = st.session_state[key]
    before = st.session_state.get(f"{key}__before")
    keep = "start" if before is not None and before[0] != start and before[1] == end else "end"
    st.session_state[key] = _limited(options, start, end, most=most, keep=keep)


def month_range(container: Any, options: Sequence[date], *, most: int, key: str,
                default_months: int = 12, start: date | None = None, end: date | None = None,
                label: str = "Months") -> tuple[date, date] | None:
    """A start month – end month picker over ``options`` (the months with data, oldest first,
    contiguous), never longer than ``most`` months (what the gate accepts per query).

    The first view is ``start``–``end`` when given (e.g. from the URL, already checked against
    ``options``), else the latest ``default_months`` months (those a "last 12 months" view
    shows, so the stored default releases are found again). Returns None, after saying so,
    when there is no month to show.
    """
    options = list(options)
    if not options:
        container.info("There is no complete month of data for this product yet.")
        return None
    if len(options) == 1:
        container.markdown(f"{label}: **{options[0]:%B %Y}** (all the data there is)")
        return options[0], options[0]
    most = max(1, min(most, len(options)))
    if start is None or end is None:
        last = end or options[-1]
        start, end = options[max(0, options.index(last) - min(default_months, most) + 1)], last
    initial = _limited(options, start, end, most=most)
    current = st.session_state.get(key)
    newest = st.session_state.get(f"{key}__newest")
    if current is not None:
        if not (isinstance(current, tuple) and len(current) == 2
                and all(m in options for m in current)):
            st.session_state[key] = initial  # another product's months: start afresh
        elif current[1] == newest and newest != options[-1]:
            # a window that reached the newest month keeps reaching it (e.g. the partial
            # month was just added), as long as it was
            st.session_state[key] = _limited(
                options, options[max(0, len(options) - _span(options, *current))],
                options[-1], most=most)
        elif _span(options, *current) > most:  # the limit shrank (another metric or product)
            st.session_state[key] = _limited(options, *current, most=most)
    st.session_state[f"{key}__newest"] = options[-1]
    limit = ("the privacy gate accepts no longer window for this product"
             if most < len(options) else "all the data there is")
    chosen = container.select_slider(
        label, options=options, value=initial, key=key, format_func=lambda m: f"{m:%b %Y}",
        on_change=_keep_within, args=(key, options, most),
        help=f"Drag either end. At most {most} months per view: {limit}.")
    st.session_state[f"{key}__before"] = chosen
    first, last = chosen
    if most < len(options):
        container.caption(f"At most {most} months per view for this product.")
    return first, last
