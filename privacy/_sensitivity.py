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
    """L1 sensitivity of a count vector of ``metric`` under ``product``'s privacy unit."""
    return product.unit_bound


def guarantee_text(product: ProductSpec, loss: PrivacyLoss) -> str:
    """The release's guarantee in plain words: its composed (ε, δ), as charged."""
    epsilon, delta = loss.epsilon.value, loss.delta.value
    if epsilon == 0:
        return (f"Counts below k={product.k} are suppressed; no noise is added, so this view "
                f"is for operational use within the tenant only.")
    if delta > 0:
        return (f"Protects {product.privacy_unit} at ε = {epsilon:g} with δ = {delta:g} for "
                f"the whole release (Gaussian noise; all its measurements composed): "
                f"a chance of at most {delta:g} that the ε bound does not hold.")
    return f"Protects {product.privacy_unit} at ε = {epsilon:g}."


def sum_sensitivity(product: ProductSpec, metric: MetricSpec) -> float:
    """L1 sensitivity of a clamped-sum vector: the unit's events, each at most max|bound|."""
    if metric.value_bounds is None:
        raise QueryRefused(f"metric {product.id}.{metric.id} declares no clamping bounds; "
                           f"its sums cannot be released")
    lo, hi = metric.value_bounds
    return product.unit_bound * max(abs(lo), abs(hi))
