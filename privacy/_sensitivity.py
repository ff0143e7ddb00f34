"""The one audited place where sensitivity follows from the catalog's privacy unit.

A product declares its privacy unit: one person's events in one calendar month, at most M
(``max_events_per_subject_per_month``), or, when it declares no monthly bound, one person's
events on any one day, at most N (``max_events_per_subject_per_day``). Ingestion enforces both
bounds. A monthly count series — and any partition of it by public dimensions — is a vector in
which one person-month (or person-day) falls into exactly one month and contributes at most M
(or N) events in total across all cells, so the L1 sensitivity of the whole vector is that
bound (``ProductSpec.unit_bound``); months are disjoint, so a series charges each month once.
Pages and exports never compute sensitivity.
"""

from __future__ import annotations

from data.catalog import MetricSpec, ProductSpec
from data.errors import QueryRefused

from privacy._values import PrivacyLoss

__all__ = ["count_sensitivity", "guarantee_text", "sum_sensitivity"]


def count_sensitivity(product: ProductSpec, metric: MetricSpec) -> int:
    """L1 sensitivity of a count vector of ``metric`` under ``product``'s privacy unit.

    A count of events: the unit's bound (module docstring). A ``distinct`` metric counts
    persons, not events, and needs a month-long unit (a person-day would be counted again on
    every day of a week or month):

    * ``distinct_per = "week"``: a person is counted once in each of the month's 4 weeks
      (days 1–7, 8–14, 15–21, 22 to the end: data/materialize.py) they are active in, in one
      cell (their first event that week).
      The weeks lie inside the month, so one person-month adds at most 1 to each of 4 cells
      of that month and nothing to any other month: L1 ≤ 4, whatever the event bound.
    * ``distinct_per = "month"`` without a lookback: once per month, in one cell: L1 ≤ 1.
    * ``distinct_per = "month"`` with ``lookback_months = 1`` (new / returning / churned
      against the month before): a person is in one status cell of month M, decided by
      person-months M−1 and M. Adding or removing person-month M moves that person between
      at most two of month M's cells (new ↔ absent, returning ↔ churned: L1 ≤ 2) and, in
      month M+1, turns returning into new or removes a churned count (L1 ≤ 2); no other month
      reads it. A series vector therefore changes by L1 ≤ 4, and its release draws on the
      lifetime budget of each computed month's previous month too (``budget_terms``).

    The same bound serves as the L2 bound of Gaussian noise (L2 ≤ L1 for integer vectors).
    """
    if metric.measure != "distinct":
        return product.unit_bound
    if product.unit_period != "month":
        raise QueryRefused(f"metric {product.id}.{metric.id} counts distinct persons, which "
                           f"needs a month-long privacy unit (max_events_per_subject_per_month)")
    if metric.distinct_per == "week":
        return 4  # the month's weeks
    if metric.distinct_per == "month":
        return 1 if metric.lookback_months == 0 else 2 * (metric.lookback_months + 1)
    raise QueryRefused(f"metric {product.id}.{metric.id} counts distinct persons per "
                       f"{metric.distinct_per!r}, which has no derived sensitivity")


def guarantee_text(product: ProductSpec, loss: PrivacyLoss) -> str:
    """The release's guarantee in plain words: its composed (ε, δ), as charged, and for a
    product randomised at collection, first the local ε every stored report already has."""
    epsilon, delta = loss.epsilon.value, loss.delta.value
    local = ""
    if product.randomised_epsilon is not None:
        # per report at collection; a unit's reports compose (basic composition)
        per_report = product.randomised_epsilon
        local = (f"Each report was randomised at collection (k-ary randomised response at "
                 f"ε_local = {per_report:g} per report; {product.privacy_unit}: ε_local ≤ "
                 f"{per_report * product.unit_bound:g}), so even the stored data does not "
                 f"reveal anyone's answer; the release adds central noise on top. ")
    if epsilon == 0:
        return local + (f"Counts below k={product.k} are suppressed; no noise is added, so "
                        f"this view is for operational use within the tenant only.")
    if delta > 0:
        return local + (
            f"Protects {product.privacy_unit} at ε = {epsilon:g} with δ = {delta:g} for "
            f"the whole release (Gaussian noise; all its measurements composed): "
            f"a chance of at most {delta:g} that the ε bound does not hold.")
    return local + f"Protects {product.privacy_unit} at ε = {epsilon:g}."


def sum_sensitivity(product: ProductSpec, metric: MetricSpec) -> float:
    """L1 sensitivity of a clamped-sum vector: the unit's events, each at most max|bound|."""
    if metric.value_bounds is None:
        raise QueryRefused(f"metric {product.id}.{metric.id} declares no clamping bounds; "
                           f"its sums cannot be released")
    lo, hi = metric.value_bounds
    return product.unit_bound * max(abs(lo), abs(hi))
