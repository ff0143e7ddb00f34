"""Where demo events happen: the catalog geography's cells, weighted for vectorised sampling.

Owns the skew of the demo's geography: within a district, cells thin out with ring distance
from the centroid (``(1 + ring) ** -2.5`` with seeded jitter), so the outer cells of light
districts hold a handful of events a month. It draws no events itself and reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import h3
import numpy as np

from data.catalog import Catalog
from data.geo import geography


@dataclass(frozen=True)
class _Geo:
    """Cells of the whole catalog geography, flattened for vectorised sampling."""

    district_codes: np.ndarray  # district index → code
    cell_codes: np.ndarray  # cell index → H3 cell
    cell_district: np.ndarray  # cell index → district index
    # Cells grouped by district; district d's cumulative weights run from d to d + 1, so one
    # ``searchsorted(cum, d + u)`` samples a weighted cell of district d for a whole array.
    cum: np.ndarray


def _geo(catalog: Catalog, seed: int) -> _Geo:
    geo = geography(catalog)
    district_codes = [d.code for d in catalog.districts]
    cells: list[str] = []
    cell_district: list[int] = []
    cum_parts: list[np.ndarray] = []
    # Jitter is seeded so that the skew is part of the deterministic demo.
    rng = np.random.default_rng([seed, 0x6E0])
    for d_index, district in enumerate(catalog.districts):
        district_cells = geo.cells_by_district[district.code]
        if not district_cells:
            continue
        centre = h3.latlng_to_cell(district.lat, district.lng, catalog.h3_resolution)
        rings = np.array([_ring(centre, cell, catalog.cell_ring) for cell in district_cells])
        weights = (1.0 + rings) ** -2.5 * rng.lognormal(0.0, 0.4, len(district_cells))
        cumulative = np.cumsum(weights) / weights.sum()
        cumulative[-1] = 1.0
        cum_parts.append(d_index + cumulative)
        cells.extend(district_cells)
        cell_district.extend([d_index] * len(district_cells))
    return _Geo(
        district_codes=np.array(district_codes, dtype=object),
        cell_codes=np.array(cells, dtype=object),
        cell_district=np.array(cell_district),
        cum=np.concatenate(cum_parts),
    )


def _ring(centre: str, cell: str, ring: int) -> int:
    try:
        return int(h3.grid_distance(centre, cell))
    except h3.H3BaseException:
        # A cell across a pentagon or far away: treat it as the outermost ring.
        return ring + 1


def _sample_cells(geo: _Geo, districts: np.ndarray, u: np.ndarray) -> np.ndarray:
    # Keep d + u strictly below d + 1 so rounding never spills into the next district.
    target = districts + np.minimum(u, 1.0 - 1e-12)
    return np.searchsorted(geo.cum, target, side="right")
