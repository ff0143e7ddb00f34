"""Deriving a view from measurements already stored: post-processing, so it costs nothing.

Every fresh count release stores, per period, the finest level's noisy count of each key of its
public key set (released or not: ``release_periods.measurement``). That vector is differential-
privacy output, so anything computed from it alone is free. A coarser view — a state or the
tenant from districts, a district from H3 cells, fewer breakdowns, a window from its months, a
filter on a dimension the source carries — is a sum of those noisy counts, and its noise is the
sum of ``many`` independent noises of the source's mechanism (``SummedNoise``: exact mass by FFT
convolution). The view is then put through the same rules as a fresh release (``derive_cells``):
an area is shown only when its derived count reaches τ = max(k, t_α) for *its* noise, smaller
areas roll up to their parent, the top counts every leftover, parts are fitted under their
total, and intervals are exact and conditional on being shown (``privacy._intervals``).

``source_keys`` says which stored source can answer a requested period and how its keys map
onto the requested ones; the gate chooses among sources and keeps a derivation only when every
count it shows meets the policy's accuracy rule (``catalog.PlannerPolicy``). Only count
measures are derived: sums and means are released afresh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from data.errors import VeilBug

from privacy._engine import Key, Level, carry_up, finish_cells, strata, top_units
from privacy._intervals import shown_count_interval, sum_mass
from privacy._mechanisms import CountMechanism
from privacy._values import Cell

__all__ = ["SummedNoise", "accurate_enough", "derive_cells", "mechanism_of", "mechanism_record",
           "noise_of"]


@dataclass(frozen=True)
class SummedNoise:
    """The noise of a sum of ``many`` independent draws of ``base``: exact, never sampled.

    Offers what thresholds and intervals read of a mechanism (mass, tail, threshold, interval
    width and the level it achieves), so the same exact constructions apply to derived counts.
    """

    base: CountMechanism
    many: int

    @property
    def confidence(self) -> float:
        return self.base.confidence

    @property
    def variance(self) -> float:
        return self.many * self.base.variance

    @property
    def scale(self) -> float:
        return math.sqrt(self.many) * self.base.scale

    @property
    def half_width(self) -> float:
        """The smallest integer h with P(|noise| ≤ h) ≥ confidence."""
        return float(_half_width(self))

    @property
    def coverage(self) -> float:
        return 1.0 - 2.0 * self.tail(int(self.half_width) + 1)

    def tail(self, t: int) -> float:
        """P(noise ≥ t)."""
        low, _mass, survival = _summed(self.base, self.many)
        index = t - low
        if index <= 0:
            return 1.0
        return float(survival[index]) if index < len(survival) else 0.0

    def threshold(self, rate: float) -> int:
        """The smallest integer t ≥ 1 with P(noise ≥ t) ≤ ``rate`` (data-independent)."""
        if not 0 < rate < 0.5:
            raise ValueError(f"rate must be in (0, 0.5), got {rate}")
        t = max(1, int(math.sqrt(self.variance)))
        while t > 1 and self.tail(t - 1) <= rate:
            t -= 1
        while self.tail(t) > rate:
            t += 1
        return t

    def pmf(self) -> tuple[int, list[float]]:
        low, mass, _survival = _summed(self.base, self.many)
        return low, list(mass)


def noise_of(base: CountMechanism, many: int) -> CountMechanism | SummedNoise:
    """The noise law of a sum of ``many`` of ``base``'s noisy counts (``base`` itself for one)."""
    if many < 1:
        raise VeilBug(f"a derived count sums at least one measured count, got {many}")
    return base if many == 1 else SummedNoise(base, many)


@cache
def _summed(base: CountMechanism, many: int) -> tuple[int, tuple[float, ...], np.ndarray]:
    """(lowest value, masses, survival) of the sum of ``many`` draws, tails below 1e-15 cut."""
    span, summed = sum_mass(base, many)
    summed[summed < 1e-15] = 0.0
    summed /= summed.sum()
    survival = np.concatenate([np.cumsum(summed[::-1])[::-1], [0.0]])  # P(S ≥ -span + i)
    return -span, tuple(summed.tolist()), survival


@cache
def _half_width(noise: SummedNoise) -> int:
    h = int(1.96 * math.sqrt(noise.variance))
    while h > 0 and 1.0 - 2.0 * noise.tail(h) >= noise.confidence:
        h -= 1
    while 1.0 - 2.0 * noise.tail(h + 1) < noise.confidence:
        h += 1
    return h


def mechanism_record(mechanism: CountMechanism) -> dict:
    """What a stored measurement keeps of its mechanism (to rebuild its noise law)."""
    return {"name": mechanism.name, "scale": mechanism.scale,
            "sensitivity": mechanism.sensitivity, "epsilon": mechanism.epsilon,
            "half_width": mechanism.half_width, "confidence": mechanism.confidence,
            "kind": mechanism.kind, "delta": mechanism.delta}


def mechanism_of(record: dict) -> CountMechanism:
    return CountMechanism(**record)


def derive_cells(*, keys: Sequence[Key], derived: dict[Key, tuple[int, int]],
                 levels: Sequence[Level], base: CountMechanism, k: int,
                 empty_cell_rate: float) -> list[Cell]:
    """The cells of a view whose finest keys' noisy counts are sums of stored measurements.

    ``derived`` maps each key of the public key set to (noisy count, how many measured counts
    were summed into it). The rules are the fresh engine's (``release_cells``) with each area's
    "measurement" the sum of its leaves: an area is shown when its count reaches the threshold
    of its own noise, smaller areas merge with their unresolved siblings into the parent, the
    top (the whole stratum: every leaf) is always estimated, and parts are fitted under it.
    """
    cells: list[Cell] = []
    destination: dict[Key, str] = {}
    units: dict[Key, tuple[int, int, tuple[Key, ...]]] = {
        key: (*derived[key], (key,)) for key in keys}
    top, top_code = strata(keys, levels, derived.__getitem__)
    for index, level in enumerate(levels):
        is_top = level.parent is None
        if is_top and index:
            units = top_units(units, top, top_code)
        carried: dict[Key, tuple[int, int, tuple[Key, ...]]] = {}
        for unit, (noisy, many, leaves) in units.items():
            noise = noise_of(base, many)
            cut = max(k, noise.threshold(empty_cell_rate))
            if noisy >= cut:
                lower, upper = shown_count_interval(noise, noisy, cut)
                status = "noisy" if index == 0 else ("total" if is_top else "rollup")
                cells.append(Cell(key=unit, value=float(noisy), lower=lower, upper=upper,
                                  noise_scale=noise.scale, status=status,
                                  members=() if index == 0 else
                                  tuple(leaf[1] for leaf in leaves),
                                  n=float(noisy), sd=math.sqrt(noise.variance)))
                if index:
                    for leaf in leaves:
                        destination[leaf] = unit[1]
                continue
            carry_up(unit, level, (noisy, many), leaves, carried=carried,
                     destination=destination)
        units = carried
    return finish_cells(cells, keys=keys, destination=destination, fit=True,
                        noise_scale=base.scale)


def accurate_enough(cells: Sequence[Cell], *, fresh_half_width: float, max_ratio: float,
                    max_relative: float, min_share: float = 1.0, hidden: int = 0) -> bool:
    """Whether a derived view is about as accurate as a fresh one: at least ``min_share`` of
    the counts it shows have a half-width at most ``max_ratio`` × ``fresh_half_width`` or at
    most ``max_relative`` of their value (the rest are shown with their own, wider, honest
    intervals). ``hidden`` counts the areas it does not show although their derived count
    reached a fresh release's threshold (a fresh release would likely have shown them): they
    count against it. A view that shows nothing is not accepted (a fresh release might show
    something)."""
    shown = [c for c in cells if c.value is not None]
    if not shown:
        return False
    good = sum(1 for cell in shown
               if (cell.upper - cell.lower) / 2 <= max(max_ratio * fresh_half_width,
                                                       max_relative * cell.value) + 1e-9)
    return good >= min_share * (len(shown) + hidden) - 1e-9
