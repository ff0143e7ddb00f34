"""Randomised response at collection: what a source applies to a self-reported answer.

Owns the collection-side randomizer of a product declared randomised at collection (k-ary
randomized response, OpenDP's ``make_randomized_response``): the true answer with probability
p = e^ε / (e^ε + k − 1), each other category with q = 1 / (e^ε + k − 1). It belongs to the
collection side (the client helper, ``data/ingest/client.py``, runs it before anything is sent);
the gate's debiased estimates of the true counts are in ``privacy._local``, which imports it
from here (the data layer never imports the privacy layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import opendp.prelude as dp

from data.errors import InvalidInput

dp.enable_features("contrib")

__all__ = ["LocalRandomizer"]


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
