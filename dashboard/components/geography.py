"""The public geography under a map: outlines, place names and the view fitted to a tenant.

Owns turning the catalog's own geography (districts and states, each the union of its H3
cells) into shapes deck.gl draws, and the opening view. Everything here is public and the same
for every role: it never reads a release, private data or anything over the network (there are
no tiles and no basemap — the outlines *are* the map).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import h3

__all__ = ["MAP_HEIGHT", "MAP_WIDTH", "Bounds", "MapView", "TenantGeography", "area_outlines",
           "cell_bounds", "fitted_view", "place_labels", "project", "tenant_geography"]

#: deck.gl's world is 512 pixels wide at zoom 0 (Web Mercator)
_TILE = 512
#: the map's drawing area the opening view is fitted to: the narrowest the page gives it at a
#: common laptop width, so the whole tenant shows there and has a margin on wider screens
MAP_WIDTH, MAP_HEIGHT = 560, 520
_LABEL_SIZE = 12
_STATE_LABEL_SIZE = 13
_CHAR_WIDTH = 7.0   # px per character of a 12 px sans-serif label, a generous average


@dataclass(frozen=True)
class Bounds:
    """A latitude/longitude box (degrees)."""

    south: float
    west: float
    north: float
    east: float

    def __post_init__(self):
        if self.south > self.north or self.west > self.east:
            raise ValueError(f"bounds must have south <= north and west <= east, got {self}")

    def contains(self, lat: float, lng: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lng <= self.east


@dataclass(frozen=True)
class MapView:
    """Where the map opens: its centre and deck.gl zoom."""

    latitude: float
    longitude: float
    zoom: float


@dataclass(frozen=True)
class TenantGeography:
    """What a tenant's map draws beneath its values: outlines, names and the opening view."""

    district_outlines: tuple[dict, ...]
    state_outlines: tuple[dict, ...]
    labels: tuple[dict, ...]         # district names
    state_labels: tuple[dict, ...]   # state names, placed clear of the districts'
    bounds: Bounds
    view: MapView


def area_outlines(cells_by_area: Mapping[str, Iterable[str]], *,
                  names: Mapping[str, str]) -> tuple[dict, ...]:
    """One outline per polygon of each area's cells: ``{"code", "name", "polygon"}``, where
    ``polygon`` is a list of rings of ``[lng, lat]`` (the outer ring first, then holes)."""
    rows = []
    for code, cells in cells_by_area.items():
        cells = list(cells)
        if not cells:
            continue
        shape = h3.cells_to_geo(cells)
        polygons = ([shape["coordinates"]] if shape["type"] == "Polygon"
                    else shape["coordinates"])
        for polygon in polygons:
            rows.append({"code": code, "name": names.get(code, code),
                         "polygon": [[[lng, lat] for lng, lat in ring] for ring in polygon]})
    return tuple(rows)


def cell_bounds(cells: Iterable[str]) -> Bounds:
    """The smallest box holding every vertex of ``cells``."""
    points = [point for cell in cells for point in h3.cell_to_boundary(cell)]
    if not points:
        raise ValueError("cannot bound an empty set of cells")
    lats, lngs = [p[0] for p in points], [p[1] for p in points]
    return Bounds(south=min(lats), west=min(lngs), north=max(lats), east=max(lngs))


def _mercator_y(lat: float) -> float:
    """Web Mercator y as a fraction of the world's height (0 at the top)."""
    phi = math.radians(lat)
    return 0.5 - math.log(math.tan(math.pi / 4 + phi / 2)) / (2 * math.pi)


def _latitude(y: float) -> float:
    return math.degrees(2 * math.atan(math.exp((0.5 - y) * 2 * math.pi)) - math.pi / 2)


def fitted_view(bounds: Bounds, *, width: int = MAP_WIDTH, height: int = MAP_HEIGHT,
                padding: int = 28) -> MapView:
    """The view that shows all of ``bounds`` in a ``width`` × ``height`` pixel map, with
    ``padding`` pixels to spare on every side (Web Mercator, as deck.gl draws it)."""
    if width <= 2 * padding or height <= 2 * padding:
        raise ValueError(f"a {width}×{height} map has no room inside a {padding} px padding")
    span_x = max((bounds.east - bounds.west) / 360, 1e-9)
    top, bottom = _mercator_y(bounds.north), _mercator_y(bounds.south)
    span_y = max(bottom - top, 1e-9)
    scale = min((width - 2 * padding) / span_x, (height - 2 * padding) / span_y)
    return MapView(latitude=_latitude((top + bottom) / 2),
                   longitude=(bounds.west + bounds.east) / 2,
                   zoom=round(math.log2(scale / _TILE), 2))


def project(view: MapView, lat: float, lng: float, *, width: int = MAP_WIDTH,
            height: int = MAP_HEIGHT) -> tuple[float, float]:
    """The pixel (x right, y down) of ``lat``/``lng`` in a map opened at ``view``."""
    world = _TILE * 2 ** view.zoom
    x = (lng - view.longitude) / 360 * world + width / 2
    y = (_mercator_y(lat) - _mercator_y(view.latitude)) * world + height / 2
    return x, y


def _label_box(label: dict, view: MapView, *, width: int,
               height: int) -> tuple[float, float, float, float]:
    """The pixel box a label covers at ``view`` (a generous estimate of its text's width)."""
    x, y = project(view, label["position"][1], label["position"][0], width=width, height=height)
    x, y = x + label["offset"][0], y + label["offset"][1]
    w, h = len(label["name"]) * label["size"] * _CHAR_WIDTH / 12 + 8, label["size"] + 6
    return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def place_labels(places: Iterable[tuple[str, str, float, float]], *, view: MapView,
                 size: int = _LABEL_SIZE, around: Iterable[dict] = (), width: int = MAP_WIDTH,
                 height: int = MAP_HEIGHT) -> tuple[dict, ...]:
    """A label per ``(code, name, lat, lng)`` at that point, nudged (in pixels) above, below or
    beside it where it would cover a label placed before it, or one of ``around``, at the
    opening view: close districts (Kigali's three) stay readable. Each label is
    ``{"code", "name", "position", "offset", "size"}``."""
    placed = [_label_box(label, view, width=width, height=height) for label in around]
    labels = []
    for code, name, lat, lng in places:
        w, h = len(name) * size * _CHAR_WIDTH / 12 + 8, size + 6
        # nearest first: on the point, above, below, beside, then further out
        candidates = [(0, 0), (0, -h), (0, h), (w / 2 + 6, 0), (-w / 2 - 6, 0)] + [
            (dx, dy * h) for dy in (-2, 2, -3, 3, -4, 4) for dx in (0, -w / 2, w / 2)]

        def label_at(offset) -> dict:
            return {"code": code, "name": name, "position": [lng, lat],
                    "offset": [round(offset[0], 1), round(offset[1], 1)], "size": size}

        def overlap(offset) -> float:
            box = _label_box(label_at(offset), view, width=width, height=height)
            return sum(max(0.0, min(box[2], b[2]) - max(box[0], b[0]))
                       * max(0.0, min(box[3], b[3]) - max(box[1], b[1])) for b in placed)

        # the first free spot in order of preference, else the least covered one
        best = next((c for c in candidates if overlap(c) == 0), min(candidates, key=overlap))
        labels.append(label_at(best))
        placed.append(_label_box(labels[-1], view, width=width, height=height))
    return tuple(labels)


def tenant_geography(catalog, geography, tenant: str) -> TenantGeography:
    """The outlines of ``tenant``'s districts and states, its districts' names, and a view
    fitted to every one of its cells (``catalog`` and ``geography`` as the gate exposes them)."""
    districts = catalog.districts_of(tenant)
    names = {s.code: s.name for s in catalog.states} | {d.code: d.name for d in districts}
    by_district = {d.code: geography.cells_by_district[d.code] for d in districts}
    by_state: dict[str, list[str]] = {}
    for d in districts:
        by_state.setdefault(d.state, []).extend(by_district[d.code])
    bounds = cell_bounds(cell for cells in by_district.values() for cell in cells)
    view = fitted_view(bounds)
    labels = place_labels(((d.code, d.name, d.lat, d.lng) for d in districts), view=view)
    states = [s for s in catalog.states if s.code in by_state]
    return TenantGeography(
        district_outlines=area_outlines(by_district, names=names),
        state_outlines=area_outlines(by_state, names=names),
        labels=labels,
        state_labels=place_labels(((s.code, s.name.upper(), s.lat, s.lng) for s in states),
                                  view=view, size=_STATE_LABEL_SIZE, around=labels),
        bounds=bounds, view=view)
