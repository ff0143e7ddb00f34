"""OpenDP discrete Laplace: exact accounting, noise of the right shape, honest intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from privacy._mechanisms import discrete_laplace


@pytest.mark.parametrize("sensitivity, epsilon", [(1, 1.0), (3, 1.0), (3, 0.5), (2, 2.0)])
def test_charge_is_the_measurement_map(sensitivity, epsilon):
    """The mechanism is calibrated so that map(sensitivity) is exactly the level's ε."""
    mechanism = discrete_laplace(sensitivity=sensitivity, epsilon=epsilon, confidence=0.95)
    assert mechanism.epsilon == epsilon
    assert mechanism.scale == sensitivity / epsilon


def test_noise_follows_the_discrete_laplace_distribution():
    """20,000 draws pass a chi-square goodness-of-fit test against the discrete Laplace."""
    mechanism = discrete_laplace(sensitivity=3, epsilon=1.0, confidence=0.95)
    noise = np.asarray(mechanism([1000] * 20_000)) - 1000
    assert -0.5 < noise.mean() < 0.5  # loose: the noise is centred
    q = math.exp(-1 / mechanism.scale)
    support = np.arange(-12, 13)
    pmf = (1 - q) / (1 + q) * q ** np.abs(support)
    observed = np.array([(noise == k).sum() for k in support] + [(np.abs(noise) > 12).sum()])
    expected = np.append(pmf, 1 - pmf.sum()) * len(noise)
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_interval_covers_the_true_value_95_percent_of_the_time():
    """The reported 95% interval is the smallest integer interval covering at least 95% of the
    discrete Laplace's mass, and 20,000 draws cover the true count as often as that mass says.

    At the vaccinations product's configuration (3 events per person-day, ε = 1: scale 3) that
    interval covers 95.8% exactly (the lattice forces more than 95%; 97.3% at scale 1). The
    draws must land within five standard errors (±0.7 points) of the exact coverage: a bound
    at 96% flat sat only 1.4 standard errors above it and failed about one run in twelve.
    """
    mechanism = discrete_laplace(sensitivity=3, epsilon=1.0, confidence=0.95)
    q = math.exp(-1 / mechanism.scale)

    def covered(half_width: int) -> float:  # P(|noise| <= half_width)
        return 1 - 2 * q ** (half_width + 1) / (1 + q)

    half_width = math.floor(mechanism.half_width)  # the integers the reported interval holds
    exact = covered(half_width)
    assert covered(half_width - 1) < 0.95 <= exact  # the smallest interval that promises 95%
    assert exact == pytest.approx(0.958, abs=0.001)
    draws = 20_000
    noise = np.asarray(mechanism([500] * draws)) - 500
    coverage = (np.abs(noise) <= mechanism.half_width).mean()
    assert abs(coverage - exact) <= 5 * math.sqrt(exact * (1 - exact) / draws)


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="sensitivity must be >= 1, got 0"):
        discrete_laplace(sensitivity=0, epsilon=1.0, confidence=0.95)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        discrete_laplace(sensitivity=1, epsilon=0.0, confidence=0.95)


def test_gaussian_charge_is_the_converted_measurement_at_delta():
    """Discrete Gaussian: ε charged is OpenDP's zCDP → (ε, δ) conversion, at most the target."""
    import opendp.prelude as dp

    from privacy._mechanisms import discrete_gaussian

    mechanism = discrete_gaussian(sensitivity=1, epsilon=1.0, delta=1e-7, confidence=0.95)
    converted = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="f64"),
        scale=mechanism.scale)), 1e-7)
    assert converted.map(1.0) == (mechanism.epsilon, 1e-7)
    assert 0.99 < mechanism.epsilon <= 1.0


def test_gaussian_noise_has_its_scale_and_honest_intervals():
    """20,000 draws: variance within 5% of scale², the 95% interval covers 95% ± 1%."""
    from privacy._mechanisms import discrete_gaussian

    mechanism = discrete_gaussian(sensitivity=1, epsilon=1.0, delta=1e-7, confidence=0.95)
    noise = np.asarray(mechanism([1000] * 20_000)) - 1000
    assert abs(noise.var() / mechanism.scale ** 2 - 1) < 0.05
    coverage = (np.abs(noise) <= mechanism.half_width).mean()
    assert 0.94 <= coverage <= 0.96 + 0.01  # the lattice makes it at least 95%


def _levels(kind: str, sensitivity: int = 1, epsilon: float = 1.0):
    """The count mechanisms of an H3 map's four levels (h3_cell, district, state, tenant)."""
    from privacy._engine import split_epsilon
    from privacy._mechanisms import discrete_gaussian

    if kind == "gaussian":
        return [discrete_gaussian(sensitivity=sensitivity, epsilon=share, delta=1e-7,
                                  confidence=0.95) for share in split_epsilon(epsilon, 4)]
    return [discrete_laplace(sensitivity=sensitivity, epsilon=share, confidence=0.95)
            for share in split_epsilon(epsilon, 4)]


@pytest.mark.parametrize("sensitivity", [1, 3])
def test_gaussian_levels_compose_in_rho_and_convert_once(sensitivity):
    """Four Gaussian levels cost OpenDP's zCDP composition converted once at δ: exactly its map,
    δ once (not 4δ), and less ε than the levels' ε summed by hand."""
    import opendp.prelude as dp

    from privacy._engine import Measured, release_loss
    from privacy._values import Delta, Epsilon, PrivacyLoss

    levels = _levels("gaussian", sensitivity)
    composed = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(dp.c.make_composition([
        dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="f64"),
                           scale=m.scale) for m in levels])), 1e-7)
    epsilon, delta = composed.map(float(sensitivity))
    loss = release_loss([Measured(count=m, total=None) for m in levels], delta=1e-7)
    assert loss == PrivacyLoss(Epsilon(epsilon), Delta(delta))
    assert loss.delta == Delta(1e-7)
    assert sum(m.epsilon for m in levels) == pytest.approx(1.0, abs=0.01)  # the old charge
    assert 0.55 < loss.epsilon.value < 0.62                                 # ≈ 0.59


def test_laplace_levels_compose_with_make_composition():
    """Pure-DP levels cost OpenDP's make_composition map exactly (ε only, δ = 0)."""
    import opendp.prelude as dp

    from privacy._engine import Measured, release_loss
    from privacy._values import Delta, Epsilon, PrivacyLoss

    levels = _levels("laplace", sensitivity=3, epsilon=0.5)
    composed = dp.c.make_composition([
        dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"),
                          scale=m.scale) for m in levels])
    loss = release_loss([Measured(count=m, total=None) for m in levels], delta=1e-7)
    assert loss == PrivacyLoss(Epsilon(composed.map(3)), Delta(0.0))
    assert loss.epsilon.value == pytest.approx(0.5, rel=1e-12)


def test_sums_compose_apart_from_counts_and_add():
    """A mean measures counts and clamped sums (different input spaces): each family is one
    OpenDP composition and the two pure-DP costs add."""
    import opendp.prelude as dp

    from privacy._engine import Measured, release_loss
    from privacy._mechanisms import float_laplace

    counts = _levels("laplace", sensitivity=2, epsilon=0.5)
    sums = [float_laplace(sensitivity=20.0, epsilon=m.epsilon, confidence=0.95) for m in counts]
    loss = release_loss([Measured(count=c, total=t) for c, t in zip(counts, sums)], delta=1e-7)
    count_map = dp.c.make_composition([c.measurement for c in counts]).map(2)
    sum_map = dp.c.make_composition([t.measurement for t in sums]).map(20.0)
    assert loss.epsilon.value == count_map + sum_map and loss.delta.value == 0.0


def test_one_composition_takes_one_kind_of_mechanism():
    """Gaussian and Laplace levels are never composed as if alike."""
    from privacy._mechanisms import composed

    with pytest.raises(ValueError, match="one kind and sensitivity"):
        composed(_levels("gaussian")[:2] + _levels("laplace")[:2], delta=1e-7)
