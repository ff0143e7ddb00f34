"""The data's clock: how far a tenant's data of a product reaches (``DataClock``).

Owns reading it and keeping it while no data version changes. Operational metadata only (the
cube's first and last months, the newest event's day, freshness breaches): it never reads or
returns an aggregate value, and spends nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select

from data.catalog import Catalog, ProductSpec
from data.engine import Store
from data.freshness import freshness, newest_events
from data.models import CubeMonthly, ProductVersion

from privacy._values import DataClock, add_months

__all__ = ["DataClocks"]

#: how long a data clock is reused while no data version changes (its SLO breaches may lag)
_CLOCK_TTL = timedelta(seconds=60)


class DataClocks:
    """The data clocks of a gate, kept by (tenant, product, data versions)."""

    def __init__(self, store: Store, catalog: Catalog, *, clock: Callable[[], datetime]):
        self._store = store
        self._catalog = catalog
        self._clock = clock
        #: data clocks by (tenant, product, data versions), with when they were read
        self._cache: dict[tuple, tuple[datetime, DataClock]] = {}

    def read(self, tenant: str, spec: ProductSpec, *, max_months: int) -> DataClock:
        """The clock of ``spec`` in ``tenant``; ``max_months`` is the gate's window limit."""
        now = self._clock()
        with self._store.read() as session:
            # What releases can read changes only with a data version, so the clock is kept
            # for a minute per (tenant, product, every data version of the tenant): reading the
            # newest events scans a month of each product's rows (≈30 ms at 1M events).
            versions = tuple(session.execute(
                select(ProductVersion.product_id, ProductVersion.data_version)
                .where(ProductVersion.tenant_id == tenant)
                .order_by(ProductVersion.product_id)).all())
            key = (tenant, spec.id, versions)
            cached = self._cache.get(key)
            if cached is not None and timedelta(0) <= now - cached[0] < _CLOCK_TTL:
                return cached[1]
            [fresh] = freshness(session, self._catalog, tenant=tenant, product=spec.id, now=now)
            # The months releases can read are the cube's; the days are the record store's.
            extent = session.execute(
                select(func.min(CubeMonthly.period).label("first"),
                       func.max(CubeMonthly.period).label("last"))
                .where(CubeMonthly.tenant_id == tenant,
                       CubeMonthly.product_id == spec.id)).one()
            # The tenant's data has reached the newest day any of its sources reached: a
            # product with no event on that month's last days (a weekend, a quiet source) still
            # has that month complete, as long as its own data reaches into the month.
            reached = newest_events(session, self._catalog, tenant=tenant)
        if extent.first is None:
            return DataClock(tenant=tenant, product=spec.id, as_of=None, newest=None,
                             first_month=None, max_months=max_months, breaches=fresh.breaches)
        # Events newer than the cube are not data a release can read yet (the freshness
        # breaches say they wait for `veil materialize`); a cube whose raw events are gone
        # counts as covering its last month.
        cube_end = add_months(extent.last, 1) - timedelta(days=1)
        event = reached.get(spec.id)
        newest = min(event.date(), cube_end) if event is not None else cube_end
        as_of = max([newest, *(min(e.date(), cube_end) if p == spec.id else e.date()
                               for p, e in reached.items())])
        clock = DataClock(tenant=tenant, product=spec.id, as_of=as_of, newest=newest,
                          first_month=extent.first, max_months=max_months,
                          breaches=fresh.breaches)
        if len(self._cache) > 10_000:  # bound memory: old data versions' entries
            self._cache.clear()
        self._cache[key] = (now, clock)
        return clock
