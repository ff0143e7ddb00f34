"""Noise mechanisms, all from OpenDP. Never numpy's float noise for a release.

Owns the construction of measurements and their accounting: the ε a release is charged is the
measurement's own ``map(d_in)``, never a number computed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import opendp.prelude as dp

dp.enable_features("contrib")

__all__ = ["CountMechanism", "discrete_laplace"]


@dataclass(frozen=True)
class CountMechanism:
    name: str
    scale: float
    sensitivity: int
    epsilon: float          # = measurement.map(sensitivity)
    half_width: float       # (1 - alpha) interval half-width of the noise

    def __call__(self, counts: list[int]) -> list[int]:
        return list(_laplace(self.scale)(counts))


@cache
def _laplace(scale: float):
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)


def discrete_laplace(*, sensitivity: int, epsilon: float, confidence: float) -> CountMechanism:
    """Discrete Laplace (geometric) noise calibrated so that ``map(sensitivity) == epsilon``."""
    if sensitivity < 1:
        raise ValueError(f"sensitivity must be >= 1, got {sensitivity}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0 for a noisy release, got {epsilon}")
    scale = sensitivity / epsilon
    measurement = _laplace(scale)
    charged = measurement.map(sensitivity)
    half_width = dp.discrete_laplacian_scale_to_accuracy(scale, 1.0 - confidence)
    return CountMechanism(name="discrete_laplace (OpenDP)", scale=scale,
                          sensitivity=sensitivity, epsilon=charged, half_width=half_width)
