"""Local DP: randomized response at collection and unbiased estimates with honest intervals."""

from __future__ import annotations

import math
import random

import pytest

from privacy import InvalidInput
from privacy import LocalRandomizer, estimate_local

CATEGORIES = ("never", "sometimes", "often", "always")


def test_each_report_costs_the_declared_epsilon():
    """OpenDP accounts one report at the declared ε (rounded up, never down)."""
    randomizer = LocalRandomizer(categories=CATEGORIES, epsilon=1.0)
    assert randomizer.charged == pytest.approx(1.0, abs=1e-12) and randomizer.charged >= 1.0
    assert randomizer.p / randomizer.q == pytest.approx(math.e)


def test_reports_stay_in_the_declared_categories_and_truth_is_kept_with_probability_p():
    """About p of the reports repeat the true answer; all are declared categories."""
    randomizer = LocalRandomizer(categories=CATEGORIES, epsilon=1.0)
    reports = [randomizer("often") for _ in range(8000)]
    assert set(reports) <= set(CATEGORIES)
    kept = reports.count("often") / len(reports)
    sd = math.sqrt(randomizer.p * (1 - randomizer.p) / len(reports))
    assert abs(kept - randomizer.p) < 5 * sd


def test_estimates_are_unbiased_and_intervals_cover():
    """Over 200 surveys of 500 people the 95% intervals cover the truth about 95% of the time."""
    rng = random.Random(11)
    truth = {"never": 50, "sometimes": 150, "often": 225, "always": 75}
    answers = [c for c, n in truth.items() for _ in range(n)]
    randomizer = LocalRandomizer(categories=CATEGORIES, epsilon=2.0)
    covered = total = 0
    errors: dict[str, list[float]] = {c: [] for c in CATEGORIES}
    for _ in range(200):
        rng.shuffle(answers)
        estimates = estimate_local((randomizer(a) for a in answers), randomizer)
        for est in estimates:
            covered += est.lower <= truth[est.category] <= est.upper
            total += 1
            errors[est.category].append(est.count - truth[est.category])
    assert 0.92 <= covered / total <= 0.98  # 800 intervals: ±3 standard deviations of 95%
    for category, errs in errors.items():  # unbiased per category, within 4 standard errors
        mean = sum(errs) / len(errs)
        se = math.sqrt(sum((e - mean) ** 2 for e in errs) / (len(errs) - 1) / len(errs))
        assert abs(mean) < 4 * se, category


def test_bad_inputs_are_rejected():
    with pytest.raises(InvalidInput, match="at least two distinct categories"):
        LocalRandomizer(categories=("only",), epsilon=1.0)
    randomizer = LocalRandomizer(categories=CATEGORIES, epsilon=1.0)
    with pytest.raises(InvalidInput, match="'rarely' is not one of the declared categories"):
        randomizer("rarely")
    with pytest.raises(InvalidInput, match="undeclared categories: \\['rarely'\\]"):
        estimate_local(["rarely"], randomizer)


def test_twenty_categories_at_epsilon_two_on_100000_reports():
    """k = 20, ε = 2: truthful with p = e²/(e²+19) ≈ 0.28; estimates unbiased on 100,000 reports."""
    categories = tuple(f"c{i:02d}" for i in range(20))
    randomizer = LocalRandomizer(categories=categories, epsilon=2.0)
    assert randomizer.p == pytest.approx(math.exp(2) / (math.exp(2) + 19), rel=1e-12)
    assert randomizer.p == pytest.approx(0.28, abs=0.001)
    rng = random.Random(5)
    weights = [rng.uniform(0.5, 3.0) for _ in categories]
    answers = rng.choices(categories, weights=weights, k=100_000)
    truth = {c: answers.count(c) for c in categories}
    reports = [randomizer(a) for a in answers]
    truthful = sum(r == a for r, a in zip(reports, answers)) / len(answers)
    assert abs(truthful - randomizer.p) < 5 * math.sqrt(randomizer.p * (1 - randomizer.p) / 1e5)
    estimates = estimate_local(reports, randomizer)
    z = [(e.count - truth[e.category]) / math.sqrt(e.variance) for e in estimates]
    assert max(abs(v) for v in z) < 4.5          # every category within 4.5 standard errors
    assert abs(sum(z) / len(z)) < 1.0            # no systematic bias across categories
    assert sum(e.count for e in estimates) == pytest.approx(100_000)
