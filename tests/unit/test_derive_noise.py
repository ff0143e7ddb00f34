"""The noise of a derived count (a sum of stored noisy counts) is computed exactly, and the
intervals built on it cover the truth at their stated level among the cells shown."""

from __future__ import annotations

import numpy as np
import pytest

from privacy._derive import SummedNoise, noise_of
from privacy._intervals import shown_count_coverage
from privacy._mechanisms import discrete_gaussian, discrete_laplace

LAPLACE = discrete_laplace(sensitivity=3, epsilon=0.5, confidence=0.95)   # scale 6
SMALL = discrete_laplace(sensitivity=1, epsilon=1.0, confidence=0.95)     # scale 1
GAUSS = discrete_gaussian(sensitivity=3, epsilon=1.0, delta=1e-7, confidence=0.95)


@pytest.mark.parametrize("base", [LAPLACE, SMALL, GAUSS], ids=["laplace6", "laplace1", "gauss"])
def test_one_draw_is_the_mechanism_itself(base):
    assert noise_of(base, 1) is base
    summed = SummedNoise(base, 1)
    assert summed.half_width == base.half_width
    assert summed.threshold(0.02) == base.threshold(0.02)
    for t in (-3, 0, 1, 5, 20):
        assert summed.tail(t) == pytest.approx(base.tail(t), abs=1e-12)


@pytest.mark.parametrize("many", [2, 7, 30])
def test_mass_is_the_convolution(many):
    noise = SummedNoise(LAPLACE, many)
    low, mass = noise.pmf()
    values = np.arange(low, low + len(mass))
    assert sum(mass) == pytest.approx(1.0, abs=1e-12)
    assert float(np.dot(values, mass)) == pytest.approx(0.0, abs=1e-9)
    assert float(np.dot(values ** 2, mass)) == pytest.approx(many * LAPLACE.variance, rel=1e-6)
    # the width is the smallest integer that reaches the confidence
    h = int(noise.half_width)
    assert 1 - 2 * noise.tail(h + 1) >= 0.95 > 1 - 2 * noise.tail(h)
    # a derived area with no events reaches its threshold at most α of the time
    t = noise.threshold(0.02)
    assert noise.tail(t) <= 0.02 < noise.tail(t - 1)


@pytest.mark.parametrize("base,many", [(LAPLACE, 4), (SMALL, 9), (GAUSS, 3)],
                         ids=["laplace6x4", "laplace1x9", "gaussx3"])
def test_shown_intervals_cover_every_true_count(base, many):
    """Exact, from the noise mass: for every true count 0 … τ + 3h, the interval of a derived
    count that was shown (reached τ) covers the truth at least at its stated level."""
    noise = SummedNoise(base, many)
    cut = max(5, noise.threshold(0.02))
    h = int(noise.half_width)
    for true in range(0, cut + 3 * h + 1, max(1, h // 4)):
        assert shown_count_coverage(noise, cut, true) >= noise.coverage - 1e-9, true


def test_a_sum_of_nothing_is_a_bug():
    from data.errors import VeilBug
    with pytest.raises(VeilBug):
        noise_of(LAPLACE, 0)


def test_accuracy_rule_counts_the_share_of_accurate_counts():
    from privacy._derive import accurate_enough
    from privacy._values import Cell

    def cell(value, half):
        return Cell(key=("m", "a"), value=value, lower=value - half, upper=value + half,
                    noise_scale=1.0, status="noisy")

    fresh = 10.0
    accurate = [cell(1000.0, 14.0)] * 9          # within 1.5 × 10
    wide = cell(100.0, 40.0)                      # neither 1.5 × 10 nor 5% of 100
    relative = cell(2000.0, 90.0)                 # wider than 15, but within 5% of 2000
    rule = {"fresh_half_width": fresh, "max_ratio": 1.5, "max_relative": 0.05}
    assert accurate_enough(accurate + [relative], **rule)
    assert accurate_enough(accurate + [wide], **rule, min_share=0.9)
    assert not accurate_enough(accurate + [wide], **rule, min_share=1.0)
    assert not accurate_enough(accurate[:1] + [wide], **rule, min_share=0.9)
    # areas the derived view hides although a fresh release would likely show them count
    # against it: 9 good of 9 shown + 2 hidden is under 90%
    assert accurate_enough(accurate, **rule, min_share=0.9, hidden=1)
    assert not accurate_enough(accurate, **rule, min_share=0.9, hidden=2)
    suppressed = Cell(key=("m", "a"), value=None, lower=None, upper=None, noise_scale=1.0,
                      status="suppressed")
    assert not accurate_enough([suppressed], **rule)  # shows nothing: release it fresh
