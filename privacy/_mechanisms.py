"""Noise mechanisms, all from OpenDP. Never numpy's float noise for a release.

Owns the construction of measurements and their accounting: the (ε, δ) a release is charged is
the ``map(d_in)`` of its measurements composed by OpenDP (``composed``), never a number computed
beside it. Pure-DP (Laplace) measurements compose with ``make_composition``; Gaussian ones are
ρ-zCDP, compose in ρ and are converted to (ε, δ) once, at the policy's δ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import opendp.prelude as dp

dp.enable_features("contrib")

__all__ = ["CountMechanism", "SumMechanism", "composed", "discrete_gaussian",
           "discrete_laplace", "float_laplace"]


@dataclass(frozen=True)
class CountMechanism:
    name: str
    scale: float
    sensitivity: int
    epsilon: float          # = measurement.map(sensitivity) (Gaussian: its ε at ``delta``)
    half_width: float       # (confidence) interval half-width of the noise
    confidence: float
    kind: str = "laplace"   # laplace | gaussian
    delta: float = 0.0

    def __call__(self, counts: list[int]) -> list[int]:
        if not counts:
            return []
        return list(self.measurement([int(c) for c in counts]))

    @property
    def measurement(self) -> dp.Measurement:
        """The OpenDP measurement that samples this noise (ρ-zCDP for Gaussian, else ε-DP)."""
        sampler = _discrete_gaussian if self.kind == "gaussian" else _discrete_laplace
        return sampler(self.scale)

    @property
    def variance(self) -> float:
        if self.kind == "gaussian":
            return self.scale * self.scale
        q = math.exp(-1.0 / self.scale)
        return 2 * q / (1 - q) ** 2

    @property
    def coverage(self) -> float:
        """The level the interval ``noisy ± half_width`` achieves exactly: P(|noise| ≤ h).

        At least ``confidence``; above it where discrete noise has no integer width that hits
        it (a width of h covers 95.4%, h − 1 under 95%): releases state this level.
        """
        return 1.0 - 2.0 * self.tail(int(self.half_width) + 1)

    def tail(self, t: int) -> float:
        """P(noise ≥ t), exactly: how often a unit whose true count is 0 reaches t."""
        if self.kind == "gaussian":
            mass = _discrete_gaussian_mass(self.scale)
            centre = len(mass) // 2
            return float(sum(mass[max(centre + t, 0):]))
        q = math.exp(-1.0 / self.scale)
        # P(X = x) = (1 - q) / (1 + q) · q^|x|, so P(X ≥ t) = q^t / (1 + q) for t ≥ 1
        return q ** t / (1 + q) if t >= 1 else 1.0 - q ** (1 - t) / (1 + q)

    def threshold(self, rate: float) -> int:
        """The smallest integer t with P(noise ≥ t) ≤ ``rate``: a data-independent cut-off.

        A unit with no events has a noisy count ≥ t with probability at most ``rate``; it
        depends on the mechanism alone, so cutting at it is post-processing and costs no ε.
        """
        if not 0 < rate < 0.5:
            raise ValueError(f"rate must be in (0, 0.5), got {rate}")
        if self.kind == "gaussian":
            t = 1
        else:
            q = math.exp(-1.0 / self.scale)
            t = max(1, math.ceil(math.log(rate * (1 + q)) / math.log(q)) - 1)
        while self.tail(t) > rate:  # exact from here on, whatever the float log said
            t += 1
        while t > 1 and self.tail(t - 1) <= rate:
            t -= 1
        return t

    def pmf(self) -> tuple[int, list[float]]:
        """The noise's probability mass as (lowest value, masses), tails below 1e-15 cut."""
        if self.kind == "gaussian":
            mass = _discrete_gaussian_mass(self.scale)
            return -(len(mass) // 2), list(mass)
        q = math.exp(-1.0 / self.scale)
        reach = int(math.ceil(15 * math.log(10) * self.scale)) + 1  # q^reach < 1e-15
        norm = (1 - q) / (1 + q)
        return -reach, [norm * q ** abs(x) for x in range(-reach, reach + 1)]


@cache
def _discrete_gaussian_mass(scale: float) -> tuple[float, ...]:
    """Normalised masses of the discrete Gaussian of σ = scale on -R..R (R = 12σ + 2)."""
    reach = int(12 * scale) + 2
    mass = [math.exp(-(x * x) / (2 * scale * scale)) for x in range(-reach, reach + 1)]
    norm = sum(mass)
    return tuple(m / norm for m in mass)


@dataclass(frozen=True)
class SumMechanism:
    name: str
    scale: float
    sensitivity: float
    epsilon: float
    half_width: float
    confidence: float

    def __call__(self, sums: list[float]) -> list[float]:
        if not sums:
            return []
        return list(self.measurement([float(s) for s in sums]))

    @property
    def measurement(self) -> dp.Measurement:
        return _float_laplace(self.scale)

    @property
    def variance(self) -> float:
        return 2 * self.scale * self.scale


@cache
def _discrete_laplace(scale: float):
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)


@cache
def _discrete_gaussian(scale: float):
    return dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="f64"), scale=scale)


def _gaussian_as_approx_dp(scale: float, delta: float):
    return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(_discrete_gaussian(scale)), delta)


@cache
def discrete_gaussian(*, sensitivity: int, epsilon: float, delta: float,
                      confidence: float) -> CountMechanism:
    """Discrete Gaussian noise (ρ-zCDP), converted to (ε, δ) at the policy's δ.

    The scale is the smallest that OpenDP accounts at no more than ``epsilon`` for ``delta``;
    the ε charged is what the converted measurement maps ``sensitivity`` (the L2 bound) to.
    """
    if sensitivity < 1:
        raise ValueError(f"sensitivity must be >= 1, got {sensitivity}")
    if not epsilon > 0 or not 0 < delta < 1:
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    scale = dp.binary_search_param(lambda s: _gaussian_as_approx_dp(s, delta),
                                   d_in=float(sensitivity), d_out=(epsilon, delta))
    charged, _ = _gaussian_as_approx_dp(scale, delta).map(float(sensitivity))
    half_width = _discrete_gaussian_half_width(scale, confidence)
    return CountMechanism(name=f"discrete Gaussian (OpenDP, zCDP at δ={delta:g})", scale=scale,
                          sensitivity=sensitivity, epsilon=charged, half_width=half_width,
                          confidence=confidence, kind="gaussian", delta=delta)


def _discrete_gaussian_half_width(scale: float, confidence: float) -> float:
    """Smallest integer a with P(|X| <= a) >= confidence for the discrete Gaussian of σ = scale.

    Exact from the probability mass (OpenDP's accuracy helper is a tail bound, which reports
    an interval covering about 98% where 95% was asked).
    """
    support = range(0, int(40 * scale) + 2)
    mass = [math.exp(-(x * x) / (2 * scale * scale)) for x in support]
    norm = mass[0] + 2 * sum(mass[1:])
    covered = mass[0] / norm
    for a in support[1:]:
        if covered >= confidence:
            return float(a - 1)
        covered += 2 * mass[a] / norm
    return float(support[-1])


@cache
def _float_laplace(scale: float):
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="f64", nan=False)), dp.l1_distance(T="f64"),
        scale=scale)


@cache  # a pure function of public parameters: a release builds the same few again and again
def discrete_laplace(*, sensitivity: int, epsilon: float, confidence: float) -> CountMechanism:
    """Discrete Laplace (geometric) noise calibrated so that ``map(sensitivity) == epsilon``."""
    if sensitivity < 1:
        raise ValueError(f"sensitivity must be >= 1, got {sensitivity}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0 for a noisy release, got {epsilon}")
    scale = sensitivity / epsilon
    charged = _discrete_laplace(scale).map(sensitivity)
    q = math.exp(-1.0 / scale)
    # the smallest integer h with P(|X| > h) = 2·q^(h+1) / (1 + q) ≤ 1 − confidence (OpenDP's
    # accuracy is a real number; the integers within it are what the interval holds)
    half_width = max(math.ceil(math.log((1 - confidence) * (1 + q) / 2) / math.log(q)) - 1, 0)
    while half_width and 2 * q ** half_width / (1 + q) <= 1 - confidence:
        half_width -= 1
    while 2 * q ** (half_width + 1) / (1 + q) > 1 - confidence:
        half_width += 1
    return CountMechanism(name="discrete Laplace (OpenDP)", scale=scale,
                          sensitivity=sensitivity, epsilon=charged,
                          half_width=float(half_width), confidence=confidence)


@cache
def float_laplace(*, sensitivity: float, epsilon: float, confidence: float) -> SumMechanism:
    """Laplace noise on bounded real sums (OpenDP's floating-point-safe sampler)."""
    if not sensitivity > 0:
        raise ValueError(f"sensitivity must be > 0, got {sensitivity}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0 for a noisy release, got {epsilon}")
    scale = sensitivity / epsilon
    charged = _float_laplace(scale).map(sensitivity)
    half_width = dp.laplacian_scale_to_accuracy(scale, 1.0 - confidence)
    return SumMechanism(name="Laplace on clamped sums (OpenDP)", scale=scale,
                        sensitivity=sensitivity, epsilon=charged, half_width=half_width,
                        confidence=confidence)


def composed(mechanisms: Sequence[CountMechanism] | Sequence[SumMechanism], *,
             delta: float) -> tuple[dp.Measurement, int | float]:
    """The OpenDP composition of one release's mechanisms of one kind, and its ``d_in``.

    Every mechanism measures a vector with the same sensitivity (the product's per-person-day
    bound: disjoint cells at each level), so they share an input space. Laplace measurements
    compose in ε; Gaussian ones compose in ρ and are converted to (ε, δ) once, at ``delta``.
    Its ``map(d_in)`` is what the release costs: ε, or (ε, δ) for Gaussian noise.
    """
    if not mechanisms:
        raise ValueError("a composition needs at least one mechanism")
    kinds = {(type(m), getattr(m, "kind", "laplace"), m.sensitivity) for m in mechanisms}
    if len(kinds) != 1:
        raise ValueError(f"one composition takes mechanisms of one kind and sensitivity, "
                         f"got {sorted(map(str, kinds))}")
    [(_type, kind, sensitivity)] = kinds
    measurement = dp.c.make_composition([m.measurement for m in mechanisms])
    if kind == "gaussian":
        if not 0 < delta < 1:
            raise ValueError(f"Gaussian noise needs 0 < delta < 1, got {delta}")
        converted = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(measurement), delta)
        return converted, float(sensitivity)
    return measurement, sensitivity
