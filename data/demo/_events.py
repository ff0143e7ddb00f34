"""The demo's events: how many per subject and product, when, where, and within the bounds.

Owns drawing one product's events in chunks of whole subjects (Poisson counts around each
person's activity, days under the product's seasonal weights, cells, event types and categories
(each type's own, where the product declares them per type), values with a few outliers) and
the rows as stored. Every chunk is trimmed to the product's per-subject daily bound and, when
declared, its monthly bound, as ingestion would admit them, so the demo never exceeds a
contribution bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from data.catalog import Catalog, ProductSpec
from data.demo._calendar import _SLOTS_PER_DAY, _Calendar
from data.demo._people import _Subjects, _weights
from data.demo._places import _Geo, _sample_cells
from data.demo._profiles import _PROFILES, _generic_profile, _Profile, _value_bounds

#: Events generated and loaded at a time; bounds memory for ``large``.
_CHUNK_EVENTS = 250_000
_HOME_CELL_SHARE = 0.85  # the rest happen elsewhere in the home district (clinic, school)
_OUTLIER_RATE = 0.006  # data-entry errors outside the metric's bounds: clamping must matter


@dataclass(frozen=True)
class _ProductPlan:
    product: ProductSpec
    profile: _Profile
    cum_days: np.ndarray  # cumulative day weights, length N+1
    category_cum: np.ndarray | None  # per age bucket: cumulative category probabilities
    categories: np.ndarray | None  # category index → stored value (None: no category)
    bounds: tuple[float, float] | None
    # A product declaring ``event_categories`` draws its event type from the profile's mix and
    # then a category from that type's own domain (``categories`` then holds every type's
    # values, and None for a type without categories); only types a sum or mean metric reads
    # get a value. None on every other product's plan, which draws as it always did.
    type_cum: np.ndarray | None = None  # cumulative event-type probabilities
    type_category_cum: np.ndarray | None = None  # per event type: cumulative over categories
    valued_types: np.ndarray | None = None  # per event type: does it carry a value


def _plan(catalog: Catalog, cal: _Calendar, product: ProductSpec) -> _ProductPlan:
    profile = _PROFILES.get(product.id) or _generic_profile(product)
    t = np.arange(cal.n_days) / (cal.n_days - 1)
    weights = np.array(profile.months)[cal.month - 1]
    weights = weights * np.where(cal.weekday >= 5, profile.weekend, 1.0)
    weights = weights * np.where(cal.day_of_month <= 5, profile.month_start_boost, 1.0)
    weights = weights * (0.9 + 0.2 * t)  # programmes expand over the two years
    cum_days = np.concatenate([[0.0], np.cumsum(weights)])
    domain = catalog.domains[product.category_domain]
    if product.event_categories:
        return _typed_plan(catalog, product, profile, cum_days)
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


def _typed_plan(catalog: Catalog, product: ProductSpec, profile: _Profile,
                cum_days: np.ndarray) -> _ProductPlan:
    """The plan of a product whose event types have their own category domains."""
    types = product.event_types
    values: list = []
    for event_type in types:
        domain = catalog.domains[product.domain_of(event_type)]
        for value in (None,) if domain == ("-",) else domain:
            if value not in values:
                values.append(value)
    rows = []
    for event_type in types:
        domain = catalog.domains[product.domain_of(event_type)]
        own = (None,) if domain == ("-",) else domain
        weights = _weights(own, profile.type_categories.get(event_type, {}))
        row = np.zeros(len(values))
        row[[values.index(value) for value in own]] = weights
        rows.append(_cumulative(row))
    valued = {m.event_type for m in product.metrics if m.measure in {"sum", "mean"}}
    return _ProductPlan(
        product=product, profile=profile, cum_days=cum_days, category_cum=None,
        categories=np.array(values, dtype=object), bounds=_value_bounds(product),
        type_cum=_cumulative(_weights(types, profile.event_types)),
        type_category_cum=np.array(rows),
        valued_types=np.array([t in valued for t in types]))


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """Cumulative probabilities that reach exactly 1 at the last value of positive weight, so
    that rounding never draws a value of weight 0."""
    cum = np.cumsum(weights / weights.sum())
    cum[np.flatnonzero(weights)[-1]:] = 1.0
    return cum


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
    category = event_type = None
    if plan.type_category_cum is not None:
        # the event type first, then a category of that type's own domain
        event_type = np.searchsorted(plan.type_cum, rng.random(n), side="right")
        u = rng.random(n)[:, None]
        category = (u >= plan.type_category_cum[event_type]).sum(axis=1)
    elif plan.category_cum is not None:
        u = rng.random(n)[:, None]
        category = (u >= plan.category_cum[subjects.age[idx]]).sum(axis=1)
    value = None
    if plan.bounds is not None:
        value = _draw_values(rng, plan, cal, day, category)
        if plan.valued_types is not None:
            value = np.where(plan.valued_types[event_type], value, np.nan)  # NaN: no value
    if event_type is None and len(plan.product.event_types) > 1:
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
    if plan.valued_types is not None and chunk.value is not None:
        values = [None if v != v else v for v in values]  # NaN (a type without a value): NULL
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


def _randomise_reports(chunk: _Chunk, plan: _ProductPlan, rng: np.random.Generator) -> _Chunk:
    """A product randomised at collection stores reports, not answers: each drawn (true)
    category is kept with p = e^ε/(e^ε + k − 1), else replaced by one of the other k − 1 at
    random, as the source's client does (``data.ingest.client``). Its own random stream, so
    no other draw of the demo moves; other products' chunks are returned as they are."""
    epsilon = plan.product.randomised_epsilon
    if epsilon is None or chunk.category is None or plan.categories is None:
        return chunk
    k = len(plan.categories)
    p = np.exp(epsilon) / (np.exp(epsilon) + k - 1)
    n = len(chunk.category)
    other = (chunk.category + rng.integers(1, k, n)) % k
    reported = np.where(rng.random(n) < p, chunk.category, other)
    return dataclasses.replace(chunk, category=reported)
