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
    #: A product declaring ``event_categories``: its event-type mix (type → weight; missing:
    #: an even mix) and each type's category weights (type → category → weight; missing: even).
    event_types: Mapping[str, float] = field(default_factory=dict)
    type_categories: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


_FLAT_YEAR = (1.0,) * 12
_COMPLAINTS = {"service_quality": 0.32, "staff_behavior": 0.18, "facility_issues": 0.2,
               "medication_error": 0.06, "billing_dispute": 0.1, "discrimination": 0.04,
               "other": 0.1}
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
    # Learning-platform sessions (S2-15): on top of the others (``extra``), so that adding them
    # changes no event of the first five products. Pupils log in on school-day afternoons,
    # in term time; a session lasts about 35 minutes.
    "education.sessions": _Profile(
        share=0.08, extra=True,
        ages={"6-12": 1.0, "13-18": 1.1, "19-35": 0.05, "unknown": 0.05},
        categories={"*": {"literacy": 0.35, "numeracy": 0.4, "science": 0.25}},
        months=_SCHOOL_YEAR, weekend=0.15, slots=(56, 72),
        value=_Value(kind="score", start=33.0, end=37.0, sd=15.0,
                     by_category={"literacy": 0.0, "numeracy": 2.0, "science": -3.0}),
    ),
    "education.progress": _Profile(
        share=0.04, extra=True,
        ages={"6-12": 1.0, "13-18": 0.9, "unknown": 0.05},
        categories={"*": {"literacy": 0.4, "numeracy": 0.4, "science": 0.2}},
        # A report per subject once an assessment period's results are in: end of each term.
        months=(0.6, 0.8, 1.7, 0.5, 0.8, 1.7, 0.5, 0.1, 0.8, 1.0, 1.7, 0.1),
        weekend=0.0, slots=(34, 60),
        # Most pupils gain a few points a period; a sizeable minority slip back.
        value=_Value(kind="score", start=2.5, end=3.5, sd=8.0,
                     by_category={"literacy": 0.5, "numeracy": 0.0, "science": -1.0}),
    ),
    "education.iep": _Profile(
        # Pupils with an individualised education plan are few: hence the product's k of 11.
        share=0.01, extra=True,
        ages={"6-12": 1.0, "13-18": 0.8, "unknown": 0.05},
        categories={"*": {"on_track": 0.5, "off_track": 0.3, "met": 0.2}},
        # Goals are reviewed once a term, most at its end.
        months=(0.6, 0.8, 1.5, 0.5, 0.8, 1.5, 0.5, 0.1, 0.8, 1.0, 1.5, 0.1),
        weekend=0.0, slots=(34, 60),
        # Progress towards the goal, around 55% (the offsets average out over the statuses).
        value=_Value(kind="score", start=53.0, end=57.0, sd=20.0,
                     by_category={"on_track": 0.0, "off_track": -20.0, "met": 30.0}),
    ),
    # Self-reported wellbeing check-ins (Communique): adults, about weekly, through the year.
    # These are the *true* answers; the demo stores them randomised at the product's declared
    # ε, as the collector would receive them (``_events._randomise_reports``).
    "health.wellbeing": _Profile(
        share=0.03, extra=True,
        ages={"19-35": 1.0, "36-60": 1.0, "60+": 0.8, "unknown": 0.05},
        categories={"*": {"good": 0.55, "fair": 0.3, "poor": 0.12, "very_poor": 0.03}},
        # the lean season before the harvest (Sep-Nov) weighs on people
        months=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.15, 1.1, 1.0),
        weekend=0.5, slots=(32, 80),
    ),
    # GovSahay's services: most triages advise self-care, complaints are mostly about service
    # quality and facilities (escalations lean to the serious kinds), and wellness check-ins
    # come from app users through the day and evening, weekends too.
    "health.services": _Profile(
        share=0.06, extra=True,
        ages={"0-5": 0.25, "6-12": 0.25, "13-18": 0.5, "19-35": 1.0, "36-60": 1.0, "60+": 0.8,
              "unknown": 0.05},
        categories={},
        event_types={"triage_completed": 0.34, "complaint_submitted": 0.08,
                     "complaint_resolved": 0.05, "complaint_escalated": 0.015,
                     "tele_request_created": 0.10, "tele_consultation_completed": 0.085,
                     "daily_wellness_logged": 0.33},
        type_categories={
            "triage_completed": {"self_care": 0.62, "phc": 0.31, "emergency": 0.07},
            "complaint_submitted": _COMPLAINTS,
            "complaint_resolved": _COMPLAINTS,
            "complaint_escalated": {**_COMPLAINTS, "medication_error": 0.2,
                                    "discrimination": 0.12, "billing_dispute": 0.05},
        },
        # Fevers peak in the rainy seasons (March-May, October-November).
        months=(1.0, 1.0, 1.15, 1.25, 1.2, 1.0, 0.9, 0.9, 1.0, 1.15, 1.2, 1.0),
        weekend=0.6, slots=(28, 88),
        value=_Value(kind="score", start=6.2, end=6.6, sd=1.8, seasonal=0.3),
    ),
    "health.neuroscreen": _Profile(
        share=0.01, extra=True,
        ages={"0-5": 1.0, "6-12": 0.8, "13-18": 0.4, "19-35": 0.1, "36-60": 0.1, "60+": 0.2,
              "unknown": 0.05},
        categories={"*": {"low": 0.72, "medium": 0.2, "high": 0.08}},
        months=_FLAT_YEAR, weekend=0.1, slots=(32, 64),
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
