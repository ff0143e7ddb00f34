"""The release engine: roll-up to parent areas, suppression only at the top, exact accounting."""

from __future__ import annotations

import pytest

from privacy._engine import Level, Measured, release_cells, split_epsilon
from privacy._mechanisms import discrete_laplace

# Two states with three districts each; the tenant is "T".
STATE = {"A1": "A", "A2": "A", "A3": "A", "B1": "B", "B2": "B", "B3": "B"}
LEVELS = [Level("district", STATE.__getitem__), Level("state", lambda _s: "T"),
          Level("tenant", None)]
EXACT = [Measured(count=None, total=None)] * 3
KEYS = [("2026-01", d) for d in STATE]


def _release(truth, measured=EXACT, k=5):
    return release_cells(keys=KEYS, truth=truth, levels=LEVELS, measured=measured, k=k,
                         measure="count", bounds=None)


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


def test_noisy_release_never_shows_a_value_under_k():
    """With noise, over many draws, released values are always ≥ k and statuses partition keys."""
    measured = [Measured(count=discrete_laplace(sensitivity=1, epsilon=e, confidence=0.95),
                         total=None) for e in split_epsilon(1.0, 3)]
    truth = {("2026-01", "A1"): (6, 0.0), ("2026-01", "A2"): (4, 0.0),
             ("2026-01", "B1"): (5, 0.0), ("2026-01", "B2"): (1, 0.0)}
    for _ in range(300):
        cells = _release(truth, measured)
        for cell in cells:
            if cell.value is not None:
                assert cell.value >= 5 and cell.lower <= cell.value <= cell.upper
            else:
                assert cell.status == "suppressed" or cell.status.startswith("rolled_up:")
        assert len([c for c in cells if c.status not in ("rollup", "total")]) == len(KEYS)


def test_map_totals_are_non_negative_and_children_sum_to_the_total():
    """Post-processing: released parts plus the small-area remainder equal the tenant total."""
    from datetime import datetime

    from privacy import Epsilon, Query, Release

    measured = [Measured(count=discrete_laplace(sensitivity=1, epsilon=e, confidence=0.95),
                         total=None) for e in split_epsilon(1.0, 3)]
    truth = {("2026-01", "A1"): (40, 0.0), ("2026-01", "A2"): (2, 0.0),
             ("2026-01", "B1"): (30, 0.0), ("2026-01", "B2"): (1, 0.0)}
    for _ in range(200):
        cells = tuple(_release(truth, measured))
        release = Release(
            id="r", tenant="T", product="p", query=Query.trailing(
                product="p", metric="m", level="dp_medium", months=1,
                today=datetime(2026, 2, 15).date()),
            cells=cells, epsilon=Epsilon(1.0), charged=Epsilon(1.0), reused=False,
            mechanism="m", k=5, confidence=0.95, privacy_unit="u", policy_version="v",
            data_version=1, digest="d", created_at=datetime(2026, 2, 15))
        totals = release.totals()[("2026-01",)]
        assert totals.total == totals.parts + totals.remainder
        assert totals.total >= 0 and totals.remainder >= 0
        top = [c for c in cells if c.status == "total"]
        if top and top[0].value >= totals.parts:
            assert totals.total == top[0].value  # a consistent measured total is kept as is
