"""Deterministic demo data (SPEC B5): three tenants, three verticals, two years of events.

Owns generating and bulk-loading realistic, skewed, multi-tenant demo records: subjects (keyed
pseudonyms only), consent history with withdrawals, per-vertical events for every metric_set
product, and beneficiary registrations; plus ``demo_digest``, a content hash of those tables
that proves determinism through the database.

It must never store a raw subject id (only ``hmac-sha256(secret, raw)[:32]``), never read the
clock or global random state (same seed + size + secret + as-of day → identical rows), never
exceed a product's per-subject daily contribution bound nor, when the product declares one, its
per-subject monthly bound, and never build aggregates: cubes are ``data.materialize``'s job,
and the caller runs it after ``generate``.

Shape of the data, and why:

* Districts get volume in proportion to their catalog weight, and within a district cells thin
  out with ring distance from the centroid (``(1 + ring) ** -2.5`` with jitter), so the outer
  cells of light districts hold a handful of events a month: the small cells that the privacy
  gate must roll up (C4) exist at every size.
* Each product has a profile (age mix, categories, season, time of day, value model). A
  product without a profile still gets generic but valid rows, so a catalog change does not
  break the demo.
* Events are generated per (tenant, product) in chunks of whole subjects, so the daily and
  monthly contribution bounds can be enforced inside a chunk and ``large`` (10M+ events)
  streams through bounded memory.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import islice, repeat
from types import MappingProxyType
from typing import Any

import h3
import numpy as np
import psycopg
from sqlalchemy import Connection, delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.catalog import Catalog, ProductSpec, TenantSpec
from data.engine import Store
from data.errors import InvalidInput, StoreError
from data.geo import geography
from data.models import (
    VERTICAL_EVENT_MODELS,
    ConsentEvent,
    CubeMonthly,
    Registration,
    Subject,
    SubjectConsent,
)
from data.pseudonym import pseudonym

__all__ = [
    "DemoReport",
    "Progress",
    "SIZES",
    "demo_digest",
    "demo_window",
    "generate",
    "pseudonym",
]

_SLOTS_PER_DAY = 96  # 15-minute buckets

#: Target number of events (all tenants, all products) per size, before contribution bounding
#: trims a percent or so.
SIZES: Mapping[str, int] = {"small": 64_000, "medium": 1_000_000, "large": 10_400_000}

#: Subjects per event: about eight events per person over two years across all products keeps
#: a realistic spread of active and barely active people.
_EVENTS_PER_SUBJECT = 8
#: Events generated and loaded at a time; bounds memory for ``large``.
_CHUNK_EVENTS = 250_000
#: Rows per SQLite executemany call.
_SQLITE_BATCH = 100_000

_VERTICALS = ("health", "education", "social_protection")
_WITHDRAWAL_RATE = 0.02
_REGISTRATION_RATE = 0.65
_HOME_CELL_SHARE = 0.85  # the rest happen elsewhere in the home district (clinic, school)
_CONSENT_SLOTS = (24, 28)  # 06:00-06:45: consent is recorded before any activity that day
_OUTLIER_RATE = 0.006  # data-entry errors outside the metric's bounds: clamping must matter

# Population structure of the tenants' catchment (young, as in the region).
_AGE_POPULATION = {"0-5": 0.16, "6-12": 0.18, "13-18": 0.14, "19-35": 0.25, "36-60": 0.18,
                   "60+": 0.06, "unknown": 0.03}
_GENDER_POPULATION = {"female": 0.505, "male": 0.485, "other": 0.004, "unknown": 0.006}

Progress = Callable[[str, int, int], None]


# --- public value objects --------------------------------------------------------------------


@dataclass(frozen=True)
class DemoReport:
    """What ``generate`` loaded: row counts per table and per tenant, and how long it took."""

    size: str
    seed: int
    start: date  # first day of the events' window
    end: date    # last day of the events' window (the day before the as-of day)
    tables: Mapping[str, int]
    tenants: Mapping[str, Mapping[str, int]]
    products: Mapping[str, int]
    seconds: float

    @property
    def events(self) -> int:
        return sum(self.tables[m.__tablename__] for m in VERTICAL_EVENT_MODELS.values())

    def __repr__(self) -> str:
        return (f"DemoReport(size={self.size!r}, seed={self.seed}, "
                f"window={self.start.isoformat()}..{self.end.isoformat()}, "
                f"events={self.events:,}, "
                f"subjects={self.tables['subjects']:,}, "
                f"registrations={self.tables['registrations']:,}, seconds={self.seconds:.2f})")


def demo_window(as_of: date) -> tuple[date, date]:
    """The days a demo generated on ``as_of`` covers: two years up to the day before.

    It starts on the first day of a month so that the demo holds 24 complete months, followed
    by the partial month of its last day when that day is not a month's end. The caller names
    the day (``veil demo`` takes today unless ``--as-of`` pins it): the generator never reads
    the clock, so a pinned as-of day gives the same rows a year later.
    """
    if not isinstance(as_of, date) or isinstance(as_of, datetime):
        raise InvalidInput(f"as_of must be a date, got {as_of!r}")
    last = as_of - timedelta(days=1)
    complete = (last + timedelta(days=1)).day == 1  # the last day ends its month
    index = last.year * 12 + last.month - 1 - (23 if complete else 24)
    return date(index // 12, index % 12 + 1, 1), last


# --- product profiles ------------------------------------------------------------------------


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


# --- calendar and lookup tables --------------------------------------------------------------


@dataclass(frozen=True)
class _Calendar:
    """Per-day calendar facts and preformatted strings for the window.

    Timestamps are written as text in SQLAlchemy's SQLite format (``YYYY-MM-DD HH:MM:SS.ffffff``),
    which PostgreSQL's COPY also parses. There are only 730 days × 96 slots, so formatting them
    once and indexing is far cheaper than formatting millions of datetimes.
    """

    start: date  # the first day of the window
    n_days: int  # days in the window
    month: np.ndarray  # calendar month 1..12
    month_index: np.ndarray  # months since the window's first month (0, 1, …)
    weekday: np.ndarray  # 0 = Monday
    day_of_month: np.ndarray
    day_str: np.ndarray
    month_str: np.ndarray
    ts_str: np.ndarray  # index: day * 96 + slot


def _calendar(as_of: date) -> _Calendar:
    start, last = demo_window(as_of)
    n_days = (last - start).days + 1
    days = [start + timedelta(days=i) for i in range(n_days)]
    day_str = np.array([d.isoformat() for d in days], dtype=object)
    month_str = np.array([d.replace(day=1).isoformat() for d in days], dtype=object)
    clock = [f" {s // 4:02d}:{(s % 4) * 15:02d}:00.000000" for s in range(_SLOTS_PER_DAY)]
    ts_str = np.array([d + c for d in day_str for c in clock], dtype=object)
    return _Calendar(
        start=start, n_days=n_days,
        month=np.array([d.month for d in days]),
        month_index=np.array([(d.year - start.year) * 12 + d.month - start.month
                              for d in days]),
        weekday=np.array([d.weekday() for d in days]),
        day_of_month=np.array([d.day for d in days]),
        day_str=day_str, month_str=month_str, ts_str=ts_str,
    )


@dataclass(frozen=True)
class _Geo:
    """Cells of the whole catalog geography, flattened for vectorised sampling."""

    district_codes: np.ndarray  # district index → code
    cell_codes: np.ndarray  # cell index → H3 cell
    cell_district: np.ndarray  # cell index → district index
    # Cells grouped by district; district d's cumulative weights run from d to d + 1, so one
    # ``searchsorted(cum, d + u)`` samples a weighted cell of district d for a whole array.
    cum: np.ndarray


def _geo(catalog: Catalog, seed: int) -> _Geo:
    geo = geography(catalog)
    district_codes = [d.code for d in catalog.districts]
    cells: list[str] = []
    cell_district: list[int] = []
    cum_parts: list[np.ndarray] = []
    # Jitter is seeded so that the skew is part of the deterministic demo.
    rng = np.random.default_rng([seed, 0x6E0])
    for d_index, district in enumerate(catalog.districts):
        district_cells = geo.cells_by_district[district.code]
        if not district_cells:
            continue
        centre = h3.latlng_to_cell(district.lat, district.lng, catalog.h3_resolution)
        rings = np.array([_ring(centre, cell, catalog.cell_ring) for cell in district_cells])
        weights = (1.0 + rings) ** -2.5 * rng.lognormal(0.0, 0.4, len(district_cells))
        cumulative = np.cumsum(weights) / weights.sum()
        cumulative[-1] = 1.0
        cum_parts.append(d_index + cumulative)
        cells.extend(district_cells)
        cell_district.extend([d_index] * len(district_cells))
    return _Geo(
        district_codes=np.array(district_codes, dtype=object),
        cell_codes=np.array(cells, dtype=object),
        cell_district=np.array(cell_district),
        cum=np.concatenate(cum_parts),
    )


def _ring(centre: str, cell: str, ring: int) -> int:
    try:
        return int(h3.grid_distance(centre, cell))
    except h3.H3BaseException:
        # A cell across a pentagon or far away: treat it as the outermost ring.
        return ring + 1


def _sample_cells(geo: _Geo, districts: np.ndarray, u: np.ndarray) -> np.ndarray:
    # Keep d + u strictly below d + 1 so rounding never spills into the next district.
    target = districts + np.minimum(u, 1.0 - 1e-12)
    return np.searchsorted(geo.cum, target, side="right")


# --- subjects --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Subjects:
    """One tenant's people: attributes as parallel arrays, index = person number."""

    tenant: str
    pseudonyms: np.ndarray
    district: np.ndarray  # district index
    cell: np.ndarray  # home cell index
    age: np.ndarray  # index into the age_bucket domain
    gender: np.ndarray  # index into the gender domain
    activity: np.ndarray  # how active the person is, log-normal around 1
    first_day: np.ndarray
    first_slot: np.ndarray
    withdraw_vertical: np.ndarray  # index into _VERTICALS, -1 = never withdraws
    withdraw_day: np.ndarray
    withdraw_slot: np.ndarray
    n_days: int  # days in the demo window

    def __len__(self) -> int:
        return len(self.pseudonyms)

    def active_until(self, vertical: str) -> np.ndarray:
        """Day (exclusive) until which each subject may have events in ``vertical``."""
        v = _VERTICALS.index(vertical)
        return np.where(self.withdraw_vertical == v, self.withdraw_day, self.n_days)


def _weights(domain: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    array = np.array([weights.get(value, 0.0) for value in domain], dtype=float)
    if array.sum() <= 0:
        array = np.ones(len(domain))
    return array / array.sum()


def _make_subjects(rng: np.random.Generator, catalog: Catalog, geo: _Geo, tenant: TenantSpec,
                   count: int, secret: str, n_days: int) -> _Subjects:
    district_index = {code: i for i, code in enumerate(geo.district_codes)}
    districts = catalog.districts_of(tenant.id)
    d_weights = np.array([d.weight for d in districts], dtype=float)
    home = rng.choice(np.array([district_index[d.code] for d in districts]), size=count,
                      p=d_weights / d_weights.sum())
    cell = _sample_cells(geo, home, rng.random(count))
    age = rng.choice(len(catalog.domains["age_bucket"]), size=count,
                     p=_weights(catalog.domains["age_bucket"], _AGE_POPULATION))
    gender = rng.choice(len(catalog.domains["gender"]), size=count,
                        p=_weights(catalog.domains["gender"], _GENDER_POPULATION))
    activity = rng.lognormal(0.0, 0.6, count)
    # Most people are already in the programmes when the window opens; the rest join over time.
    existing = rng.random(count) < 0.55
    first_day = np.where(existing, rng.integers(0, 45, count),
                         rng.integers(0, n_days - 30, count))
    first_slot = rng.integers(*_CONSENT_SLOTS, count)
    withdraws = rng.random(count) < _WITHDRAWAL_RATE
    withdraw_vertical = np.where(withdraws, rng.integers(0, len(_VERTICALS), count), -1)
    room = n_days - first_day - 1
    withdraw_day = first_day + 1 + np.floor(rng.random(count) * room).astype(np.int64)
    withdraw_slot = rng.integers(28, 80, count)
    pseudonyms = np.array(
        [pseudonym(secret, f"{tenant.id}-person-{i}") for i in range(count)], dtype=object)
    return _Subjects(
        tenant=tenant.id, pseudonyms=pseudonyms, district=home, cell=cell, age=age,
        gender=gender, activity=activity, first_day=first_day, first_slot=first_slot,
        withdraw_vertical=withdraw_vertical, withdraw_day=withdraw_day,
        withdraw_slot=withdraw_slot, n_days=n_days,
    )


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ProductPlan:
    product: ProductSpec
    profile: _Profile
    cum_days: np.ndarray  # cumulative day weights, length N+1
    category_cum: np.ndarray | None  # per age bucket: cumulative category probabilities
    categories: np.ndarray | None  # category index → stored value (None: no category)
    bounds: tuple[float, float] | None


def _plan(catalog: Catalog, cal: _Calendar, product: ProductSpec) -> _ProductPlan:
    profile = _PROFILES.get(product.id) or _generic_profile(product)
    t = np.arange(cal.n_days) / (cal.n_days - 1)
    weights = np.array(profile.months)[cal.month - 1]
    weights = weights * np.where(cal.weekday >= 5, profile.weekend, 1.0)
    weights = weights * np.where(cal.day_of_month <= 5, profile.month_start_boost, 1.0)
    weights = weights * (0.9 + 0.2 * t)  # programmes expand over the two years
    cum_days = np.concatenate([[0.0], np.cumsum(weights)])
    domain = catalog.domains[product.category_domain]
    if domain == ("-",):
        # "No category" is stored as NULL; materialisation reports it as "-".
        category_cum, categories = None, None
    else:
        ages = catalog.domains["age_bucket"]
        rows = [_weights(domain, profile.categories.get(a) or profile.categories.get("*", {}))
                for a in ages]
        category_cum = np.cumsum(np.array(rows), axis=1)
        category_cum[:, -1] = 1.0
        categories = np.array(domain, dtype=object)
    return _ProductPlan(product=product, profile=profile, cum_days=cum_days,
                        category_cum=category_cum, categories=categories,
                        bounds=_value_bounds(product))


@dataclass
class _Chunk:
    subject: np.ndarray
    day: np.ndarray
    slot: np.ndarray
    cell: np.ndarray
    category: np.ndarray | None
    value: np.ndarray | None
    event_type: np.ndarray | None


def _event_counts(rng: np.random.Generator, plan: _ProductPlan, subjects: _Subjects,
                  catalog: Catalog, expected: float) -> np.ndarray:
    """Events per subject for one product: Poisson around activity × age fit × active time."""
    age_fit = _weights(catalog.domains["age_bucket"], plan.profile.ages or
                       {a: 1.0 for a in catalog.domains["age_bucket"]})[subjects.age]
    until = subjects.active_until(plan.product.vertical)
    span = plan.cum_days[until] - plan.cum_days[subjects.first_day]
    weight = subjects.activity * age_fit * np.maximum(span, 0.0)
    if weight.sum() <= 0:
        return np.zeros(len(subjects), dtype=np.int64)
    return rng.poisson(expected * weight / weight.sum())


def _draw_chunk(rng: np.random.Generator, plan: _ProductPlan, subjects: _Subjects,
                geo: _Geo, cal: _Calendar, lo: int, hi: int, counts: np.ndarray) -> _Chunk:
    """Events of subjects ``lo..hi``, bounded per subject and day (and month, when the product
    declares it), sorted by subject and time."""
    idx = np.repeat(np.arange(lo, hi), counts[lo:hi])
    n = len(idx)
    start = subjects.first_day[idx]
    until = subjects.active_until(plan.product.vertical)[idx]
    # Inverse-CDF sampling of a day in [start, until) under the product's seasonal weights.
    c_lo, c_hi = plan.cum_days[start], plan.cum_days[until]
    target = c_lo + rng.random(n) * (c_hi - c_lo)
    day = np.clip(np.searchsorted(plan.cum_days, target, side="right") - 1, start, until - 1)
    slot = rng.integers(*plan.profile.slots, n)
    away = rng.random(n) >= _HOME_CELL_SHARE
    cell = np.where(away, _sample_cells(geo, subjects.district[idx], rng.random(n)),
                    subjects.cell[idx])
    category = None
    if plan.category_cum is not None:
        u = rng.random(n)[:, None]
        category = (u >= plan.category_cum[subjects.age[idx]]).sum(axis=1)
    value = None
    if plan.bounds is not None:
        value = _draw_values(rng, plan, cal, day, category)
    event_type = None
    if len(plan.product.event_types) > 1:
        event_type = rng.integers(0, len(plan.product.event_types), n)

    # Contribution bounds: keep at most max_events_per_subject_per_day per subject and day, and
    # of those the first max_events_per_subject_per_month per subject and month (as ingestion
    # admits them: the daily bound first, then the month in time order). The chunk holds whole
    # subjects, so bounding inside it is bounding overall.
    key = idx.astype(np.int64) * cal.n_days + day
    order = np.lexsort((slot, key))
    keep = order[_ranks(key[order]) < plan.product.max_events_per_subject_per_day]
    month_bound = plan.product.max_events_per_subject_per_month
    if month_bound is not None:
        # ``keep`` is in (subject, day, slot) order, so each subject-month is one run in it.
        month_key = idx[keep].astype(np.int64) * (int(cal.month_index[-1]) + 1) \
            + cal.month_index[day[keep]]
        keep = keep[_ranks(month_key) < month_bound]
    return _Chunk(
        subject=idx[keep], day=day[keep], slot=slot[keep], cell=cell[keep],
        category=None if category is None else category[keep],
        value=None if value is None else value[keep],
        event_type=None if event_type is None else event_type[keep],
    )


def _ranks(sorted_keys: np.ndarray) -> np.ndarray:
    """Each element's place (0, 1, …) within its run of equal keys (equal keys adjacent)."""
    n = len(sorted_keys)
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))


def _draw_values(rng: np.random.Generator, plan: _ProductPlan, cal: _Calendar, day: np.ndarray,
                 category: np.ndarray | None) -> np.ndarray:
    assert plan.bounds is not None and plan.profile.value is not None
    model = plan.profile.value
    lo, hi = plan.bounds
    n = len(day)
    t = day / (cal.n_days - 1)
    offsets = np.zeros(n)
    if category is not None and plan.categories is not None and model.by_category:
        table = np.array([model.by_category.get(c, 0.0) for c in plan.categories])
        offsets = table[category]
    if model.kind == "amount":
        medians = np.where(offsets > 0, offsets, lo + 0.3 * (hi - lo))
        value = medians * (1.0 + 0.06 * t) * rng.lognormal(0.0, model.sigma, n)
        outlier = rng.random(n) < _OUTLIER_RATE
        # Duplicated payments keyed in as one (far above the cap) and reversals (negative).
        value = np.where(outlier, np.where(rng.random(n) < 0.7, value * rng.uniform(3, 6, n),
                                           -value), value)
    else:
        lean = np.isin(cal.month[day], (9, 10, 11))  # before the harvest
        mean = model.start + (model.end - model.start) * t - model.seasonal * lean + offsets
        value = rng.normal(mean, model.sd)
        # Mostly inside the bounds, as real scores are, but a few typos fall outside them.
        value = np.clip(value, lo, hi)
        outlier = rng.random(n) < _OUTLIER_RATE
        span = hi - lo
        value = np.where(outlier, np.where(rng.random(n) < 0.6,
                                           hi + rng.uniform(0.01, 0.3, n) * span,
                                           lo - rng.uniform(0.01, 0.2, n) * span), value)
    return np.round(value, 2)


# --- loading ---------------------------------------------------------------------------------


class _Loader:
    """Bulk insert of plain tuples inside the caller's transaction: COPY or executemany."""

    def __init__(self, session: Session, dialect: str):
        if dialect not in {"sqlite", "postgresql"}:
            raise StoreError(f"demo data can be loaded into sqlite or postgresql, not {dialect}")
        self.dialect = dialect
        self.connection: Connection = session.connection()
        self.raw: Any = self.connection.connection.dbapi_connection

    def load(self, table: str, columns: Sequence[str], rows: Iterable[tuple]) -> None:
        names = ", ".join(columns)
        if self.dialect == "postgresql":
            with self.raw.cursor() as cursor:
                with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            return
        sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
        cursor = self.raw.cursor()
        try:
            for batch in _batches(rows, _SQLITE_BATCH):
                cursor.executemany(sql, batch)
        finally:
            cursor.close()


def _batches(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


_EVENT_COLUMNS = ("event_id", "tenant_id", "product_id", "event_type", "pseudonym", "ts", "day",
                  "month", "h3_cell", "district", "age_bucket", "gender", "category", "value")


def _event_rows(chunk: _Chunk, first_number: int, plan: _ProductPlan, subjects: _Subjects,
                geo: _Geo, cal: _Calendar, ages: np.ndarray,
                genders: np.ndarray) -> Iterator[tuple]:
    product = plan.product
    n = len(chunk.subject)
    prefix = f"{subjects.tenant}:{product.id}:"
    ids = [f"{prefix}{i:09d}" for i in range(first_number, first_number + n)]
    if chunk.event_type is None:
        event_types: Iterable[Any] = repeat(product.event_types[0], n)
    else:
        event_types = np.array(product.event_types, dtype=object)[chunk.event_type].tolist()
    categories: Iterable[Any] = (
        repeat(None, n) if chunk.category is None or plan.categories is None
        else plan.categories[chunk.category].tolist())
    values: Iterable[Any] = repeat(None, n) if chunk.value is None else chunk.value.tolist()
    return zip(
        ids, repeat(subjects.tenant, n), repeat(product.id, n), event_types,
        subjects.pseudonyms[chunk.subject].tolist(),
        cal.ts_str[chunk.day * _SLOTS_PER_DAY + chunk.slot].tolist(),
        cal.day_str[chunk.day].tolist(),
        cal.month_str[chunk.day].tolist(),
        geo.cell_codes[chunk.cell].tolist(),
        geo.district_codes[geo.cell_district[chunk.cell]].tolist(),
        ages[subjects.age[chunk.subject]].tolist(),
        genders[subjects.gender[chunk.subject]].tolist(),
        categories, values,
    )


# --- the generator ---------------------------------------------------------------------------


def generate(store: Store, catalog: Catalog, *, size: str = "small", seed: int = 7,
             secret: str, as_of: date, progress: Progress | None = None) -> DemoReport:
    """Replace the demo tenants' records with freshly generated ones; return what was loaded.

    The events cover ``demo_window(as_of)``: two years up to the day before ``as_of``.
    Deterministic: the same ``size``, ``seed``, ``secret`` and ``as_of`` give identical rows. Runs in one
    write transaction, so readers see the old demo or the new one, never half of each. Does not
    build cubes: run ``data.materialize.materialize`` afterwards.
    """
    if size not in SIZES:
        raise InvalidInput(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"demo seed must be a non-negative integer, got {seed!r}")
    if not secret:
        raise InvalidInput("a secret is required to key the demo subjects' pseudonyms")
    window = demo_window(as_of)
    started = time.perf_counter()
    run = _Run(catalog=catalog, seed=seed, size=size, secret=secret, as_of=as_of,
               progress=progress or (lambda stage, done, total: None))
    try:
        with store.write.begin() as session:
            loader = _Loader(session, store.dialect)
            restore = _speed_up(loader)
            try:
                run.load(session, loader)
            finally:
                restore()
        _analyze(store, run.tables)
    except (SQLAlchemyError, sqlite3.Error, psycopg.Error) as exc:
        raise StoreError(
            f"Loading the {size} demo data failed and was rolled back, so the store is "
            f"unchanged: {exc}"
        ) from exc
    return DemoReport(size=size, seed=seed, start=window[0], end=window[1], tables=MappingProxyType(run.tables),
                      tenants=MappingProxyType(run.per_tenant),
                      products=MappingProxyType(run.per_product),
                      seconds=time.perf_counter() - started)


class _Run:
    """One generation: the shared lookup tables, the plan per product, and running counts."""

    def __init__(self, *, catalog: Catalog, seed: int, size: str, secret: str, as_of: date,
                 progress: Progress):
        self.catalog, self.seed, self.size, self.secret = catalog, seed, size, secret
        self.progress = progress
        self.cal = _calendar(as_of)
        self.geo = _geo(catalog, seed)
        self.ages = np.array(catalog.domains["age_bucket"], dtype=object)
        self.genders = np.array(catalog.domains["gender"], dtype=object)
        self.plans = [_plan(catalog, self.cal, p) for p in catalog.products
                      if p.kind == "metric_set"]
        self.tables: dict[str, int] = {name: 0 for name in (
            "subjects", "consent_events", "subject_consent", "registrations",
            *(m.__tablename__ for m in VERTICAL_EVENT_MODELS.values()))}
        self.per_tenant: dict[str, dict[str, int]] = {}
        self.per_product: dict[str, int] = {plan.product.id: 0 for plan in self.plans}

    def rng(self, *stream: int) -> np.random.Generator:
        # One independent stream per purpose, tenant, product and chunk: changing how one part
        # is drawn never shifts the random numbers of another.
        return np.random.default_rng([self.seed, *stream])

    def load(self, session: Session, loader: _Loader) -> None:
        self.progress("clear", 0, 1)
        _clear(session, self.catalog)
        self.progress("clear", 1, 1)
        population = self._population()
        for t_index, (tenant, subjects, _) in enumerate(population):
            self.progress("subjects", t_index, len(population))
            stats = _load_people(loader, self.rng(3, t_index), subjects, self.catalog,
                                 self.geo, self.cal, self.genders)
            for name in ("subjects", "consent_events", "subject_consent", "registrations"):
                self.tables[name] += stats[name]
            self.per_tenant[tenant.id] = {"subjects": stats["subjects"],
                                          "registrations": stats["registrations"],
                                          "withdrawals": stats["withdrawals"], "events": 0}
        self.progress("subjects", len(population), len(population))
        self._load_events(loader, population)

    def _population(self) -> list[tuple[TenantSpec, _Subjects, list[np.ndarray]]]:
        """Every tenant's people and their event counts per product, drawn up front so that
        progress has a total before the long event stage starts."""
        total_scale = sum(t.demo_scale for t in self.catalog.tenants)
        share_total = sum(plan.profile.share for plan in self.plans)
        population = []
        for t_index, tenant in enumerate(self.catalog.tenants):
            tenant_events = SIZES[self.size] * tenant.demo_scale / total_scale
            count = max(50, round(tenant_events / _EVENTS_PER_SUBJECT))
            subjects = _make_subjects(self.rng(1, t_index), self.catalog, self.geo, tenant,
                                      count, self.secret, self.cal.n_days)
            counts = [
                _event_counts(self.rng(2, t_index, p_index), plan, subjects, self.catalog,
                              tenant_events * plan.profile.share / share_total)
                for p_index, plan in enumerate(self.plans)
            ]
            population.append((tenant, subjects, counts))
        return population

    def _load_events(self, loader: _Loader,
                     population: list[tuple[TenantSpec, _Subjects, list[np.ndarray]]]) -> None:
        planned = sum(int(c.sum()) for *_, counts in population for c in counts)
        done = 0
        self.progress("events", 0, planned)
        for t_index, (tenant, subjects, counts) in enumerate(population):
            for p_index, plan in enumerate(self.plans):
                table = VERTICAL_EVENT_MODELS[plan.product.vertical].__tablename__
                number = 0  # event ids are sequential per tenant and product
                for c_index, (lo, hi) in enumerate(_subject_chunks(counts[p_index])):
                    chunk = _draw_chunk(self.rng(4, t_index, p_index, c_index), plan, subjects,
                                        self.geo, self.cal, lo, hi, counts[p_index])
                    loader.load(table, _EVENT_COLUMNS, _event_rows(
                        chunk, number, plan, subjects, self.geo, self.cal, self.ages,
                        self.genders))
                    loaded = len(chunk.subject)
                    number += loaded
                    self.tables[table] += loaded
                    self.per_tenant[tenant.id]["events"] += loaded
                    self.per_product[plan.product.id] += loaded
                    done += int(counts[p_index][lo:hi].sum())
                    self.progress("events", min(done, planned), planned)
        self.progress("events", planned, planned)


def _subject_chunks(counts: np.ndarray) -> Iterator[tuple[int, int]]:
    """Ranges of whole subjects holding about _CHUNK_EVENTS events each."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1]) if len(cumulative) else 0
    targets = np.arange(1, total // _CHUNK_EVENTS + 1) * _CHUNK_EVENTS
    cuts = np.searchsorted(cumulative, targets, side="left") + 1
    edges = sorted({0, len(counts), *cuts.tolist()})
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo < hi <= len(counts):
            yield lo, hi


def _speed_up(loader: _Loader) -> Callable[[], None]:
    """A larger page cache for SQLite while loading; returns how to put it back."""
    if loader.dialect != "sqlite":
        return lambda: None
    cursor = loader.raw.cursor()
    previous = cursor.execute("PRAGMA cache_size").fetchone()[0]
    # Random pseudonyms make the subject index's inserts random; a 256 MB cache keeps the
    # index in memory instead of re-reading pages for every row.
    cursor.execute("PRAGMA cache_size = -262144")
    cursor.close()

    def restore() -> None:
        c = loader.raw.cursor()
        c.execute(f"PRAGMA cache_size = {int(previous)}")
        c.close()

    return restore


def _analyze(store: Store, tables: Mapping[str, int]) -> None:
    """Refresh PostgreSQL's planner statistics for the tables just bulk-loaded.

    COPY does not update statistics and autovacuum gets to them only later; until then the
    planner believes the tables are nearly empty and picks nested loops that turn a cube build
    of a second into minutes. SQLite plans these queries well without statistics.
    """
    if store.dialect != "postgresql":
        return
    with store.engine.connect() as connection:
        for table in tables:
            connection.exec_driver_sql(f"ANALYZE {table}")
        connection.commit()


def _clear(session: Session, catalog: Catalog) -> None:
    """Delete the demo tenants' records and cubes so that generation is repeatable.

    ProductVersion rows stay: data versions only ever grow, so the next materialisation is a
    new version and the gate can never serve a release stored for the previous data.
    """
    tenant_ids = [t.id for t in catalog.tenants]
    for model in (*VERTICAL_EVENT_MODELS.values(), Registration, ConsentEvent, SubjectConsent,
                  Subject, CubeMonthly):
        session.execute(delete(model).where(model.tenant_id.in_(tenant_ids)))


def _load_people(loader: _Loader, rng: np.random.Generator, subjects: _Subjects,
                 catalog: Catalog, geo: _Geo, cal: _Calendar,
                 genders: np.ndarray) -> dict[str, int]:
    """Subjects, their consent history and current consent, and registrations."""
    n = len(subjects)
    tenant = subjects.tenant
    pseudonyms = subjects.pseudonyms.tolist()
    first_at = cal.ts_str[subjects.first_day * _SLOTS_PER_DAY + subjects.first_slot].tolist()
    districts = geo.district_codes[subjects.district].tolist()
    loader.load("subjects", ("tenant_id", "pseudonym", "district", "created_at"),
                zip(repeat(tenant, n), pseudonyms, districts, first_at))

    withdrawn = np.flatnonzero(subjects.withdraw_vertical >= 0)
    withdrawn_at = cal.ts_str[subjects.withdraw_day[withdrawn] * _SLOTS_PER_DAY
                              + subjects.withdraw_slot[withdrawn]].tolist()
    withdrawn_vertical = [_VERTICALS[v] for v in subjects.withdraw_vertical[withdrawn]]
    consent_columns = ("tenant_id", "pseudonym", "vertical", "status", "at")
    grants = ((tenant, pseudonyms[i], vertical, "granted", first_at[i])
              for i in range(n) for vertical in _VERTICALS)
    withdrawals = [(tenant, pseudonyms[i], withdrawn_vertical[k], "withdrawn", withdrawn_at[k])
                   for k, i in enumerate(withdrawn.tolist())]
    loader.load("consent_events", consent_columns, grants)
    loader.load("consent_events", consent_columns, withdrawals)

    # Current consent is the latest event per vertical: the withdrawal where there is one.
    latest = {(i, withdrawn_vertical[k]): withdrawn_at[k]
              for k, i in enumerate(withdrawn.tolist())}
    current = (
        (tenant, pseudonyms[i], vertical, "granted", first_at[i]) if at is None
        else (tenant, pseudonyms[i], vertical, "withdrawn", at)
        for i in range(n) for vertical in _VERTICALS
        for at in (latest.get((i, vertical)),)
    )
    loader.load("subject_consent", ("tenant_id", "pseudonym", "vertical", "status",
                                    "changed_at"), current)

    registrations = _registrations(rng, subjects, catalog, geo, cal, genders)
    loader.load("registrations", _REGISTRATION_COLUMNS, registrations)
    return {"subjects": n, "consent_events": 3 * n + len(withdrawals),
            "subject_consent": 3 * n, "registrations": len(registrations),
            "withdrawals": len(withdrawals)}


_REGISTRATION_COLUMNS = ("registration_id", "tenant_id", "pseudonym", "registered_at",
                         "district", "agent_code", "status", "birth_date", "gender",
                         "household_size")
# Age in years at registration, per age bucket: [low, high).
_AGE_YEARS = {"0-5": (0, 6), "6-12": (6, 13), "13-18": (13, 19), "19-35": (19, 36),
              "36-60": (36, 61), "60+": (61, 90), "unknown": (19, 61)}


def _registrations(rng: np.random.Generator, subjects: _Subjects, catalog: Catalog, geo: _Geo,
                   cal: _Calendar, genders: np.ndarray) -> list[tuple]:
    """Registrations of about two thirds of the people, taken by a few agents per district."""
    chosen = np.flatnonzero(rng.random(len(subjects)) < _REGISTRATION_RATE)
    n = len(chosen)
    day = subjects.first_day[chosen]
    slot = rng.integers(32, 68, n)
    t = day / (cal.n_days - 1)
    # A verification backlog: recent registrations are more often still unverified (~15%).
    unverified = rng.random(n) < 0.08 + 0.25 * t
    ages = catalog.domains["age_bucket"]
    bounds = np.array([_AGE_YEARS.get(a, (19, 61)) for a in ages], dtype=float)
    age_lo, age_hi = bounds[subjects.age[chosen], 0], bounds[subjects.age[chosen], 1]
    age_days = np.floor((age_lo + rng.random(n) * (age_hi - age_lo)) * 365.25).astype(np.int64)
    age_days = np.maximum(age_days, 1)  # born at least the day before being registered
    birth = (np.datetime64(cal.start.isoformat(), "D") + day - age_days)
    birth_str = np.datetime_as_string(birth, unit="D").tolist()
    household = np.clip(1 + rng.poisson(3.2, n), 1, 14)
    agents = _agent_codes(catalog, geo)
    agent_pick = rng.random(n)
    district = subjects.district[chosen]
    agent_codes = [
        agents[d][min(int(u * u * len(agents[d])), len(agents[d]) - 1)]  # a few agents do most
        for d, u in zip(district.tolist(), agent_pick.tolist())
    ]
    tenant = subjects.tenant
    return list(zip(
        [f"{tenant}:reg:{k:08d}" for k in range(n)], repeat(tenant, n),
        subjects.pseudonyms[chosen].tolist(),
        cal.ts_str[day * _SLOTS_PER_DAY + slot].tolist(),
        geo.district_codes[district].tolist(), agent_codes,
        np.where(unverified, "unverified", "verified").tolist(), birth_str,
        genders[subjects.gender[chosen]].tolist(), household.tolist(),
    ))


def _agent_codes(catalog: Catalog, geo: _Geo) -> dict[int, list[str]]:
    """A handful of field agents per district (more in populous ones), numbered AG-001…"""
    codes: dict[int, list[str]] = {}
    number = 1
    for d_index, district in enumerate(catalog.districts):
        count = int(min(8, 2 + round(district.weight / 2)))
        codes[d_index] = [f"AG-{number + k:03d}" for k in range(count)]
        number += count
    return codes


# --- determinism check -----------------------------------------------------------------------

_DIGEST_TABLES = (
    *(m.__table__ for m in VERTICAL_EVENT_MODELS.values()),
    Subject.__table__,
    ConsentEvent.__table__,
    SubjectConsent.__table__,
    Registration.__table__,
)


def demo_digest(store: Store) -> str:
    """SHA-256 over the demo tables' rows in a canonical order, independent of the back end.

    Surrogate keys (consent event ids) are left out: they depend on the store's sequence
    history, not on the data. Rows are sorted in Python rather than by ORDER BY, because string
    collation differs between SQLite and PostgreSQL; both return the same Python values
    (str, int, float, date, datetime, None), so ``repr`` is a canonical form. It holds one
    table's rows as text in memory at a time: meant for tests on small and medium demos.
    """
    total = hashlib.sha256()
    with store.read() as session:
        for table in _DIGEST_TABLES:
            columns = [c for c in table.columns if c.name != "id"]
            result = session.execute(select(*columns).execution_options(yield_per=50_000))
            rows = sorted(repr(tuple(row)) for row in result)
            total.update(f"{table.name}:{len(rows)}\n".encode())
            for row in rows:
                total.update(row.encode())
                total.update(b"\n")
    return total.hexdigest()
