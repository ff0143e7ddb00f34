"""Local differential privacy: k-ary randomized response at collection, estimates at query time.

Owns the collection-side randomizer (OpenDP's ``make_randomized_response``: the true answer
with probability p = e^ε / (e^ε + k − 1), each other category with q = 1 / (e^ε + k − 1)) and
the unbiased estimate of the true category counts from randomized reports, with its variance.
A randomized report is already private when it is stored: no central budget is spent on it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist

import opendp.prelude as dp

from data.errors import InvalidInput

dp.enable_features("contrib")

__all__ = ["LocalEstimate", "LocalRandomizer", "estimate_local"]


@dataclass(frozen=True)
class LocalRandomizer:
    """k-ary randomized response over declared categories at a per-report ε."""

    categories: tuple[str, ...]
    epsilon: float

    def __post_init__(self):
        if len(self.categories) < 2 or len(set(self.categories)) != len(self.categories):
            raise InvalidInput(f"randomized response needs at least two distinct categories, "
                               f"got {self.categories!r}")
        if not 0 < self.epsilon < 50:
            raise InvalidInput(f"ε must be in (0, 50), got {self.epsilon!r}")

    @property
    def p(self) -> float:
        e = math.exp(self.epsilon)
        return e / (e + len(self.categories) - 1)

    @property
    def q(self) -> float:
        return 1 / (math.exp(self.epsilon) + len(self.categories) - 1)

    @cached_property
    def _measurement(self):
        return dp.m.make_randomized_response(categories=list(self.categories), prob=self.p)

    @property
    def charged(self) -> float:
        """The ε each report carries, as OpenDP accounts it."""
        return self._measurement.map(1)

    def __call__(self, answer: str) -> str:
        if answer not in self.categories:
            raise InvalidInput(f"{answer!r} is not one of the declared categories "
                               f"{list(self.categories)}")
        return self._measurement(answer)


@dataclass(frozen=True)
class LocalEstimate:
    category: str
    count: float        # unbiased estimate of how many respondents truly answered this
    variance: float
    lower: float
    upper: float


def estimate_local(reports: Iterable[str], randomizer: LocalRandomizer, *,
                   confidence: float = 0.95) -> list[LocalEstimate]:
    """Debias randomized reports: f̂ = (n_j − n·q) / (p − q).

    Each respondent's report is an independent Bernoulli for category j (probability p if they
    truly answered j, else q), so Var(n_j) = f·p(1−p) + (n−f)·q(1−q), estimated with f̂ clipped
    to [0, n], and Var(f̂) = Var(n_j) / (p − q)².
    """
    observed = Counter(reports)
    unknown = set(observed) - set(randomizer.categories)
    if unknown:
        raise InvalidInput(f"reports contain undeclared categories: {sorted(unknown)}")
    n = sum(observed.values())
    p, q = randomizer.p, randomizer.q
    z = _z(confidence)
    out = []
    for category in randomizer.categories:
        n_j = observed.get(category, 0)
        count = (n_j - n * q) / (p - q) if n else 0.0
        f = min(max(count, 0.0), float(n))
        variance = (f * p * (1 - p) + (n - f) * q * (1 - q)) / (p - q) ** 2
        half = z * math.sqrt(variance)
        out.append(LocalEstimate(category=category, count=count, variance=variance,
                                 lower=count - half, upper=count + half))
    return out


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf((1 + confidence) / 2)
