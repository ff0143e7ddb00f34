"""The catalog's geography and public domains: states, districts, H3 resolution, value lists.

Owns ``State`` and ``District`` read from ``geography.toml`` (codes, centroids, weights, the H3
resolution and cell ring that ``data.geo`` turns into cells) and the public domains read from
``domains.toml`` (age buckets, genders, categories: the only values a dimension may take). It
never touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from data.catalog._toml import _File, _unique


@dataclass(frozen=True)
class State:
    code: str
    name: str
    lat: float
    lng: float


@dataclass(frozen=True)
class District:
    code: str
    name: str
    state: str
    lat: float
    lng: float
    weight: float


def _load_domains(f: _File):
    table = f.get(f.doc, "domain", "", dict)
    domains, titles = {}, {}
    for name, spec in table.items():
        where = f"domain.{name}"
        if not isinstance(spec, dict):
            raise f.fail(where, "must be a table")
        values = f.str_list(spec, "values", where)
        if not values:
            raise f.fail(f"{where}.values", "must not be empty")
        if len(set(values)) != len(values):
            raise f.fail(f"{where}.values", "contains duplicates")
        domains[name] = values
        titles[name] = f.get(spec, "title", where, str)
    for required in ("age_bucket", "gender"):
        if required not in domains:
            raise f.fail(f"domain.{required}", "is required but missing")
    return domains, titles


def _load_geography(f: _File):
    resolution = f.get(f.doc, "h3_resolution", "", int)
    if not 0 <= resolution <= 15:
        raise f.fail("h3_resolution", f"must be between 0 and 15, got {resolution}")
    ring = f.positive(f.doc, "cell_ring", "", int, 0)
    states = []
    for i, spec in enumerate(f.get(f.doc, "state", "", list)):
        where = f"state[{i}]"
        states.append(State(
            code=f.get(spec, "code", where, str), name=f.get(spec, "name", where, str),
            lat=_lat(f, spec, where), lng=_lng(f, spec, where),
        ))
    state_codes = [s.code for s in states]
    _unique(f, state_codes, "state[].code")
    districts = []
    for i, spec in enumerate(f.get(f.doc, "district", "", list)):
        where = f"district[{i}]"
        district = District(
            code=f.get(spec, "code", where, str), name=f.get(spec, "name", where, str),
            state=f.one_of(spec, "state", where, set(state_codes)),
            lat=_lat(f, spec, where), lng=_lng(f, spec, where),
            weight=f.positive(spec, "weight", where, float, 0.0),
        )
        districts.append(district)
    _unique(f, [d.code for d in districts], "district[].code")
    for state in states:
        if not any(d.state == state.code for d in districts):
            raise f.fail("state", f"state {state.code!r} has no districts")
    return tuple(states), tuple(districts), resolution, ring


def _lat(f: _File, spec: dict, where: str) -> float:
    lat = f.get(spec, "lat", where, float)
    if not -90 <= lat <= 90:
        raise f.fail(f"{where}.lat", f"must be a latitude in [-90, 90], got {lat}")
    return lat


def _lng(f: _File, spec: dict, where: str) -> float:
    lng = f.get(spec, "lng", where, float)
    if not -180 <= lng <= 180:
        raise f.fail(f"{where}.lng", f"must be a longitude in [-180, 180], got {lng}")
    return lng
