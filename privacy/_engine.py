"""The release engine: noise, k-threshold and roll-up over the public key set. Pure computation.

Owns turning true aggregates (from the cube, already tenant-scoped) into released cells. It never
reads the store and never decides who may ask; the gate does both.

Roll-up ("coarsen, don't suppress"): every key of the public key set at the finest geography is
measured once (zero-filled: a declared area with no data gets noise, not absence). A cell whose
*noisy* count is under k is merged with its unresolved siblings into its parent area; the parent
is recomputed from that union and measured once more; and so on up to the top (the whole
tenant), which measures its full total, so every leftover small cell is counted in it
(status "total"). Only a whole tenant-month under k is suppressed: coverage is 100% otherwise. Each hierarchy level is one measurement of a vector whose L1
sensitivity is the product's per-person-per-day bound, because a person-day's events fall into
disjoint cells at every level. The level's ε is split across the possible levels *before* looking
at the data (``split_epsilon``), so what a query costs never depends on the data.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import NormalDist
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from data.errors import VeilBug

from privacy._mechanisms import CountMechanism, SumMechanism
from privacy._values import Cell

__all__ = ["Level", "Measured", "release_cells", "split_epsilon"]

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


def release_cells(*, keys: Sequence[Key], truth: dict[Key, tuple[int, float]],
                  levels: Sequence[Level], measured: Sequence[Measured], k: int,
                  measure: str, bounds: tuple[float, float] | None) -> list[Cell]:
    """Release every key: noisy cells ≥ k, rolled-up children with their parent, or suppressed."""
    if len(levels) != len(measured):
        raise VeilBug("one set of mechanisms per hierarchy level is required")
    cells: list[Cell] = []
    destination: dict[Key, str] = {}
    # Units at the current level: key → (true count, true sum, leaf keys merged into it).
    units: dict[Key, tuple[int, float, tuple[Key, ...]]] = {
        key: (*truth.get(key, (0, 0.0)), (key,)) for key in keys}
    # Full totals of each top-level area per month and other dimensions.
    top: dict[Key, tuple[int, float]] = {}
    for key in keys:
        n, s = truth.get(key, (0, 0.0))
        stratum = (key[0], "", *key[2:])
        tn, ts = top.get(stratum, (0, 0.0))
        top[stratum] = (tn + n, ts + s)
    for index, (level, mechanisms) in enumerate(zip(levels, measured)):
        is_top = level.parent is None
        if is_top and index:
            # The top measures the whole area, not just the leftovers it received.
            units = {unit: (*top[(unit[0], "", *unit[2:])], leaves)
                     for unit, (_, _, leaves) in units.items()}
        ordered = list(units)
        counts = [units[u][0] for u in ordered]
        noisy_counts = mechanisms.count(counts) if mechanisms.count else counts
        sums = [units[u][1] for u in ordered]
        noisy_sums = (mechanisms.total(sums) if mechanisms.total
                      else sums) if measure != "count" else sums
        carried: dict[Key, tuple[int, float, tuple[Key, ...]]] = {}
        for unit, noisy_n, noisy_s in zip(ordered, noisy_counts, noisy_sums):
            n, s, leaves = units[unit]
            if noisy_n >= k:
                if index == 0:
                    cells.append(_cell(unit, noisy_n, noisy_s, mechanisms, measure, bounds,
                                       status="noisy" if mechanisms.count else "exact",
                                       members=()))
                else:
                    cells.append(_cell(unit, noisy_n, noisy_s, mechanisms, measure, bounds,
                                       status="total" if is_top else "rollup",
                                       members=tuple(leaf[1] for leaf in leaves)))
                    for leaf in leaves:
                        destination[leaf] = unit[1]
                continue
            if level.parent is None:
                for leaf in leaves:
                    destination[leaf] = ""
                continue
            parent = (unit[0], level.parent(unit[1]), *unit[2:])
            pn, ps, pleaves = carried.get(parent, (0, 0.0, ()))
            carried[parent] = (pn + n, ps + s, pleaves + leaves)
        units = carried
        if not units:
            break
    scale = measured[0].count.scale if measured[0].count else None
    for key in keys:
        where = destination.get(key)
        if where is None:
            continue  # released at the finest level above
        status = f"rolled_up:{where}" if where else "suppressed"
        cells.append(Cell(key=key, value=None, lower=None, upper=None, noise_scale=scale,
                          status=status))
    order = {key: i for i, key in enumerate(keys)}
    cells.sort(key=lambda c: (c.status in ("rollup", "total"), order.get(c.key, len(order)),
                              c.key))
    return cells


def _cell(key: Key, noisy_n: int, noisy_s: float, mechanisms: Measured, measure: str,
          bounds: tuple[float, float] | None, *, status: str, members) -> Cell:
    count = mechanisms.count
    if measure == "count":
        half = count.half_width if count else 0.0
        return Cell(key=key, value=float(noisy_n), lower=float(max(noisy_n - half, 0.0)),
                    upper=float(noisy_n + half), noise_scale=count.scale if count else None,
                    status=status, members=tuple(members), n=float(noisy_n))
    total = mechanisms.total
    if measure == "sum":
        half = total.half_width if total else 0.0
        return Cell(key=key, value=float(noisy_s), lower=float(noisy_s - half),
                    upper=float(noisy_s + half), noise_scale=total.scale if total else None,
                    status=status, members=tuple(members), n=float(noisy_n))
    if measure != "mean" or bounds is None:
        raise VeilBug(f"unknown measure {measure!r} or missing bounds")
    lo, hi = bounds
    mean = min(max(noisy_s / noisy_n, lo), hi)  # post-processing: a mean lies within bounds
    if count is None or total is None:
        return Cell(key=key, value=mean, lower=mean, upper=mean, noise_scale=None,
                    status=status, members=tuple(members), n=float(noisy_n))
    # Delta-method interval of a ratio of two independent noisy totals (normal approximation).
    variance = (total.variance + mean * mean * count.variance) / (noisy_n * noisy_n)
    z = _z(count.confidence)
    half = z * math.sqrt(variance)
    return Cell(key=key, value=mean, lower=max(mean - half, lo), upper=min(mean + half, hi),
                noise_scale=total.scale, status=status, members=tuple(members),
                n=float(noisy_n))


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf((1 + confidence) / 2)


def children_by_parent(cells: Sequence[Cell]) -> dict[str, list[Cell]]:
    """Group rolled-up children under the parent that carries their value."""
    out: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        if cell.status.startswith("rolled_up:"):
            out[cell.status.split(":", 1)[1]].append(cell)
    return out
