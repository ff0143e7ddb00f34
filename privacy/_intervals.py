"""Intervals that cover what they claim for the cells that are shown. Pure computation.

Owns every interval a release states. Each is exact for its mechanisms (computed from the
noise's probability mass, never a normal guess), so its coverage is known, not hoped for:

- **A count shown because its noisy value reached its threshold τ** (a leaf, a rolled-up
  parent, a month without geography) gets an interval *conditional on being shown*. Showing a
  cell only when ``n + noise ≥ τ`` selects upward noise, so the plain ``noisy ± h`` misses small
  true counts far more often than it claims. For every true count n the acceptance region of
  the noisy count given ``noisy ≥ τ`` is cut equal-tailed; the interval of an observed value is
  every n whose region holds it (a Neyman construction on the truncated distribution). Far from
  τ it is exactly ``noisy ± h``; near τ it reaches lower, down to 0.
- **Discrete noise cannot hit 95% exactly**: h is the smallest integer with P(|noise| ≤ h) ≥
  95%, and ``CountMechanism.coverage`` is the level it achieves. The conditional intervals are
  cut at that same level, so every shown count's interval covers at least ``coverage`` for
  every true count, exactly ``coverage`` far from τ; releases state that level.
- **A mean** ``noisy sum / noisy count`` gets the exact Fieller-type interval: for the true mean
  μ, ``noisy sum − μ · noisy count = sum noise − μ · count noise`` whatever the data, a known
  distribution (continuous Laplace minus μ times discrete Laplace). The interval is every μ in
  the metric's bounds whose acceptance region holds the observation; it covers at the asked
  level (continuous noise: exactly), where the delta method under-covers small counts.
- **A total** (the inverse-variance combination of the top's noisy count and the sum of every
  finest-level noisy count) gets the exact quantile of its noise, by FFT convolution.
- Sums are Laplace (continuous): ``noisy ± b·ln(1/α)`` is exact, and independent of the count
  noise that decides whether the cell is shown.

Everything here depends on the mechanisms, τ and the policy's level only, never on the data,
so it is post-processing and costs nothing; tables are cached per mechanism.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from data.errors import VeilBug

from privacy._mechanisms import CountMechanism, SumMechanism

__all__ = ["mean_interval", "shown_count_interval", "total_half_width"]

#: relative slack on float comparisons of tail masses (they are sums of the same masses)
_SLACK = 1e-9


def shown_count_interval(mechanism: CountMechanism, noisy: int,
                         threshold: int) -> tuple[float, float]:
    """The interval of a true count n ≥ 0 given its noisy count ``noisy`` was shown because it
    reached ``threshold``; it covers n at least ``mechanism.coverage`` of the time, for every n,
    among the cells that are shown."""
    if noisy < threshold:
        raise VeilBug(f"a count of {noisy} under its threshold {threshold} is not shown")
    h, first, a, b = _acceptance(mechanism, threshold, int(mechanism.half_width))
    if noisy - h >= first:  # every plausible n is beyond the truncation's reach
        return float(noisy - h), float(noisy + h)
    lower = int(np.searchsorted(b, noisy, side="left"))
    upper = int(np.searchsorted(a, noisy, side="right")) - 1
    return float(lower), float(upper)


@cache
def _acceptance(mechanism: CountMechanism, threshold: int, h: int):
    """Acceptance regions [a(n), b(n)] of the shown noisy count, for n = 0 … N.

    a(n) is the largest v ≥ τ with P(τ ≤ Y < v | Y ≥ τ) ≤ t, b(n) the smallest v with
    P(Y > v | Y ≥ τ) ≤ 2t − P(τ ≤ Y < a(n) | Y ≥ τ), for Y = n + noise and t = P(noise > h),
    the one-sided tail of the unconditional interval ``noisy ± h``: each region holds at least 1 − 2t (the
    achieved level), and far from τ, [a, b] = [n − h, n + h]. ``first`` is where the
    truncation stops mattering: for n ≥ first − 1, P(n + noise < τ) is below the mass cut-off,
    so an observation ≥ first + h has the unconditional interval.
    """
    low, mass = mechanism.pmf()
    mass = np.asarray(mass)
    # surv[i] = P(noise ≥ low + i); 1 before the support, 0 after it
    surv = np.concatenate([np.cumsum(mass[::-1])[::-1], [0.0]])

    def survival(t: np.ndarray) -> np.ndarray:
        index = np.clip(t - low, 0, len(surv) - 1)
        return np.where(t < low, 1.0, surv[index])

    tail = float(survival(np.array([h + 1]))[0])
    first = threshold - low + 1
    n = np.arange(0, first + 2 * h + 3)
    shown = survival(threshold - n)
    descending = -surv
    # largest t with S(t) ≥ (1 − tail)·shown: a(n) = max(n + t, τ)
    at_least = np.searchsorted(descending, -(1 - tail) * shown * (1 - _SLACK), side="right")
    a = np.maximum(n + low + at_least - 1, threshold)
    # what the lower cut used of its share; the upper cut may take the rest, so that near τ,
    # where nothing can be cut below (Y ≥ τ already), the interval is not needlessly wide
    spent = np.clip((shown - survival(a - n)) / np.maximum(shown, 1e-300), 0.0, tail)
    # smallest t with S(t) ≤ (2·tail − spent)·shown is t_min; b(n) = max(n + t_min − 1, τ)
    above = np.searchsorted(descending, -(2 * tail - spent) * shown * (1 + _SLACK),
                            side="left")
    b = np.maximum(n + low + above - 1, threshold)
    # the families are stochastically increasing in n (log-concave noise); float-proof it
    return h, first, np.maximum.accumulate(a), np.maximum.accumulate(b)


def shown_count_coverage(mechanism: CountMechanism, threshold: int, true: int) -> float:
    """Exact P(n ∈ interval | shown) for a true count ``true``: the check of the construction."""
    low, mass = mechanism.pmf()
    shown = hits = 0.0
    for x, p in zip(range(low, low + len(mass)), mass):
        y = true + x
        if y < threshold:
            continue
        shown += p
        lower, upper = shown_count_interval(mechanism, y, threshold)
        hits += p if lower <= true <= upper else 0.0
    return hits / shown if shown else 1.0


def sum_mass(mechanism, many: int) -> tuple[int, np.ndarray]:
    """(span, masses of the values -span … span) of the sum of ``many`` independent draws of
    ``mechanism``'s noise, by FFT convolution (beyond 40 standard deviations: cut)."""
    low, mass = mechanism.pmf()
    reach = -low
    sd = math.sqrt(many * mechanism.variance)
    span = min(many * reach, reach + int(40 * sd) + 1)
    size = 1 << (2 * span + 1).bit_length()
    padded = np.zeros(size)
    for x, p in zip(range(low, reach + 1), mass):
        padded[x % size] += p
    summed = np.clip(np.fft.irfft(np.fft.rfft(padded) ** many, n=size), 0.0, None)
    return span, np.concatenate([summed[size - span:], summed[:span + 1]])


@cache
def total_half_width(top: CountMechanism, fine: CountMechanism, many: int,
                     weight: float, confidence: float) -> float:
    """Smallest h with P(|w·X + (1 − w)·S| ≤ h) ≥ confidence, X the top's noise and S the sum
    of ``many`` independent finest-level noises (its mass by FFT convolution)."""
    span, summed = sum_mass(fine, many)
    cdf = np.concatenate([[0.0], np.cumsum(summed)])  # cdf[i] = P(S < i - span)
    top_low, top_mass = top.pmf()
    xs = np.arange(top_low, top_low + len(top_mass), dtype=float)
    px = np.asarray(top_mass)

    def coverage(h: float) -> float:
        # P(-h ≤ w·x + (1-w)·S ≤ h) for each top value x, then averaged over x
        upper = np.floor((h - weight * xs) / (1 - weight) + 1e-9)
        lower = np.ceil((-h - weight * xs) / (1 - weight) - 1e-9)
        hi = np.clip(upper + span + 1, 0, 2 * span + 1).astype(int)
        lo = np.clip(lower + span, 0, 2 * span + 1).astype(int)
        return float(np.sum(px * np.clip(cdf[hi] - cdf[lo], 0.0, None)))

    below, above = 0.0, weight * -top_low + (1 - weight) * span
    for _ in range(60):
        middle = (below + above) / 2
        if coverage(middle) >= confidence:
            above = middle
        else:
            below = middle
    return above


#: γ: the share of the mean interval's error spent on not knowing the true count n
_NUISANCE = 0.001
#: grid points over the bounds for the mean's acceptance regions, and scan points for the set
_MEAN_GRID = 128
_MEAN_SCAN = 4096


def mean_interval(noisy_sum: float, noisy_count: int, count: CountMechanism,
                  total: SumMechanism, bounds: tuple[float, float], confidence: float,
                  threshold: int) -> tuple[float, float]:
    """The interval of a mean ``noisy_sum / noisy_count`` shown because the noisy count reached
    ``threshold``: every μ in ``bounds`` whose acceptance region holds the observation.

    For the true mean μ and count n, ``T = noisy_sum − μ·noisy_count`` is ``L − μ·X``, L the
    sum's Laplace noise and X the count noise given ``n + X ≥ τ`` (Fieller's pivot, with the
    real noises and the display rule). Its law depends on n only near τ, so n is bounded by its
    own shown-count interval at 1 − γ and μ is kept when T falls in the union, over those n, of
    T's central regions at ``confidence + γ`` (Berger–Boos): coverage ≥ ``confidence`` for every
    (n, μ); far from τ the union is one region and this is exactly Fieller's interval.
    Regions are tabulated on a grid over the bounds and read linearly between grid points;
    the set's ends are widened by one scan step.
    """
    lo, hi = bounds
    if not hi > lo:
        return float(lo), float(hi)
    if noisy_count < threshold:
        raise VeilBug(f"a count of {noisy_count} under its threshold {threshold} is not shown")
    fewest, most = _count_range(count, noisy_count, threshold, _NUISANCE / 2)
    level = min(confidence + _NUISANCE, 1 - 1e-9)
    low_fewest, high_fewest = _pivot_regions(count, total, threshold, fewest, bounds, level)
    low_most, high_most = _pivot_regions(count, total, threshold, most, bounds, level)
    grid = np.linspace(lo, hi, _MEAN_GRID + 1)
    # T's law shifts up with n where μ > 0 (X given n + X ≥ τ shrinks as n grows), down where
    # μ < 0: the union over [fewest, most] is bounded by the two ends
    low = np.where(grid >= 0, low_fewest, low_most)
    high = np.where(grid >= 0, high_most, high_fewest)
    mus = np.linspace(lo, hi, _MEAN_SCAN + 1)
    step = (hi - lo) / _MEAN_SCAN
    # the quantiles are smooth in μ: linear between grid points (error ~ spacing² · curvature)
    low_at, high_at = np.interp(mus, grid, low), np.interp(mus, grid, high)
    pivot = noisy_sum - mus * noisy_count
    inside = (low_at <= pivot) & (pivot <= high_at)
    if not inside.any():  # the observation fits no mean in bounds: the nearest one
        gap = np.maximum(low_at - pivot, pivot - high_at)
        nearest = float(mus[np.argmin(gap)])
        return nearest, nearest
    kept = mus[inside]
    return max(float(kept[0]) - step, lo), min(float(kept[-1]) + step, hi)


def _count_range(count: CountMechanism, noisy: int, threshold: int,
                 tail: float) -> tuple[int, int]:
    """The true counts n ≥ 1 the shown noisy count ``noisy`` allows at 1 − 2·``tail``."""
    h, first, a, b = _acceptance(count, threshold, _width(count, tail))
    if noisy - h >= first:
        return max(noisy - h, 1), noisy + h
    return (max(int(np.searchsorted(b, noisy, side="left")), 1),
            max(int(np.searchsorted(a, noisy, side="right")) - 1, 1))


@cache
def _width(count: CountMechanism, tail: float) -> int:
    """The smallest integer h with P(noise > h) ≤ tail."""
    h = int(count.half_width)
    while h > 0 and count.tail(h) <= tail:
        h -= 1
    while count.tail(h + 1) > tail:
        h += 1
    return h


@cache
def _pivot_regions(count: CountMechanism, total: SumMechanism, threshold: int, n: int,
                   bounds: tuple[float, float], level: float) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` region [low(μ), high(μ)] of ``L − μ·X`` on the grid over
    ``bounds``, for X the count noise given ``n + X ≥ τ`` (unconditional once τ − n is below
    the noise's support: every n beyond shares one table)."""
    low_x, mass = count.pmf()
    n = min(n, threshold - low_x)
    xs = np.arange(low_x, low_x + len(mass), dtype=float)
    px = np.where(n + xs >= threshold, np.asarray(mass), 0.0)
    px = px / px.sum()
    keep = px > 1e-15
    xs, px = xs[keep], px[keep]
    b = total.scale
    lo, hi = bounds
    mus = np.linspace(lo, hi, _MEAN_GRID + 1)[:, None]
    shifts = mus * xs[None, :]  # T ≤ t  ⇔  L ≤ t + μ·x

    def cdf(t: np.ndarray) -> np.ndarray:
        z = t[:, None] + shifts
        return np.sum(px * np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0) / b),
                                    1 - 0.5 * np.exp(-np.maximum(z, 0) / b)), axis=1)

    tail = (1 - level) / 2
    reach = b * math.log(1 / tail) + np.abs(mus[:, 0]) * max(abs(xs[0]), abs(xs[-1])) + 1.0
    out = []
    for target in (tail, 1 - tail):
        below, above = -reach, reach.copy()
        for _ in range(50):
            middle = (below + above) / 2
            under = cdf(middle) < target
            below = np.where(under, middle, below)
            above = np.where(under, above, middle)
        # the lower end errs low, the upper end errs high: the region only grows
        out.append(below if target == tail else above)
    return out[0], out[1]
