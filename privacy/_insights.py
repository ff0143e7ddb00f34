"""Cross-vertical insights: two released district series joined, correlated, with uncertainty.

Owns post-processing only: it takes two releases that already passed the gate and never
touches the store. A district joins the comparison when both releases show it with its own
value in every period of the window — one period when the series are window totals, as the
insights page asks for (rolled-up and suppressed districts have no value of their own and are
left out, and counted as such). The interval of the correlation comes from a
bootstrap that resamples districts and redraws each value within its released noise, its spread
centred on the estimate — a simulation on public numbers, not a release, so NumPy's generator
is fine here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from data.errors import QueryRefused

from privacy._values import Release

__all__ = ["Insight", "InsightPoint", "correlate"]

_BOOTSTRAP = 2000


@dataclass(frozen=True)
class InsightPoint:
    district: str
    x: float
    x_sd: float
    y: float
    y_sd: float


@dataclass(frozen=True)
class Insight:
    x: Release
    y: Release
    points: tuple[InsightPoint, ...]
    excluded: tuple[str, ...]           # districts without their own value in both releases
    r: float | None                     # Pearson correlation across districts
    r_lower: float | None
    r_upper: float | None
    confidence: float


def _by_district(release: Release) -> tuple[dict[str, tuple[float, float]], set[str]]:
    """Window sums per district with their noise variance; districts lacking a period excluded
    (a window release has one period per district: the whole window)."""
    months = set(release.query.periods.values())
    sums: dict[str, list[tuple[float, float]]] = {}
    lacking: set[str] = set()
    for cell in release.cells:
        if cell.status in ("rollup", "total"):
            continue
        district = cell.key[1]
        if cell.value is None:
            lacking.add(district)
            continue
        # the noise's sd as released; a release stored before it was recorded had the
        # interval value ± z·sd (its upper side never clamped)
        sd = cell.sd if cell.sd is not None else (
            (cell.upper - cell.value) / 1.959963984540054 if cell.upper is not None else 0.0)
        sums.setdefault(district, []).append((cell.value, sd * sd))
    out = {}
    for district, values in sums.items():
        if district in lacking or len(values) != len(months):
            lacking.add(district)
            continue
        out[district] = (sum(v for v, _ in values), sum(var for _, var in values))
    return out, lacking


def correlate(x: Release, y: Release) -> Insight:
    if x.query.group_by != ("month", "district") or y.query.group_by != ("month", "district"):
        raise QueryRefused("cross-vertical insights join two district series")
    if x.query.months != y.query.months or x.query.period != y.query.period:
        raise QueryRefused("both series must cover the same months, by the same period")
    xs, x_lacking = _by_district(x)
    ys, y_lacking = _by_district(y)
    joined = sorted(set(xs) & set(ys))
    points = tuple(InsightPoint(district=d, x=xs[d][0], x_sd=float(np.sqrt(xs[d][1])),
                                y=ys[d][0], y_sd=float(np.sqrt(ys[d][1]))) for d in joined)
    excluded = tuple(sorted((x_lacking | y_lacking | set(xs) ^ set(ys)) - set(joined)))
    confidence = x.confidence
    if len(points) < 3:
        return Insight(x=x, y=y, points=points, excluded=excluded, r=None, r_lower=None,
                       r_upper=None, confidence=confidence)
    px = np.array([p.x for p in points])
    py = np.array([p.y for p in points])
    r = _pearson(px, py)
    seed = int(hashlib.sha256((x.digest + y.digest).encode()).hexdigest()[:16], 16)
    rng = np.random.default_rng(seed)  # same releases → same interval on every view
    sx = np.array([p.x_sd for p in points])
    sy = np.array([p.y_sd for p in points])
    draws = []
    for _ in range(_BOOTSTRAP):
        pick = rng.integers(0, len(points), len(points))
        bx = px[pick] + rng.normal(0.0, sx[pick])
        by = py[pick] + rng.normal(0.0, sy[pick])
        value = _pearson(bx, by)
        if value is not None:
            draws.append(value)
    if not draws:
        return Insight(x=x, y=y, points=points, excluded=excluded, r=r, r_lower=None,
                       r_upper=None, confidence=confidence)
    # Redrawing released values within their noise adds noise a second time, which pulls the
    # bootstrap's correlations towards zero; so take the bootstrap's spread, centred on the
    # estimate (deviations from its median), rather than its raw percentiles.
    alpha = (1 - confidence) / 2
    deviations = np.asarray(draws) - float(np.median(draws))
    low, high = np.quantile(deviations, [alpha, 1 - alpha])
    return Insight(x=x, y=y, points=points, excluded=excluded, r=r,
                   r_lower=max(r + float(low), -1.0), r_upper=min(r + float(high), 1.0),
                   confidence=confidence)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])
