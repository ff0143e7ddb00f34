"""How far the data reaches: "Data as of …", stale-data warnings, and window pickers limited to
what the gate accepts and the data covers.

Windows are built from the gate's data clock (``Gate.data_clock``), never from the calendar, so
a page's default ends at the latest complete month with data and never shows an empty or
partial month as data unless the user asks for it.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from privacy import DataClock

__all__ = ["data_as_of", "months_slider", "partial_toggle"]


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
