"""Per-product demo profiles: age mix, categories, season, time of day and value model.

Owns the story each known product's demo data tells (immunisation weeks, the school year,
payments at the start of a month, …) and the plain profile of a product the demo has no story
for, so a catalog change never breaks the demo. Data only: nothing here draws a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from data.catalog import ProductSpec


@dataclass(frozen=True)
class _Value:
    """How a product's value is drawn. ``kind`` is "score" (bounded, trending) or "amount"."""

    kind: str
    start: float = 0.0  # score: mean at the window start
    end: float = 0.0  # score: mean at the window end (gentle upward trend)
    sd: float = 0.0
    seasonal: float = 0.0  # score: dip in the lean season (Sep-Nov)
    by_category: Mapping[str, float] = field(default_factory=dict)  # score offsets / amount medians
    sigma: float = 0.3  # amount: log-normal spread


@dataclass(frozen=True)
class _Profile:
    share: float
    ages: Mapping[str, float]
    categories: Mapping[str, Mapping[str, float]]  # age bucket or "*" → category → weight
    months: tuple[float, ...]  # multiplier per calendar month, Jan..Dec
    weekend: float
    slots: tuple[int, int]  # [first, last) 15-minute slot of the working day
    month_start_boost: float = 1.0  # payments cluster in the first days of a month
    value: _Value | None = None
    #: A product added after the first five: its ``share`` is of the tenant's events as they
    #: were, added on top, and left out of the normalisation of the others' shares, so that
    #: adding a product never changes a single event of the products already there.
    extra: bool = False


_FLAT_YEAR = (1.0,) * 12
# Rwanda's school year: terms Jan-Mar, Apr-Jun/Jul, Sep-Nov; long holiday Jul-Aug and Dec.
_SCHOOL_YEAR = (1.0, 1.05, 1.0, 0.55, 1.05, 1.0, 0.7, 0.2, 1.0, 1.05, 0.85, 0.2)

_PROFILES: Mapping[str, _Profile] = {
    "health.vaccinations": _Profile(
        share=0.16,
        ages={"0-5": 1.0, "6-12": 0.04, "13-18": 0.18, "19-35": 0.02, "36-60": 0.01,
              "60+": 0.02, "unknown": 0.05},
        categories={
            "0-5": {"bcg": 0.14, "polio": 0.34, "dtp": 0.32, "measles": 0.20},
            "13-18": {"hpv": 0.85, "dtp": 0.15},
            "*": {"dtp": 0.5, "measles": 0.2, "polio": 0.2, "hpv": 0.1},
        },
        # Immunisation weeks in June and December, a mild rainy-season dip in April-May.
        months=(1.0, 1.0, 1.0, 0.85, 0.85, 1.35, 1.0, 1.0, 1.0, 1.05, 1.0, 1.3),
        weekend=0.15, slots=(32, 64),
    ),
    "health.nutrition": _Profile(
        share=0.12,
        ages={"0-5": 1.0, "6-12": 0.04, "unknown": 0.05},
        categories={"*": {"-": 1.0}},
        months=(1.0, 1.0, 1.0, 0.9, 0.9, 1.6, 1.0, 1.0, 1.0, 1.0, 1.6, 0.9),
        weekend=0.1, slots=(32, 64),
        value=_Value(kind="score", start=61.0, end=69.0, sd=12.0, seasonal=3.0),
    ),
    "education.attendance": _Profile(
        share=0.42,
        ages={"0-5": 0.03, "6-12": 1.0, "13-18": 0.8, "19-35": 0.01, "unknown": 0.05},
        categories={"*": {"present": 0.88, "absent": 0.09, "excused": 0.03}},
        months=_SCHOOL_YEAR, weekend=0.0, slots=(28, 34),
    ),
    "education.mastery": _Profile(
        share=0.14,
        ages={"6-12": 1.0, "13-18": 0.9, "unknown": 0.05},
        categories={"*": {"literacy": 0.4, "numeracy": 0.4, "science": 0.2}},
        # End-of-term assessments in March, June and November.
        months=(0.8, 0.9, 1.6, 0.5, 0.9, 1.6, 0.6, 0.15, 0.9, 1.0, 1.6, 0.15),
        weekend=0.0, slots=(34, 60),
        value=_Value(kind="score", start=52.0, end=61.0, sd=15.0,
                     by_category={"literacy": 4.0, "numeracy": 0.0, "science": -3.0}),
    ),
    "social.grants": _Profile(
        share=0.16,
        ages={"19-35": 1.0, "36-60": 1.0, "60+": 1.3, "unknown": 0.1},
        categories={"*": {"cash_transfer": 0.6, "school_fees": 0.25, "nutrition_support": 0.15}},
        months=(1.2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.0, 1.0, 1.0),
        weekend=0.2, slots=(36, 64), month_start_boost=4.0,
        value=_Value(kind="amount", sigma=0.35, by_category={
            "cash_transfer": 60.0, "school_fees": 95.0, "nutrition_support": 35.0}),
    ),
}


def _generic_profile(product: ProductSpec) -> _Profile:
    """A plain profile for a catalog product the demo has no specific story for."""
    bounds = _value_bounds(product)
    value = None
    if bounds is not None:
        lo, hi = bounds
        mid = lo + 0.6 * (hi - lo)
        value = _Value(kind="score", start=mid, end=mid, sd=0.15 * (hi - lo))
    return _Profile(share=0.1, ages={}, categories={}, months=_FLAT_YEAR, weekend=0.3,
                    slots=(32, 64), value=value)


def _value_bounds(product: ProductSpec) -> tuple[float, float] | None:
    """Bounds of the product's first sum/mean metric: the product then needs a value."""
    for metric in product.metrics:
        if metric.measure in {"sum", "mean"} and metric.value_bounds is not None:
            return metric.value_bounds
    return None
