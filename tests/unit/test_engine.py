"""The release engine: roll-up to parent areas, suppression only at the top, exact accounting."""

from __future__ import annotations

import dataclasses
import math
import statistics
from datetime import date, datetime

import pytest

from privacy import Epsilon, Query, Release
from privacy._engine import Level, Measured, release_cells, split_epsilon, thresholds
from privacy._mechanisms import discrete_gaussian, discrete_laplace

# Two states with three districts each; the tenant is "T".
STATE = {"A1": "A", "A2": "A", "A3": "A", "B1": "B", "B2": "B", "B3": "B"}
LEVELS = [Level("district", STATE.__getitem__), Level("state", lambda _s: "T"),
          Level("tenant", None)]
EXACT = [Measured(count=None, total=None)] * 3
KEYS = [("2026-01", d) for d in STATE]


RATE = 0.02  # the policy's empty_cell_rate (α)


def _release(truth, measured=EXACT, k=5, keys=KEYS, levels=LEVELS):
    return release_cells(keys=keys, truth=truth, levels=levels, measured=measured, k=k,
                         measure="count", bounds=None, empty_cell_rate=RATE)


def _laplace(epsilon: float, levels: int) -> list[Measured]:
    return [Measured(count=discrete_laplace(sensitivity=1, epsilon=e, confidence=0.95),
                     total=None) for e in split_epsilon(epsilon, levels)]


def _as_release(cells) -> Release:
    return Release(
        id="r", tenant="T", product="p", query=Query(
            product="p", metric="m", level="dp_medium", start=date(2026, 1, 1),
            end=date(2026, 1, 1), group_by=("month", "district")),
        cells=tuple(cells), epsilon=Epsilon(1.0), charged=Epsilon(1.0), reused=False,
        mechanism="m", k=5, confidence=0.95, privacy_unit="u", policy_version="v",
        data_version=1, digest="d", created_at=datetime(2026, 2, 15))


# A fine map: 2,000 cells straight under the tenant, five of them with 100 events each.
FINE_KEYS = [("2026-01", f"c{i:04d}") for i in range(2000)]
FINE_LEVELS = [Level("h3_cell", lambda _cell: "T"), Level("tenant", None)]
FINE_TRUTH = {("2026-01", f"c{i:04d}"): (100, 0.0) for i in range(5)}


def test_small_districts_roll_up_into_their_state():
    """Two small districts of A merge into one A cell measured from their union."""
    cells = {c.key: c for c in _release({("2026-01", "A1"): (50, 0.0),
                                         ("2026-01", "A2"): (3, 0.0),
                                         ("2026-01", "A3"): (4, 0.0),
                                         ("2026-01", "B1"): (9, 0.0),
                                         ("2026-01", "B2"): (8, 0.0),
                                         ("2026-01", "B3"): (7, 0.0)})}
    assert cells[("2026-01", "A1")].value == 50 and cells[("2026-01", "A1")].status == "exact"
    assert cells[("2026-01", "A2")].status == cells[("2026-01", "A3")].status == "rolled_up:A"
    parent = cells[("2026-01", "A")]
    assert parent.status == "rollup" and parent.value == 7 and parent.members == ("A2", "A3")
    assert all(cells[("2026-01", d)].value for d in ("B1", "B2", "B3"))


def test_a_union_still_under_k_is_counted_in_the_tenant_total():
    """Small districts still under k together go up; the top measures its whole total."""
    cells = {c.key: c for c in _release({("2026-01", "A2"): (2, 0.0),
                                         ("2026-01", "B3"): (3, 0.0),
                                         ("2026-01", "A1"): (60, 0.0)})}
    assert cells[("2026-01", "A2")].status == "rolled_up:T"
    assert cells[("2026-01", "B3")].status == "rolled_up:T"
    top = cells[("2026-01", "T")]
    assert top.status == "total" and top.value == 65  # A1's 60 + the leftovers' 5
    assert set(top.members) == {"A2", "A3", "B1", "B2", "B3"}  # zero-filled districts too


def test_the_top_measures_its_total_even_when_nothing_rolled_up():
    """Every district ≥ k: the tenant's total is still released (its ε is spent anyway)."""
    cells = {c.key: c for c in _release({key: (10 + i, 0.0) for i, key in enumerate(KEYS)})}
    top = cells[("2026-01", "T")]
    assert top.status == "total" and top.value == sum(10 + i for i in range(6))
    assert top.members == ()


def test_suppressed_only_where_no_parent_qualifies():
    """Everything under k even at the tenant: suppressed, every key still accounted for."""
    cells = _release({("2026-01", "A1"): (1, 0.0), ("2026-01", "B1"): (2, 0.0)})
    assert {c.status for c in cells} == {"suppressed"}
    assert {c.key for c in cells} == set(KEYS)


def test_every_key_is_released_rolled_up_or_suppressed_never_dropped():
    """Each key of the public key set appears once at the finest level."""
    truth = {key: (i * 3, 0.0) for i, key in enumerate(KEYS)}
    cells = _release(truth)
    finest = [c for c in cells if c.status not in ("rollup", "total")]
    assert sorted(c.key for c in finest) == sorted(KEYS)


@pytest.mark.parametrize("epsilon, levels", [(1.0, 1), (1.0, 3), (0.5, 3), (2.0, 4)])
def test_epsilon_split_sums_to_the_level(epsilon, levels):
    """The split is fixed before seeing data and adds up to the level's ε."""
    shares = split_epsilon(epsilon, levels)
    assert len(shares) == levels and sum(shares) == pytest.approx(epsilon, abs=1e-12)
    assert shares[0] == (epsilon if levels == 1 else epsilon / 2)


def test_noisy_release_shows_a_value_only_for_units_that_reached_their_threshold():
    """Each released part reached its level's τ, unless fitted under a smaller total.

    (The total is released when the top's own noisy count reaches τ; its value is the combined
    estimate, which may be lower.)
    """
    measured = _laplace(1.0, 3)
    cuts = thresholds(measured, k=5, empty_cell_rate=RATE)
    level_of = {"noisy": 0, "rollup": 1}
    truth = {("2026-01", "A1"): (6, 0.0), ("2026-01", "A2"): (4, 0.0),
             ("2026-01", "B1"): (5, 0.0), ("2026-01", "B2"): (1, 0.0)}
    for _ in range(300):
        cells = _release(truth, measured)
        total = [c.value for c in cells if c.status == "total"]
        fitted = bool(total) and sum(c.value for c in cells if c.value is not None
                                     and c.status != "total") == pytest.approx(max(total[0], 0))
        for cell in cells:
            if cell.value is not None:
                if cell.status != "total":
                    assert cell.value >= cuts[level_of[cell.status]] or fitted
                assert cell.lower <= cell.value <= cell.upper
            else:
                assert cell.status == "suppressed" or cell.status.startswith("rolled_up:")
        assert len([c for c in cells if c.status not in ("rollup", "total")]) == len(KEYS)


def test_parts_fit_under_the_total_which_is_never_raised():
    """Stored parts are non-negative and sum to at most the total; parts + remainder = total."""
    measured = _laplace(1.0, 3)
    truth = {("2026-01", "A1"): (40, 0.0), ("2026-01", "A2"): (2, 0.0),
             ("2026-01", "B1"): (30, 0.0), ("2026-01", "B2"): (1, 0.0)}
    for _ in range(200):
        cells = _release(truth, measured)
        top = [c for c in cells if c.status == "total"]
        parts = [c for c in cells if c.status != "total" and c.value is not None]
        assert all(c.value >= 0 and c.lower <= c.value for c in parts)
        totals = _as_release(cells).totals()[("2026-01",)]
        assert totals.total == pytest.approx(totals.parts + totals.remainder, abs=1e-9)
        assert totals.total >= 0 and totals.remainder >= 0 and totals.parts >= 0
        if top:
            assert sum(c.value for c in parts) <= max(top[0].value, 0.0) + 1e-9
            assert totals.total == max(top[0].value, 0.0) and totals.released
        else:
            assert not totals.released


def test_many_empty_cells_do_not_bias_the_total_upward():
    """Over fresh releases the mean total of 2,000 cells (5 × 100 events) is within 5 SE of 500."""
    measured = _laplace(1.0, 2)
    totals = []
    for _ in range(200):
        cells = _release(FINE_TRUTH, measured, keys=FINE_KEYS, levels=FINE_LEVELS)
        totals.append(_as_release(cells).totals()[("2026-01",)].total)
    error = statistics.fmean(totals) - 500
    standard_error = statistics.stdev(totals) / math.sqrt(len(totals))
    assert abs(error) < 5 * standard_error + 1e-9, (error, standard_error)


def test_empty_cells_get_a_value_of_their_own_at_most_at_the_stated_rate():
    """The share of empty cells released on their own is the exact tail rate, and ≤ α."""
    measured = _laplace(1.0, 2)
    [cut, _] = thresholds(measured, k=5, empty_cell_rate=RATE)
    exact = measured[0].count.tail(cut)
    released = draws = 0
    for _ in range(50):
        cells = _release(FINE_TRUTH, measured, keys=FINE_KEYS, levels=FINE_LEVELS)
        empty = [c for c in cells if c.key not in FINE_TRUTH and c.status != "total"]
        released += sum(c.status == "noisy" for c in empty)
        draws += len(empty)
    share = released / draws
    error = math.sqrt(exact * (1 - exact) / draws)
    assert exact <= RATE and abs(share - exact) < 5 * error, (share, exact)


def test_the_total_interval_covers_the_true_total():
    """The combined total's 95% interval is exact for its estimator: coverage ≈ 95%."""
    measured = _laplace(1.0, 3)
    truth = {("2026-01", "A1"): (40, 0.0), ("2026-01", "B1"): (30, 0.0)}
    hits = runs = 0
    for _ in range(1000):
        top = [c for c in _release(truth, measured) if c.status == "total"]
        if top:
            runs += 1
            hits += top[0].lower <= 70 <= top[0].upper
    assert runs > 900 and hits / runs > 0.95 - 5 * math.sqrt(0.95 * 0.05 / runs)


def test_threshold_is_exact_for_the_discrete_laplace():
    """Scale 2: P(X ≥ t) = q^t / (1 + q), q = e^(-1/2); t_0.02 = 7 (P(X ≥ 6) > 0.02)."""
    mechanism = discrete_laplace(sensitivity=1, epsilon=0.5, confidence=0.95)
    q = math.exp(-0.5)
    assert mechanism.scale == 2.0
    assert mechanism.tail(7) == pytest.approx(q ** 7 / (1 + q), rel=1e-12)
    assert mechanism.tail(6) == pytest.approx(q ** 6 / (1 + q), rel=1e-12)
    assert mechanism.tail(7) <= 0.02 < mechanism.tail(6)
    assert mechanism.threshold(0.02) == 7
    assert mechanism.tail(0) == pytest.approx(1 / (1 + q), rel=1e-12)


def test_threshold_is_exact_for_the_discrete_gaussian():
    """σ from the mechanism: t is the first integer whose upper tail mass is ≤ α."""
    mechanism = discrete_gaussian(sensitivity=3, epsilon=1.0, delta=1e-7, confidence=0.95)
    sigma = mechanism.scale
    mass = {x: math.exp(-x * x / (2 * sigma * sigma)) for x in range(-int(20 * sigma),
                                                                      int(20 * sigma) + 1)}
    norm = sum(mass.values())
    tail = lambda t: sum(m for x, m in mass.items() if x >= t) / norm  # noqa: E731
    t = mechanism.threshold(0.02)
    assert tail(t) <= 0.02 < tail(t - 1)
    assert mechanism.tail(t) == pytest.approx(tail(t), rel=1e-9)


def test_threshold_is_k_without_noise_and_never_below_k():
    """The anonymized level keeps k; a noisy level takes max(k, t_α)."""
    assert thresholds(EXACT, k=5, empty_cell_rate=RATE) == [5, 5, 5]
    measured = _laplace(1.0, 3)  # scales 2, 4, 4
    assert thresholds(measured, k=5, empty_cell_rate=RATE) == [
        measured[0].count.threshold(RATE), *[measured[1].count.threshold(RATE)] * 2]
    assert thresholds(measured, k=50, empty_cell_rate=RATE) == [50, 50, 50]


def test_the_map_legend_states_the_empty_area_rate_rounded_up():
    """The caption promises no less than the release delivers: 1.93% is shown as 2%."""
    from dashboard.components.maps import map_legend
    from privacy._values import Threshold

    noisy = dataclasses.replace(_as_release(()), thresholds=(
        Threshold(level="h3_cell", count=20, empty_cell_rate=0.0193),
        Threshold(level="district", count=59, empty_cell_rate=0.0194)))
    assert noisy.empty_cell_rate == 0.0194
    assert "probability at most 2% (noise alone): each H3 cell" in map_legend(noisy)
    assert "reaches 20" in map_legend(noisy)
    exact = dataclasses.replace(noisy, thresholds=(
        Threshold(level="district", count=5, empty_cell_rate=0.0),))
    assert "never shown as active" in map_legend(exact)
