"""Local differential privacy: k-ary randomized response at collection, estimates at query time.

Owns the collection-side randomizer (OpenDP's ``make_randomized_response``: the true answer
with probability p = e^ε / (e^ε + k − 1), each other category with q = 1 / (e^ε + k − 1)) and
the unbiased estimate of the true category counts from randomized reports, with its variance.
A randomized report is already private when it is stored: no central budget is spent on it.

Also owns debiasing a release of a product randomised at collection (``debias_cells``): the
gate measures the *reported* categories' counts with its usual central noise, and the released
value of each category is the debiased estimate of the true answers, post-processing of the
noisy counts of every category of its group, with an interval for both noises. It never sees a
true count: only the engine's released cells.
"""

from __future__ import annotations

import math
import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import opendp.prelude as dp

from data.errors import InvalidInput, VeilBug
from data.ingest.randomise import LocalRandomizer

from privacy._values import Cell

dp.enable_features("contrib")

__all__ = ["LocalEstimate", "LocalRandomizer", "debias_cells", "estimate_counts",
           "estimate_local"]


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
    return estimate_counts(Counter(reports), randomizer, confidence=confidence)


def estimate_counts(observed: Mapping[str, float], randomizer: LocalRandomizer, *,
                    confidence: float = 0.95) -> list[LocalEstimate]:
    """``estimate_local`` from the reported count of each category (a noisy count too: the
    estimate is linear in the counts, and n is their sum)."""
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
        total = max(float(n), 0.0)
        f = min(max(count, 0.0), total)
        variance = (f * p * (1 - p) + (total - f) * q * (1 - q)) / (p - q) ** 2
        half = z * math.sqrt(variance)
        out.append(LocalEstimate(category=category, count=count, variance=variance,
                                 lower=count - half, upper=count + half))
    return out


def debias_cells(cells: Sequence[Cell], randomizer: LocalRandomizer, *, at: int,
                 confidence: float) -> list[Cell]:
    """The released cells of a randomised metric, each category's value debiased.

    ``at`` is the key position of the category. Cells that differ only there form a group:
    the same area, month and other dimensions, over the same members (the engine releases
    them jointly). With r the group's noisy reported counts and n = Σ r, category c's value is
    n̂_c = (r_c − q·n) / (p − q): unbiased, since each r is an unbiased noisy count and the
    map is linear. Its variance is the randomised response's (``estimate_counts``, at n̂) plus
    the central noise carried through the same map, independent of it:
    ((1 − q)²·sd_c² + q²·Σ_{j≠c} sd_j²) / (p − q)². The interval is n̂ ± z·√(both), a normal
    approximation: the response part is a sum of n independent reports, and the central part
    is small beside it on any count that passes the threshold. Valueless cells (rolled up,
    suppressed) stay as they are.
    """
    categories = randomizer.categories
    groups: dict[tuple, dict[str, Cell]] = defaultdict(dict)
    for cell in cells:
        if cell.value is not None:
            groups[(cell.key[:at] + cell.key[at + 1:], cell.members)][cell.key[at]] = cell
    p, q = randomizer.p, randomizer.q
    z = _z(confidence)
    debiased: dict[tuple[str, ...], Cell] = {}
    for (group, _), members in groups.items():
        if set(members) != set(categories):
            raise VeilBug(f"a randomised release's group {group!r} holds categories "
                          f"{sorted(members)}, not all of {list(categories)}: the engine "
                          f"must release them jointly")
        reported = {c: members[c].value for c in categories}
        spread = {c: (members[c].sd or 0.0) ** 2 for c in categories}
        central_total = sum(spread.values())
        for estimate in estimate_counts(reported, randomizer, confidence=confidence):
            c = estimate.category
            central = ((1 - q) ** 2 * spread[c] + q ** 2 * (central_total - spread[c])) \
                / (p - q) ** 2
            sd = math.sqrt(estimate.variance + central)
            value = estimate.count
            debiased[members[c].key] = dataclasses.replace(
                members[c], value=value, n=value, lower=value - z * sd, upper=value + z * sd,
                sd=sd)
    return [debiased.get(cell.key, cell) if cell.value is not None else cell
            for cell in cells]


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf((1 + confidence) / 2)
