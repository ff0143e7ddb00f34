"""The release engine: noise, k-threshold and roll-up over the public key set. Pure computation.

Owns turning true aggregates (from the cube, already tenant-scoped) into released cells. It never
reads the store and never decides who may ask; the gate does both.

Roll-up ("coarsen, don't suppress"): every key of the public key set at the finest geography is
measured once (zero-filled: a declared area with no data gets noise, not absence). A unit is
released with its own value only when its *noisy* count reaches its level's threshold
τ = max(k, t_α), t_α the smallest integer that a unit with no events reaches with probability at
most α (the policy's ``empty_cell_rate``): so noise alone rarely paints an empty area as active.
A cell under τ is merged with its unresolved siblings into its parent area; the parent is
recomputed from that union and measured once more; and so on up to the top (the whole tenant),
which measures its full total for every month, so every leftover small cell is counted in it
(status "total"). Only a whole tenant-month under the top's τ is suppressed: coverage is 100%
otherwise.

Totals are estimated from measurements, never from the selection: the top's value combines its
own noisy count with the sum of *all* finest-level noisy counts (inverse-variance weights), both
unbiased; the released parts are then scaled down where they add up to more, so stored cells are
hierarchy-consistent (parts ≤ total, non-negative) and every viewer sees the same numbers.

Each hierarchy level is one measurement of a vector whose L1 sensitivity is the product's
per-person-per-day bound, because a person-day's events fall into disjoint cells at every level.
The level's ε is split across the possible levels *before* looking at the data
(``split_epsilon``), so what a query costs never depends on the data; thresholds, estimates and
scaling are post-processing of the noisy counts and cost nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from data.errors import VeilBug

from privacy._intervals import mean_interval, shown_count_interval, total_half_width
from privacy._mechanisms import CountMechanism, SumMechanism, composed
from privacy._values import Cell, Delta, Epsilon, PrivacyLoss

__all__ = ["Level", "Measured", "carry_up", "finish_cells", "release_cells", "release_loss",
           "split_epsilon", "strata", "thresholds", "top_units"]

#: A key of the public key set: (month, geo code, *other dimension values).
Key = tuple[str, ...]


@dataclass(frozen=True)
class Level:
    """One geography level of a query, finest first: its name and how to find a code's parent."""

    name: str
    parent: Callable[[str], str] | None  # None at the top (tenant)


@dataclass(frozen=True)
class Measured:
    """The mechanisms of one hierarchy level (None: the anonymized level, no noise)."""

    count: CountMechanism | None
    total: SumMechanism | None  # only for sum and mean measures


def split_epsilon(epsilon: float, levels: int) -> list[float]:
    """Data-independent split of a query's ε across its hierarchy levels.

    The finest level (what the user asked for) gets half; the parent levels that may receive
    rolled-up cells share the other half. One level gets everything.
    """
    if levels < 1:
        raise VeilBug(f"a query has at least one geography level, got {levels}")
    if levels == 1:
        return [epsilon]
    rest = epsilon / 2 / (levels - 1)
    return [epsilon / 2] + [rest] * (levels - 1)


def release_loss(measured: Sequence[Measured], *, delta: float) -> PrivacyLoss:
    """What one release of these mechanisms costs: their OpenDP composition's ``map(d_in)``.

    The counts of all levels are one composition (Gaussian: composed in ρ, converted to (ε, δ)
    once at ``delta``, so δ is spent once per release, not once per level). Sums and means
    also measure clamped sums, on another input space (float vectors, their own sensitivity):
    that second composition is pure ε-DP and adds to the first by basic composition (OpenDP's
    ``make_composition`` takes one input space, so the two families cannot be one of its
    compositions). Depends on the mechanisms only, never on the data; no mechanism at all (the
    anonymized level) costs nothing. The one place a release's cost is computed: the plan's
    charge and a stored release's stated guarantee both come from here.
    """
    return _release_loss(tuple(measured), delta)


@cache  # mechanisms are frozen values: the same query shape costs the same, composed once
def _release_loss(measured: tuple[Measured, ...], delta: float) -> PrivacyLoss:
    families = [[m.count for m in measured if m.count is not None],
                [m.total for m in measured if m.total is not None]]
    epsilon, spent_delta = 0.0, 0.0
    for family in families:
        if not family:
            continue
        measurement, d_in = composed(family, delta=delta)
        loss = measurement.map(d_in)
        family_epsilon, family_delta = loss if isinstance(loss, tuple) else (loss, 0.0)
        epsilon, spent_delta = epsilon + family_epsilon, spent_delta + family_delta
    return PrivacyLoss(Epsilon(epsilon), Delta(spent_delta))


def thresholds(measured: Sequence[Measured], *, k: int, empty_cell_rate: float) -> list[int]:
    """The release threshold τ of each level: max(k, t_α) for its count noise, k without noise.

    t_α is the smallest integer a unit with no events reaches with probability ≤ α
    (``empty_cell_rate``). It depends on the mechanisms alone, never on the data, so cutting at
    it is post-processing of the noisy counts and costs no ε.
    """
    return [max(k, m.count.threshold(empty_cell_rate)) if m.count else k for m in measured]


def release_cells(*, keys: Sequence[Key], truth: dict[Key, tuple[int, float]],
                  levels: Sequence[Level], measured: Sequence[Measured], k: int,
                  measure: str, bounds: tuple[float, float] | None,
                  empty_cell_rate: float,
                  measurement: dict[Key, int] | None = None,
                  jointly: int | None = None) -> list[Cell]:
    """Release every key: noisy cells ≥ τ, rolled-up children with their parent, or suppressed.

    The top's value is an estimate of the stratum's total from measurements only (never from
    which parts were selected); released parts are then scaled down, where they exceed it, to
    fit under it, so parts + remainder = total in the stored cells. ``measurement``, when
    given, receives the finest level's noisy count of every key (DP output: what coarser
    views are later derived from by post-processing, ``privacy._derive``).

    ``jointly``: a key position (the category of a randomised answer) whose values are
    released together: at each level, the units that differ only there are shown, rolled up
    or suppressed as one (all reach τ, or all move up), so every released group holds every
    category over the same members and can be debiased (``privacy._local.debias_cells``).
    Its parts are then not scaled under their totals: scaling each category on its own would
    bend the group's vector before debiasing.
    """
    if len(levels) != len(measured):
        raise VeilBug("one set of mechanisms per hierarchy level is required")
    cuts = thresholds(measured, k=k, empty_cell_rate=empty_cell_rate)
    cells: list[Cell] = []
    destination: dict[Key, str] = {}
    # Units at the current level: key → (true count, true sum, leaf keys merged into it).
    units: dict[Key, tuple[int, float, tuple[Key, ...]]] = {
        key: (*truth.get(key, (0, 0.0)), (key,)) for key in keys}
    # Full totals of each top-level area per month and other dimensions, and its code.
    top, top_code = strata(keys, levels, lambda key: truth.get(key, (0, 0.0)))
    # Per stratum: the sum of *every* finest-level noisy count and how many there are. The key
    # set is public and measured in full, so this sum is an unbiased estimate of the total too.
    finest: dict[Key, tuple[int, int]] = {}
    for index, (level, mechanisms) in enumerate(zip(levels, measured)):
        is_top = level.parent is None
        if is_top and index:
            # The top measures the whole area, not just the leftovers it received, and does so
            # for every stratum (its ε is spent either way): the total is always estimated.
            units = top_units(units, top, top_code)
        ordered = list(units)
        counts = [units[u][0] for u in ordered]
        noisy_counts = mechanisms.count(counts) if mechanisms.count else counts
        sums = [units[u][1] for u in ordered]
        noisy_sums = (mechanisms.total(sums) if mechanisms.total
                      else sums) if measure != "count" else sums
        if index == 0:
            if measurement is not None:
                measurement.update(zip(ordered, noisy_counts))
            for unit, noisy_n in zip(ordered, noisy_counts):
                total, many = finest.get(_stratum(unit), (0, 0))
                finest[_stratum(unit)] = (total + noisy_n, many + 1)
        carried: dict[Key, tuple[int, float, tuple[Key, ...]]] = {}
        shown = [noisy_n >= cuts[index] for noisy_n in noisy_counts]
        if jointly is not None:
            shown = _jointly(ordered, shown, jointly)
        for unit, noisy_n, noisy_s, passed in zip(ordered, noisy_counts, noisy_sums, shown):
            n, s, leaves = units[unit]
            if passed:
                members = tuple(leaf[1] for leaf in leaves)
                if index == 0:
                    cells.append(_cell(unit, noisy_n, noisy_s, mechanisms, measure, bounds,
                                       cuts[index],
                                       status="noisy" if mechanisms.count else "exact",
                                       members=()))
                elif is_top and measure == "count":
                    sum_n, many = finest[_stratum(unit)]
                    cells.append(_total_cell(unit, noisy_n, sum_n, many, measured[0].count,
                                             mechanisms.count, members=members))
                else:
                    cells.append(_cell(unit, noisy_n, noisy_s, mechanisms, measure, bounds,
                                       cuts[index], status="total" if is_top else "rollup",
                                       members=members))
                if index:
                    for leaf in leaves:
                        destination[leaf] = unit[1]
                continue
            carry_up(unit, level, (n, s), leaves, carried=carried, destination=destination)
        units = carried
    return finish_cells(cells, keys=keys, destination=destination,
                        fit=measure == "count" and jointly is None,
                        noise_scale=measured[0].count.scale if measured[0].count else None)


def _jointly(units: Sequence[Key], shown: Sequence[bool], at: int) -> list[bool]:
    """Units that differ only at key position ``at`` are shown together: all or none."""
    failed = {unit[:at] + unit[at + 1:] for unit, ok in zip(units, shown) if not ok}
    return [ok and unit[:at] + unit[at + 1:] not in failed for unit, ok in zip(units, shown)]


def carry_up(unit: Key, level: Level, amounts: tuple, leaves: tuple[Key, ...], *,
             carried: dict[Key, tuple], destination: dict[Key, str]) -> None:
    """A unit under its level's threshold: merged with its unresolved siblings into its parent
    (``amounts`` added to the parent's, element-wise), or at the top, its leaves suppressed."""
    if level.parent is None:
        for leaf in leaves:
            destination[leaf] = ""
        return
    parent = (unit[0], level.parent(unit[1]), *unit[2:])
    before = carried.get(parent)
    carried[parent] = ((*amounts, leaves) if before is None else
                       (*(a + b for a, b in zip(before, amounts)), before[-1] + leaves))


def top_units(units: dict[Key, tuple], top: dict[Key, tuple],
              top_code: dict[Key, str]) -> dict[Key, tuple]:
    """The top level's units: every stratum's full totals (``strata``), each with the leaves
    left over below it (what no finer level released)."""
    leftovers = {_stratum(unit): leaves for unit, (_, _, leaves) in units.items()}
    return {(stratum[0], top_code[stratum], *stratum[2:]): (*totals, leftovers.get(stratum, ()))
            for stratum, totals in top.items()}


def finish_cells(cells: list[Cell], *, keys: Sequence[Key], destination: dict[Key, str],
                 fit: bool, noise_scale: float | None) -> list[Cell]:
    """The released cells in their stored form: parts fitted under their totals (``fit``),
    a valueless cell for every key released only in a coarser area (``destination``: its
    code) or suppressed (``""``), finest keys first in key-set order, rollups and totals last."""
    if fit:
        cells = _fit_parts_to_totals(cells)
    for key in keys:
        where = destination.get(key)
        if where is None:
            continue  # released at the finest level above
        status = f"rolled_up:{where}" if where else "suppressed"
        cells.append(Cell(key=key, value=None, lower=None, upper=None, noise_scale=noise_scale,
                          status=status))
    order = {key: i for i, key in enumerate(keys)}
    cells.sort(key=lambda c: (c.status in ("rollup", "total"), order.get(c.key, len(order)),
                              c.key))
    return cells


def strata(keys: Sequence[Key], levels: Sequence[Level],
           value: Callable[[Key], tuple]) -> tuple[dict[Key, tuple], dict[Key, str]]:
    """Per stratum (a month and other dimensions, no area): the element-wise sum of
    ``value(key)`` over its keys, and the code of its top-level area."""
    totals: dict[Key, tuple] = {}
    codes: dict[Key, str] = {}
    for key in keys:
        stratum = _stratum(key)
        here = value(key)
        before = totals.get(stratum)
        totals[stratum] = here if before is None else tuple(a + b for a, b in zip(before, here))
        if stratum not in codes:
            code = key[1]
            for level in levels[:-1]:
                code = level.parent(code)
            codes[stratum] = code
    return totals, codes


def _stratum(key: Key) -> Key:
    """The top-level unit a key belongs to: its month and other dimensions, no area."""
    return (key[0], "", *key[2:])


def _total_cell(key: Key, noisy_top: int, sum_finest: int, many: int,
                fine: CountMechanism | None, top: CountMechanism | None, *,
                members: tuple[str, ...]) -> Cell:
    """The stratum's total: the inverse-variance mean of its two unbiased measurements.

    One is the top's own noisy count, the other the sum of all ``many`` finest-level noisy
    counts (the whole zero-filled key set, released or not: post-processing). Neither depends
    on which parts passed a threshold, so the estimate is unbiased. The interval is exact for
    this estimator (its distribution is computed from the mechanisms), not a normal guess.
    """
    if top is None or fine is None:  # no noise: the measured total is exact
        return Cell(key=key, value=float(noisy_top), lower=float(noisy_top),
                    upper=float(noisy_top), noise_scale=None, status="total",
                    members=members, n=float(noisy_top), sd=0.0)
    weight = _top_weight(top, fine, many)
    value = weight * noisy_top + (1 - weight) * sum_finest
    half = total_half_width(top, fine, many, weight, top.confidence)
    sd = math.sqrt(weight ** 2 * top.variance + (1 - weight) ** 2 * many * fine.variance)
    return Cell(key=key, value=value, lower=max(value - half, 0.0), upper=value + half,
                noise_scale=top.scale, status="total", members=members, n=value, sd=sd)


def _top_weight(top: CountMechanism, fine: CountMechanism, many: int) -> float:
    sum_variance = many * fine.variance
    return sum_variance / (top.variance + sum_variance)


def _fit_parts_to_totals(cells: list[Cell]) -> list[Cell]:
    """Scale a stratum's released parts down where they add up to more than its total.

    Post-processing: parts stay non-negative, sum to at most the total, and the total is never
    moved. A part's interval keeps its honest bounds and only widens to reach its new value.
    """
    totals = {_stratum(c.key): c.value for c in cells if c.status == "total"}
    parts: dict[Key, float] = defaultdict(float)
    for cell in cells:
        if cell.status != "total" and cell.value is not None and _stratum(cell.key) in totals:
            parts[_stratum(cell.key)] += cell.value
    factors = {stratum: max(totals[stratum], 0.0) / known
               for stratum, known in parts.items() if known > max(totals[stratum], 0.0)}
    if not factors:
        return cells
    out = []
    for cell in cells:
        factor = factors.get(_stratum(cell.key))
        if factor is None or cell.status == "total" or cell.value is None:
            out.append(cell)
            continue
        value = cell.value * factor
        out.append(dataclasses.replace(cell, value=value, n=value,
                                       lower=min(cell.lower, value)))
    return out


def _cell(key: Key, noisy_n: int, noisy_s: float, mechanisms: Measured, measure: str,
          bounds: tuple[float, float] | None, threshold: int, *, status: str,
          members) -> Cell:
    """A released cell and its interval, which covers the truth among the cells shown (the
    count reached ``threshold``): see ``privacy._intervals``."""
    count = mechanisms.count
    if measure == "count":
        lower, upper = (shown_count_interval(count, noisy_n, threshold) if count
                        else (float(noisy_n), float(noisy_n)))
        return Cell(key=key, value=float(noisy_n), lower=lower, upper=upper,
                    noise_scale=count.scale if count else None,
                    status=status, members=tuple(members), n=float(noisy_n),
                    sd=math.sqrt(count.variance) if count else 0.0)
    total = mechanisms.total
    if measure == "sum":
        # continuous Laplace, independent of the count noise that decides what is shown
        half = total.half_width if total else 0.0
        return Cell(key=key, value=float(noisy_s), lower=float(noisy_s - half),
                    upper=float(noisy_s + half), noise_scale=total.scale if total else None,
                    status=status, members=tuple(members), n=float(noisy_n),
                    sd=math.sqrt(total.variance) if total else 0.0)
    if measure != "mean" or bounds is None:
        raise VeilBug(f"unknown measure {measure!r} or missing bounds")
    lo, hi = bounds
    mean = min(max(noisy_s / noisy_n, lo), hi)  # post-processing: a mean lies within bounds
    if count is None or total is None:
        return Cell(key=key, value=mean, lower=mean, upper=mean, noise_scale=None,
                    status=status, members=tuple(members), n=float(noisy_n), sd=0.0)
    # the delta method's sd, for weighting (the interval below is exact)
    sd = math.sqrt(total.variance + mean * mean * count.variance) / noisy_n
    lower, upper = mean_interval(noisy_s, noisy_n, count, total, bounds, count.confidence,
                                 threshold)
    return Cell(key=key, value=mean, lower=min(lower, mean), upper=max(upper, mean),
                noise_scale=total.scale, status=status, members=tuple(members),
                n=float(noisy_n), sd=sd)
