"""Intervals that cover what they claim for the cells that are shown (issue 14, item 4).

Exact checks compute coverage from the noise's probability mass; statistical ones release
through the engine with OpenDP's real noise and allow 4 standard errors.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import date, datetime

import pytest

from privacy import Epsilon, Query, Release
from privacy._values import Threshold
from privacy._engine import Level, Measured, release_cells, split_epsilon
from privacy._intervals import mean_interval, shown_count_coverage, shown_count_interval
from privacy._mechanisms import discrete_gaussian, discrete_laplace, float_laplace

MECHANISMS = {
    "laplace scale 2": discrete_laplace(sensitivity=1, epsilon=0.5, confidence=0.95),
    "laplace scale 6": discrete_laplace(sensitivity=3, epsilon=0.5, confidence=0.95),
    "gaussian": discrete_gaussian(sensitivity=3, epsilon=0.5, delta=1e-7, confidence=0.95),
}


def _plain_coverage(mechanism, threshold: int, true: int) -> float:
    """What ``noisy ± h`` covered among shown cells (the interval before this fix)."""
    low, mass = mechanism.pmf()
    h = mechanism.half_width
    shown = hits = 0.0
    for x, p in zip(range(low, low + len(mass)), mass):
        if true + x >= threshold:
            shown += p
            hits += p if abs(x) <= h else 0.0
    return hits / shown


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_a_shown_count_is_covered_at_the_stated_level_for_every_true_count(name):
    """Exact: P(n ∈ interval | shown) ≥ the stated level for n = 0 … τ + 3h, and it is the
    stated level (not far above it) once τ is out of reach."""
    mechanism = MECHANISMS[name]
    threshold = max(5, mechanism.threshold(0.02))
    h = int(mechanism.half_width)
    coverage = [shown_count_coverage(mechanism, threshold, n)
                for n in range(0, threshold + 3 * h)]
    assert min(coverage) >= mechanism.coverage - 1e-9, (min(coverage), mechanism.coverage)
    assert max(coverage) < mechanism.coverage + 0.015  # honest, not needlessly wide
    far = threshold + 40 * int(mechanism.scale) + h
    assert shown_count_interval(mechanism, far, threshold) == (far - h, far + h)


def test_the_plain_interval_under_covers_small_shown_counts():
    """Why the construction is needed: ``noisy ± h`` covers a true count of 1–3 far less than
    95% among the cells shown (the display rule selects upward noise)."""
    mechanism = MECHANISMS["laplace scale 6"]
    threshold = max(5, mechanism.threshold(0.02))
    assert max(_plain_coverage(mechanism, threshold, n) for n in (1, 2, 3)) < 0.5


def test_a_shown_count_interval_reaches_down_to_zero_near_the_threshold():
    """A value at τ may be an empty area lifted by noise: its interval starts at 0."""
    mechanism = MECHANISMS["laplace scale 2"]
    threshold = max(5, mechanism.threshold(0.02))
    lower, upper = shown_count_interval(mechanism, threshold, threshold)
    assert lower == 0 and threshold <= upper < threshold + mechanism.half_width


def test_discrete_widths_report_the_level_they_achieve():
    """The smallest integer width that promises 95%, and the level it actually reaches."""
    mechanism = discrete_laplace(sensitivity=3, epsilon=1.0, confidence=0.95)
    q = math.exp(-1 / mechanism.scale)

    def covered(h):
        return 1 - 2 * q ** (h + 1) / (1 + q)

    h = int(mechanism.half_width)
    assert h == mechanism.half_width and covered(h - 1) < 0.95 <= covered(h)
    assert mechanism.coverage == pytest.approx(covered(h), abs=1e-12)
    assert mechanism.coverage > 0.955  # scale 3: 95% cannot be hit exactly
    gaussian = MECHANISMS["gaussian"]
    low, mass = gaussian.pmf()
    within = sum(p for x, p in zip(range(low, low + len(mass)), mass)
                 if abs(x) <= gaussian.half_width)
    assert gaussian.coverage == pytest.approx(within, abs=1e-12)


def test_a_release_states_the_lowest_level_its_intervals_achieve():
    release = Release(
        id="r", tenant="T", product="p", query=Query(
            product="p", metric="m", level="dp_medium", start=date(2026, 1, 1),
            end=date(2026, 1, 1), group_by=("month", "district")),
        cells=(), epsilon=Epsilon(1.0), charged=Epsilon(1.0), reused=False, mechanism="m",
        k=5, confidence=0.95, privacy_unit="u", policy_version="v", data_version=1,
        digest="d", created_at=datetime(2026, 2, 15),
        thresholds=(Threshold("district", 7, 0.01, coverage=0.9584),
                    Threshold("tenant", 9, 0.01, coverage=0.9512)))
    assert release.interval_level == 0.9512
    from dashboard.components.badges import interval_percent
    assert interval_percent(release) == "95.1"
    exact = dataclasses.replace(release, thresholds=())
    assert exact.interval_level == 0.95 and interval_percent(exact) == "95"


# Three leaves straight under the tenant, many months: the engine's own display rule.
LEAVES = ("a", "b", "c")
LEVELS = [Level("district", lambda _code: "T"), Level("tenant", None)]


def _months(count: int) -> list[str]:
    return [f"m{i:05d}" for i in range(count)]


def test_released_small_counts_are_covered_among_those_shown():
    """Through the engine with real noise: true counts 1–3 (the audit's 93.3%) are covered at
    least at the stated level among the cells that reach τ."""
    measured = [Measured(count=discrete_laplace(sensitivity=1, epsilon=e, confidence=0.95),
                         total=None) for e in split_epsilon(1.0, 2)]
    months = _months(6000)
    truth = {(m, leaf): (n, 0.0) for m in months for leaf, n in zip(LEAVES, (1, 2, 3))}
    keys = [(m, leaf) for m in months for leaf in LEAVES]
    cells = release_cells(keys=keys, truth=truth, levels=LEVELS, measured=measured, k=5,
                          measure="count", bounds=None, empty_cell_rate=0.02)
    shown = [c for c in cells if c.status == "noisy"]
    hits = sum(c.lower <= truth[c.key][0] <= c.upper for c in shown)
    stated = measured[0].count.coverage
    assert len(shown) > 400
    assert hits / len(shown) >= stated - 4 * math.sqrt(stated * (1 - stated) / len(shown))


MEAN_COUNT = discrete_laplace(sensitivity=1, epsilon=0.25, confidence=0.95)
MEAN_SUM = float_laplace(sensitivity=100.0, epsilon=0.25, confidence=0.95)


def _mean_cells(n: int, mu: float, months: int):
    measured = [Measured(count=MEAN_COUNT, total=MEAN_SUM)] * 2
    keys = [(m, "a") for m in _months(months)]
    truth = {key: (n, mu * n) for key in keys}
    cells = release_cells(keys=keys, truth=truth, levels=LEVELS, measured=measured, k=5,
                          measure="mean", bounds=(0.0, 100.0), empty_cell_rate=0.02)
    return [c for c in cells if c.status == "noisy"]


def test_a_mean_interval_covers_95_percent_where_the_count_is_clear_of_the_threshold():
    """The delta method covered 93.9–94.3%; the exact construction 95% ± 1% (n = 400)."""
    shown = _mean_cells(400, 62.5, 6000)
    rate = sum(c.lower <= 62.5 <= c.upper for c in shown) / len(shown)
    assert len(shown) == 6000
    assert 0.94 <= rate <= 0.96, rate


def test_a_mean_interval_near_the_threshold_never_under_covers():
    """True count 5 under τ = 14: shown only when noise lifted the count, with the count noise
    in the denominator biased; the interval still covers at least 95%."""
    shown = _mean_cells(5, 80.0, 20000)
    rate = sum(c.lower <= 80.0 <= c.upper for c in shown) / len(shown)
    assert len(shown) > 500
    assert rate >= 0.95 - 4 * math.sqrt(0.95 * 0.05 / len(shown)), rate


def test_a_mean_interval_holds_its_estimate_and_stays_in_bounds():
    for noisy_sum, noisy_count in ((5000.0, 100), (-300.0, 20), (40000.0, 30), (0.0, 14)):
        lower, upper = mean_interval(noisy_sum, noisy_count, MEAN_COUNT, MEAN_SUM, (0.0, 100.0),
                                     0.95, 14)
        estimate = min(max(noisy_sum / noisy_count, 0.0), 100.0)
        assert 0.0 <= lower <= upper <= 100.0
        assert lower - 100 / 1024 <= estimate <= upper + 100 / 1024
