"""The metric picker: the metrics of the products a principal may use (``gate.products``) in
one select box, named "metric — product", with the choice kept in the URL
(``?metric=product/metric``) like every page's view state.

Public catalog only: which metrics exist, never a value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import streamlit as st

from dashboard.components.urlstate import from_url

__all__ = ["metric_options", "metric_select"]


def metric_options(products: Iterable, *, counts_only: bool = False) -> dict[str, tuple]:
    """Every metric of every metric set of ``products`` (``gate.products(principal)``: a
    product restricted to other roles is never offered) as ``"product/metric"`` → (product,
    metric); only metrics released as counts with ``counts_only`` (maps and insights show
    counts; distinct-person counts are counts)."""
    return {f"{p.id}/{m.id}": (p, m) for p in products if p.kind == "metric_set"
            for m in p.metrics if not counts_only or m.release_measure == "count"}


def metric_select(options: dict[str, tuple], *, where=st, label: str = "Metric",
                  url: str = "metric", keys: Sequence[str] | None = None,
                  default: str | None = None) -> str:
    """A select box of ``keys`` (default: every option) starting at the URL's ``url`` value,
    else ``default`` (else the first); returns the chosen ``"product/metric"`` key."""
    keys = list(options) if keys is None else list(keys)
    start = from_url(url, keys, keys[0] if default is None else default)
    return where.selectbox(label, keys, index=keys.index(start),
                           format_func=_label(options))


def _label(options: dict[str, tuple]) -> Callable[[str], str]:
    return lambda key: f"{options[key][1].title} — {options[key][0].title}"
