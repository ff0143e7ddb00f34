"""Geography derived from the catalog: H3 cells per district, and the area hierarchy.

Owns the deterministic mapping cell → district → state. A district's cells are the H3 cells
within ``cell_ring`` rings of its centroid; a cell claimed by several districts goes to the
nearest centroid (ties broken by district code), so the mapping is a partition and stable.
No database access and no private data here: geography is public.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import h3

from data.catalog import Catalog

__all__ = ["Geography", "geography"]


@dataclass(frozen=True)
class Geography:
    catalog: Catalog

    @cached_property
    def cells(self) -> dict[str, str]:
        """Every H3 cell of the geography → its district code."""
        res = self.catalog.h3_resolution
        best: dict[str, tuple[float, str]] = {}
        for district in self.catalog.districts:
            centre = h3.latlng_to_cell(district.lat, district.lng, res)
            for cell in h3.grid_disk(centre, self.catalog.cell_ring):
                lat, lng = h3.cell_to_latlng(cell)
                distance = math.hypot(lat - district.lat, (lng - district.lng) * math.cos(
                    math.radians(lat)))
                candidate = (distance, district.code)
                if cell not in best or candidate < best[cell]:
                    best[cell] = candidate
        return {cell: code for cell, (_, code) in sorted(best.items())}

    @cached_property
    def cells_by_district(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {d.code: [] for d in self.catalog.districts}
        for cell, district in self.cells.items():
            out[district].append(cell)
        return {code: tuple(sorted(cells)) for code, cells in out.items()}

    @cached_property
    def state_of(self) -> dict[str, str]:
        return {d.code: d.state for d in self.catalog.districts}


def geography(catalog: Catalog) -> Geography:
    return Geography(catalog)
