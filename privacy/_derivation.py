"""Choosing stored measurements to derive a release's periods from, for free.

The gate's side of ``privacy._derive``: which stored period measurements may answer a view
(same data, policy, tenant settings and metric, a level the asker may use, keys that determine
every key of the view), what a fresh count release stores to be derived from later, and which
derivation to keep (the least noisy candidates first, kept only when accurate enough). Reads
stored measurements (differential-privacy output) in the caller's session, never the cube:
everything here is post-processing and costs nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from datetime import date

from sqlalchemy import bindparam, select

from data.catalog import Catalog
from data.models import ReleasePeriod
from data.prepared import Prepared

from privacy._cube import GEO_LEVELS, Cube, breakdowns
from privacy._derive import (accurate_enough, derive_cells, mechanism_of, mechanism_record,
                             noise_of)
from privacy._engine import Key, thresholds
from privacy._plan import Plan, Planner
from privacy._releases import ReleaseLog
from privacy._values import Cell, Principal, Query

__all__ = ["Derivation"]

#: stored sources tried per derived period, least noisy first (each try is post-processing)
_DERIVE_TRIES = 3



def stored_candidates(tenant: str, product: str, sources: list[str], periods: list[date]):
    """The stored periods under any of ``sources`` (one per subset of a view's filters) in
    ``periods``: a seek per key on ``ix_release_periods_source``, which is led by the source
    so that it stays one whatever the planner's statistics say (migration 0019)."""
    return select(ReleasePeriod.period, ReleasePeriod.measurement, ReleasePeriod.cells).where(
        ReleasePeriod.tenant_id == tenant, ReleasePeriod.product_id == product,
        ReleasePeriod.source.in_(sources), ReleasePeriod.period.in_(periods))


#: ``stored_candidates`` with bound parameters, sent on the driver's cursor (``data.prepared``).
_CANDIDATES = Prepared(stored_candidates(
    bindparam("tenant"), bindparam("product"), bindparam("sources", expanding=True),
    bindparam("periods", expanding=True)), expanding=("sources", "periods"))


class Derivation:
    """Derives periods of a view from stored measurements, and says what to store for it."""

    def __init__(self, catalog: Catalog, cube: Cube, planner: Planner, log: ReleaseLog):
        self._catalog = catalog
        self._cube = cube
        self._planner = planner
        self._log = log

    def source_key(self, principal: Principal, query: Query, plan: Plan, data_version: int,
                   filters) -> str:
        """Which measurements a view may be derived from: same metric, data, policy and
        tenant settings, and filters (a source's filters are a subset of the view's), so the
        planner reads only candidates (one key per subset of the view's few filters)."""
        return self.source_keys(principal, query, plan, data_version, [filters])[0]

    def source_keys(self, principal: Principal, query: Query, plan: Plan, data_version: int,
                    subsets: list) -> list[str]:
        """``source_key`` of each of ``subsets`` (filter tuples), their text built once."""
        return self._log.keys(principal.tenant, data_version, plan, vary="filters",
                              values=[sorted(list(f) for f in filters) for filters in subsets],
                              source=query.metric)

    def _source(self, query: Query, plan: Plan, data_version: int) -> dict:
        """What a stored measurement was measured as: whether it can answer another view."""
        return {"data_version": data_version, "policy_version": self._catalog.version,
                "settings": plan.key_settings, "metric": query.metric, "level": query.level,
                "geo": plan.geo, "dims": breakdowns(query),
                "filters": [list(f) for f in query.filters], "period": query.period,
                "months": [m.isoformat() for m in query.months]}

    def measurements(self, query: Query, plan: Plan, data_version: int, computed: list[date],
                     measured: dict[Key, int]) -> dict[date, dict]:
        """The finest level's noisy counts of each computed period, to derive from later."""
        count = plan.measured[0].count
        if (not computed or count is None or plan.metric.release_measure != "count"
                or plan.product.randomised_epsilon is not None):
            # a randomised product's cells are debiased jointly (privacy._local), which a
            # view summed from stored reported counts would not be: released afresh
            return {}
        source = self._source(query, plan, data_version)
        mechanism = mechanism_record(count)
        by_label: dict[str, list] = defaultdict(list)
        for key, noisy in measured.items():
            by_label[key[0]].append([*key[1:], int(noisy)])
        labels = query.periods
        return {month: {"source": source, "mechanism": mechanism,
                        "counts": by_label.get(labels[month], [])} for month in computed}

    def derive(self, session, principal: Principal, query: Query, plan: Plan,
               data_version: int, months: list[date]) -> dict[date, list]:
        """The periods of ``months`` that stored measurements answer accurately enough, as
        cell JSON (free: post-processing). Empty when nothing qualifies."""
        planner = self._catalog.policy.planner
        fine = plan.measured[0].count
        if (not months or not planner.derive or fine is None
                or plan.metric.release_measure != "count"
                or plan.product.randomised_epsilon is not None):
            return {}
        window = query.period == "window"
        read = list(query.months) if window else months
        role = self._planner.role(principal)
        levels = {level for level in role.privacy_levels
                  if level not in plan.settings.settings.disabled_levels}
        rows = _CANDIDATES.rows(session, {
            "tenant": principal.tenant, "product": plan.product.id,
            "sources": self.source_keys(principal, query, plan, data_version, [
                subset for size in range(len(query.filters) + 1)
                for subset in itertools.combinations(query.filters, size)]),
            "periods": read})
        dims = breakdowns(query)
        sources: dict[date, list[dict]] = defaultdict(list)
        totals: dict[date, list[list]] = defaultdict(list)
        for period, measurement, cells in rows:
            if not measurement:
                continue
            source = measurement["source"]
            if (source["data_version"] != data_version
                    or source["policy_version"] != self._catalog.version
                    or source["settings"] != plan.key_settings
                    or source["metric"] != query.metric or source["level"] not in levels
                    or not _covers(source, query, plan)):
                continue
            if source["period"] == "window":
                if not window or source["months"] != [m.isoformat() for m in query.months]:
                    continue
                sources[query.start].append(measurement)
            elif source["period"] == "month":
                sources[period].append(measurement)
                if (plan.geo == "tenant" and source["geo"] != "tenant"
                        and source["dims"] == dims
                        and {tuple(f) for f in source["filters"]} == set(query.filters)):
                    totals[period].append(cells)
        if not sources:
            return {}
        labels = query.periods
        fresh_cut = thresholds(plan.measured, k=plan.k,
                               empty_cell_rate=self._catalog.policy.empty_cell_rate)[0]
        out: dict[date, list] = {}
        targets = [query.start] if window else months
        for month in targets:
            if window:
                # a window only from a window of the same months: summed from its months, every
                # area's noise is √months × a fresh window's, and small areas a fresh window
                # shows would roll up (what insights need is one value per area)
                choices = [[m] for m in sources.get(query.start, ())
                           if m["source"]["period"] == "window"]
            else:
                choices = [[m] for m in sources.get(month, ())]
            label = labels[month]
            keys = self._cube.keys(principal.tenant, query, plan, [label], dims)
            best: list | None = None
            # the tenant of a finer view of the same breakdown: its stored totals (which also
            # weigh in the top's own measurement) are the best estimate; then sums
            candidates = [(_as_totals(cells, keys), {}) for cells in totals.get(month, ())]
            candidates += [self._derived_cells(principal, query, plan, keys, label, measurements)
                           for measurements in sorted(choices, key=_noise_volume)[:_DERIVE_TRIES]]
            for cells, lowers in candidates:
                # areas it hides although their count is clearly above a fresh release's
                # threshold (its interval's lower end is): a fresh release would show them
                shown = {c.key for c in cells or () if c.value is not None}
                hidden = sum(1 for key, lower in lowers.items()
                             if key not in shown and lower >= fresh_cut)
                if cells is None or not accurate_enough(
                        cells, fresh_half_width=fine.half_width,
                        max_ratio=planner.max_width_ratio,
                        max_relative=planner.max_relative_half_width,
                        min_share=planner.min_share_accurate, hidden=hidden):
                    continue
                best = [c.to_json() for c in cells]
                break
            if best is not None:
                out[month] = best
        return out

    def _derived_cells(self, principal: Principal, query: Query, plan: Plan,
                       keys: list[Key], label: str,
                       measurements: list[dict]) -> tuple[list[Cell] | None, dict]:
        """The view's cells for one period summed from ``measurements``, and the lower end of
        each finest key's derived count (noisy − its noise's half-width); (None, {}) if some
        key of the public key set has nothing measured under it."""
        wanted = {key: [0, 0] for key in keys}
        filters = dict(query.filters)
        dims = breakdowns(query)
        for measurement in measurements:
            source = measurement["source"]
            pinned = {d: v for d, v in source["filters"]}
            # a stored count: [area, *its source's breakdown values, noisy count]
            for area, *values_of, noisy in measurement["counts"]:
                values = dict(zip(source["dims"], values_of))
                chain = self._cube.chain(principal.tenant, area, source["geo"])
                if any((chain.get(d) if d in GEO_LEVELS else values.get(d, pinned.get(d)))
                       != v for d, v in filters.items()):
                    continue
                key = (label, chain[plan.geo],
                       *(values[d] if d in values else pinned[d] for d in dims))
                slot = wanted.get(key)
                if slot is None:
                    return None, {}  # a key outside the public key set: the sets disagree
                slot[0] += noisy
                slot[1] += 1
        if any(many == 0 for _, many in wanted.values()):
            return None, {}
        base = mechanism_of(measurements[0]["mechanism"])
        cells = derive_cells(keys=keys, derived={k: (v[0], v[1]) for k, v in wanted.items()},
                             levels=self._cube.levels(principal.tenant, plan), base=base,
                             k=plan.k, empty_cell_rate=self._catalog.policy.empty_cell_rate)
        return cells, {key: noisy - noise_of(base, many).half_width
                       for key, (noisy, many) in wanted.items()}


def _covers(source: dict, query: Query, plan: Plan) -> bool:
    """Whether a source's keys determine every key of ``query``: a geography at least as
    fine, every breakdown (or the same filter), and every extra filter on what it carries."""
    if GEO_LEVELS.index(source["geo"]) > GEO_LEVELS.index(plan.geo):
        return False
    filters = {tuple(f) for f in source["filters"]}
    if not filters <= set(query.filters):
        return False
    pinned = dict(filters)
    for dimension in query.group_by[1:]:
        if dimension not in GEO_LEVELS and dimension not in source["dims"] \
                and dimension not in pinned:
            return False
    for dimension, _value in set(query.filters) - filters:
        if dimension in GEO_LEVELS:
            if GEO_LEVELS.index(source["geo"]) > GEO_LEVELS.index(dimension):
                return False
        elif dimension not in source["dims"]:
            return False
    return True


def _as_totals(cells: list[dict], keys: list[Key]) -> list[Cell] | None:
    """A finer view's stored total cells as the cells of its tenant view (keys ``keys``):
    the same estimates and intervals; a stratum the finer view suppressed stays suppressed."""
    found = {tuple(c["key"][1:]): Cell.from_json(c) for c in cells if c["status"] == "total"}
    out = []
    for key in keys:
        total = found.get(tuple(key[1:]))
        out.append(Cell(key=key, value=None, lower=None, upper=None, noise_scale=None,
                        status="suppressed") if total is None else
                   dataclasses.replace(total, key=key, status="noisy", members=()))
    return out if any(c.value is not None for c in out) else None


def _noise_volume(measurements: list[dict]) -> float:
    """How noisy a derivation from ``measurements`` is at most, before looking at any count:
    the variance of one measured count times how many are measured (what is summed)."""
    return sum(mechanism_of(m["mechanism"]).variance * max(len(m["counts"]), 1)
               for m in measurements)
