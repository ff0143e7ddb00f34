"""The public key set of a query and the cube's true aggregates under it.

Owns what a release measures: the keys (periods × declared areas × declared categories, after
filters: declared, never read from data, so an empty cell gets noise, not absence), the
geography hierarchy the engine rolls up along, and the one read of ``cube_monthly`` scoped to
the principal's tenant. It never returns a true aggregate to anyone but the gate, which puts
every one through the engine.
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from functools import cache
from datetime import date
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import bindparam, func, select

from data.catalog import Catalog, MetricSpec, ProductSpec
from data.engine import Store
from data.models import CubeMonthly
from data.prepared import Prepared
from data.months import months_between

from privacy._engine import Key, Level
from privacy._values import Query

if TYPE_CHECKING:
    from privacy._plan import Plan

__all__ = ["DIMENSIONS", "GEO_LEVELS", "Aggregates", "Cube", "breakdowns", "unplaced"]

#: Dimensions a query may group by or filter on, with the catalog field (and cube column) of each.
DIMENSIONS = {"state": "state", "district": "district", "h3_cell": "h3_cell",
              "age_bucket": "age_bucket", "gender": "gender", "category": "category"}
#: Geography levels, finest first: a cell under k rolls up to the next level.
GEO_LEVELS = ("h3_cell", "district", "state", "tenant")

_UNPLACED = ":unplaced"


def unplaced(district: str) -> str:
    """The pseudo-cell of a district's events that carry no H3 cell (placed by district only)."""
    return district + _UNPLACED


def breakdowns(query: Query) -> list[str]:
    """The dimensions ``query`` groups by besides the month and its geography."""
    return [d for d in query.group_by[1:] if d not in GEO_LEVELS]


class Aggregates(NamedTuple):
    """The public key set of some periods and the cube's true (count, sum) by key."""

    keys: list[Key]
    truth: dict[Key, tuple[int, float]]


class Cube:
    """The key sets and true aggregates of a tenant's queries (public geography, one store)."""

    def __init__(self, store: Store, catalog: Catalog, geography):
        self._store = store
        self._catalog = catalog
        self._geography = geography
        self._tenant_areas: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def domains(self, tenant: str, product: ProductSpec,
                metric: MetricSpec | None = None) -> dict[str, tuple[str, ...]]:
        """The public key set per dimension for this tenant (and ``metric``'s categories, or the
        product's when no metric is given): declared, never read from data."""
        districts, cells = self._areas(tenant)
        return {
            "state": self._catalog.tenant(tenant).states,
            "district": districts,
            "h3_cell": cells,
            "age_bucket": self._catalog.domains["age_bucket"],
            "gender": self._catalog.domains["gender"],
            "category": self._catalog.domains[(metric.category_domain if metric is not None
                                               else product.category_domain)],
        }

    def _areas(self, tenant: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The tenant's districts and H3 cells (the catalog and geography never change under
        a gate: built once per tenant, not once per release)."""
        areas = self._tenant_areas.get(tenant)
        if areas is None:
            districts = tuple(d.code for d in self._catalog.districts_of(tenant))
            cells = self._geography.cells_by_district
            areas = (districts, tuple(c for d in districts for c in cells[d]))
            self._tenant_areas[tenant] = areas
        return areas

    def aggregate(self, tenant: str, query: Query, plan: Plan, *, months: list[date],
                  session=None) -> Aggregates:
        """The public key set for the periods starting at ``months`` and the cube's true
        aggregates by key."""
        labels = query.periods
        keys_of = [labels[month] for month in months]
        if query.period == "window":  # one period: every month of the window, one label
            months = list(query.months)
            labels = dict.fromkeys(months, keys_of[0])
        dims = breakdowns(query)
        # On an H3 map, events placed only by district (cell "-") count in that district's
        # "unplaced" cell, so they are measured and rolled up like any cell, never dropped.
        placed = plan.geo == "h3_cell"
        filters = dict(query.filters)
        contiguous = _contiguous(months)
        statement = _aggregate_statement(plan.geo, tuple(dims), tuple(filters), contiguous)
        # Tenant lock: the tenant comes from the principal, never from the query.
        params = {"tenant": tenant, "product": plan.product.id, "metric": query.metric,
                  "first": min(months), "last": max(months),
                  **{f"filter_{dimension}": value for dimension, value in filters.items()}}
        if not contiguous:
            params["months"] = list(months)
        truth: dict[Key, tuple[int, float]] = {}
        cells = self._geography.cells
        # the columns' positions: period, [district on an H3 map], [area], breakdowns, sums
        period = 0
        district = 1 if placed else None
        area = None if plan.geo == "tenant" else 1 + placed
        first_dim = 1 + placed + (area is not None)
        breakdown = list(range(first_dim, first_dim + len(dims)))
        n_events, value_sum = first_dim + len(dims), first_dim + len(dims) + 1
        with (nullcontext(session) if session is not None else self._store.read()) as session:
            result = statement.rows(session, params)
            for row in result:
                # the key's area: the tenant, the geography column's code, or on an H3 map
                # the cell (its district's unplaced cell when the cell is not a declared one)
                if area is None:
                    code = tenant
                elif district is None:
                    code = str(row[area])
                else:
                    code = str(row[area])
                    if code not in cells:
                        code = unplaced(str(row[district]))
                key = (labels[row[period]], code, *[str(row[i]) for i in breakdown])
                n, total = truth.get(key, (0, 0.0))
                truth[key] = (n + int(row[n_events]), total + float(row[value_sum] or 0.0))
        return Aggregates(self.keys(tenant, query, plan, keys_of, dims), truth)

    def keys(self, tenant: str, query: Query, plan: Plan, periods: list[str],
             dims: list[str]) -> list[Key]:
        """The public key set: periods × declared areas × declared categories, after filters."""
        domains = self.domains(tenant, plan.product, plan.metric)
        filters = dict(query.filters)
        if plan.geo == "tenant":
            areas: tuple[str, ...] = (tenant,)
        else:
            candidates = domains[plan.geo]
            if plan.geo == "h3_cell" and "h3_cell" not in filters:
                candidates = candidates + tuple(unplaced(d) for d in domains["district"])
            areas = tuple(a for a in candidates if self._area_matches(a, plan.geo, filters))
        dim_values = [((filters[d],) if d in filters else domains[d]) for d in dims]
        return [(period, area, *combo) for period in periods for area in areas
                for combo in itertools.product(*dim_values)]

    def _area_matches(self, code: str, level: str, filters: dict[str, str]) -> bool:
        district = self.district_of(code) if level == "h3_cell" else (
            code if level == "district" else None)
        state = self._geography.state_of[district] if district else code
        if "district" in filters and district is not None and district != filters["district"]:
            return False
        if "h3_cell" in filters and level == "h3_cell" and code != filters["h3_cell"]:
            return False
        return "state" not in filters or state == filters["state"]

    def district_of(self, cell: str) -> str:
        return cell[:-len(_UNPLACED)] if cell.endswith(_UNPLACED) else self._geography.cells[cell]

    def levels(self, tenant: str, plan: Plan) -> list[Level]:
        """The plan's geography levels, finest first, each with how to find a code's parent."""
        parents = {
            "h3_cell": self.district_of,
            "district": lambda district: self._geography.state_of[district],
            "state": lambda _state: tenant,
            "tenant": None,
        }
        return [Level(name=name, parent=parents[name]) for name in plan.levels]

    def chain(self, tenant: str, area: str, geo: str) -> dict[str, str]:
        """An area's code at its own geography level and every coarser one."""
        chain = {geo: area}
        if geo == "h3_cell":
            area = chain["district"] = self.district_of(area)
            geo = "district"
        if geo == "district":
            area = chain["state"] = self._geography.state_of[area]
            geo = "state"
        if geo == "state":
            chain["tenant"] = tenant
        return chain


@cache
def _aggregate_statement(geo: str, dims: tuple[str, ...], filtered: tuple[str, ...],
                         contiguous: bool) -> Prepared:
    """The cube read of one query shape, built once per shape with bound parameters (tenant,
    product, metric, first and last month, ``filter_<dimension>``, and ``months`` when the
    months have gaps) and sent on the driver's cursor (``data.prepared``)."""
    geo_column = None if geo == "tenant" else getattr(CubeMonthly, DIMENSIONS[geo])
    placed_by = [CubeMonthly.district] if geo == "h3_cell" else []
    columns = [CubeMonthly.period] + placed_by + (
        [geo_column] if geo_column is not None else []) + [
        getattr(CubeMonthly, DIMENSIONS[d]) for d in dims]
    statement = (
        select(*columns, func.sum(CubeMonthly.n_events).label("n_events"),
               func.sum(CubeMonthly.value_sum).label("value_sum"))
        .where(CubeMonthly.tenant_id == bindparam("tenant"),
               CubeMonthly.product_id == bindparam("product"),
               CubeMonthly.metric == bindparam("metric"),
               # a range lets the index seek on period (PostgreSQL leaves an IN list of
               # dates to a filter, and SQLite plans range-plus-IN worse than either)
               CubeMonthly.period >= bindparam("first", type_=CubeMonthly.period.type),
               CubeMonthly.period <= bindparam("last", type_=CubeMonthly.period.type))
        .group_by(*columns))
    if not contiguous:  # gaps: keep exactly the months not yet released
        statement = statement.where(CubeMonthly.period.in_(bindparam("months", expanding=True)))
    for dimension in filtered:
        statement = statement.where(getattr(CubeMonthly, DIMENSIONS[dimension])
                                    == bindparam(f"filter_{dimension}"))
    return Prepared(statement, expanding=() if contiguous else ("months",))


def _contiguous(months: list[date]) -> bool:
    return months_between(min(months), max(months)) + 1 == len(months)
