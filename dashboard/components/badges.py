"""Privacy badge, budget meter and spend button: what protected this number, what it cost,
and whether the budget can still pay for it.

The spend button only mirrors the gate's rule (``spent + ε <= cap``) to disable a control the
user cannot use; the gate still decides and still raises BudgetExhausted on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import streamlit as st

from privacy import BudgetStatus, Preview, Release

__all__ = ["budget_meter", "interval_percent", "privacy_badge", "short_of_budget",
           "spend_button"]

# The ledger's slack: floating-point sums of ε may exceed the cap by rounding alone.
_SLACK = 1e-9


def interval_percent(release: Release) -> str:
    """The level a release's intervals cover at least, for labels ("95% interval"): the
    policy's level where the noise hits it, else the level discrete noise achieves, rounded
    down to a tenth of a percent ("95.8")."""
    level = math.floor(release.interval_level * 1000 + 1e-6) / 10
    return f"{level:g}"


def lifetime_text(release: Release) -> str:
    """The cumulative guarantee of the data behind ``release``, in plain words: the month of it
    whose lifetime budget is most used (empty for a release without noise)."""
    worst = release.lifetime_spent
    if worst is None or worst.spent.value <= 0:
        return ""
    months = len(release.lifetime)
    which = (f"{worst.period:%B %Y}" if months == 1 else
             f"any of these {months} months (the most used: {worst.period:%B %Y})")
    return (f"Everything ever released about {which}, by anyone, protects "
            f"{release.privacy_unit} at ε ≤ {worst.spent.value:.3g} of that month's lifetime "
            f"{worst.cap.value:g}.")


def privacy_badge(release: Release) -> None:
    cost = ("free (a stored release)" if release.reused else
            "free (derived from numbers already released)"
            if release.derived and release.charged.value == 0 else
            f"ε {release.charged.value:g} charged")
    lifetime = lifetime_text(release)
    st.caption(
        f":material/shield_lock: {release.guarantee} This view: {cost}."
        + (f"  \n:material/history: {lifetime}" if lifetime else ""))
    with st.expander("Technical record", icon=":material/receipt_long:"):
        st.caption(
            f"Mechanism: {release.mechanism} · k = {release.k} · intervals "
            f"{interval_percent(release)}% · policy {release.policy_version[:12]} · data "
            f"version {release.data_version} · release {release.id}")


def budget_meter(status: BudgetStatus, preview: Preview | None = None, *,
                 title: str | None = None) -> None:
    """Your budget left on a product this month, and what the view costs. ``title``: the
    product's name (its id otherwise)."""
    cap = status.cap.value
    remaining = status.remaining.value
    fraction = 0.0 if cap <= 0 else min(max(remaining / cap, 0.0), 1.0)
    label = (f"Your privacy budget for {title or status.product}, {status.window_start:%B %Y}: "
             f"ε {remaining:g} of {cap:g} left")
    if status.delta_spent.value > 0:
        label += (f" (δ {status.remaining_delta.value:.1e} of "
                  f"{status.delta_cap.value:.1e} left)")
    if preview is not None:
        delta = (f" at δ {preview.delta.value:.0e}" if preview.delta.value > 0 else "")
        label += (" · this view is free (derived from numbers already released)"
                  if preview.derived else " · this view is free (stored release)"
                  if preview.reused else f" · this view costs ε {preview.epsilon.value:g}{delta}")
    st.progress(fraction, text=label)


def short_of_budget(*, costs: float | Sequence[float],
                    budgets: Sequence[BudgetStatus]) -> list[tuple[BudgetStatus, float, float]]:
    """The budgets that cannot pay, as (status, cost, short by ε); empty when all can.

    ``costs`` is ε per product, one per budget in the same order (a comparison releases on two
    products at once); a single number is charged to every budget.
    """
    listed = ([float(costs)] * len(budgets) if isinstance(costs, (int, float))
              else [float(c) for c in costs])
    if len(listed) != len(budgets):
        raise ValueError(f"one cost per budget: got {len(listed)} costs for "
                         f"{len(budgets)} budgets")
    return [(status, cost, cost - status.remaining.value)
            for status, cost in zip(budgets, listed) if cost > status.remaining.value + _SLACK]


def spend_button(label: str, *, costs: float | Sequence[float], budgets: Sequence[BudgetStatus],
                 key: str | None = None) -> bool:
    """A primary button that spends budget; disabled, with the shortfall, when it cannot pay.

    ``costs[i]`` is what the click charges ``budgets[i]``. Returns whether it was clicked
    (never True while disabled).
    """
    short = short_of_budget(costs=costs, budgets=budgets)
    if not short:
        return st.button(label, type="primary", key=key)
    reason = "; ".join(
        f"{status.product}: short by ε {gap:g} (costs ε {cost:g}, ε "
        f"{status.remaining.value:g} left until {status.window_end:%d %b %Y})"
        for status, cost, gap in short)
    st.button(label, type="primary", key=key, disabled=True,
              help=f"Not enough privacy budget — {reason}")
    st.caption(f":material/block: Not enough privacy budget — {reason}. Choose a stronger "
               f"privacy level (smaller ε), a shorter window, or wait for the budget to refresh.")
    return False
