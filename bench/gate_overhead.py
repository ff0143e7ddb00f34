"""Benchmark: the Trends query through the gate vs the same aggregation run raw (SPEC §5).

Each query is a district's monthly doses of one vaccine over 12 months; the timed queries are
pairwise disjoint, so every gate call is a fresh release (no stored period can be reused).

Measures, on one store and in one run:
  raw_cube   the exact aggregation the gate issues (cube_monthly, one tenant, product, metric,
             window, area filter), run directly through SQLAlchemy Core;
  gate_fresh gate.release for a query never seen before: authorisation, budget reserve,
             the same aggregation, OpenDP noise, k-threshold, release stored, budget committed;
  gate_reuse gate.release for a query already released (the stored-release path);
  raw_events the same monthly counts from the raw event table (what the cube saves us).
The ratio gate_fresh / raw_cube is the gate's overhead (target ≤ 1.2 at 10M events).

Usage:
  VEIL_DEMO_MODE=1 .venv/bin/python bench/gate_overhead.py [--url URL] [--size large]
      [--generate] [--repeat 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
import uuid
from datetime import date, datetime

from _demo import bench_store  # bench/ is on sys.path when a bench runs
from _machine import cpu_model
from sqlalchemy import func, select

from data.catalog import PeriodPolicy
from data.models import CubeMonthly, HealthEvent, ProductVersion
from privacy import Gate, Principal, Query

NOW = datetime(2026, 11, 15, 12, 0)  # fixed: the demo data ends in October 2026


def _queries(catalog, tenant: str, dimension: str) -> list[Query]:
    """Distinct, non-overlapping queries: every call is a fresh release with new periods
    (a window overlapping an earlier one would reuse its months at no cost)."""
    districts = [d.code for d in catalog.districts_of(tenant)]
    values = catalog.domains["vaccine" if dimension == "category" else dimension]
    return [Query.trailing(product="health.vaccinations", metric="doses", level="dp_medium",
                           months=12, today=NOW.date(),
                           filters=(("district", district), (dimension, value)))
            for value in values for district in districts]


def _district_queries(catalog) -> list[Query]:
    """12 months × every district of the tenant, one vaccine and age group each (disjoint)."""
    return [Query.trailing(product="health.vaccinations", metric="doses", level="dp_medium",
                           months=12, today=NOW.date(),
                           filters=(("category", vaccine), ("age_bucket", age)))
            for vaccine in catalog.domains["vaccine"] for age in catalog.domains["age_bucket"]]


def _raw_district(store, tenant: str, query: Query) -> dict:
    statement = (
        select(CubeMonthly.period, CubeMonthly.district, func.sum(CubeMonthly.n_events),
               func.sum(CubeMonthly.value_sum))
        .where(CubeMonthly.tenant_id == tenant, CubeMonthly.metric == query.metric,
               *_where(query, CubeMonthly, CubeMonthly.period))
        .group_by(CubeMonthly.period, CubeMonthly.district))
    with store.read() as session:
        return {(p, d): n for p, d, n, _ in session.execute(statement).all()}


def _noise_throughput() -> float:
    from privacy._mechanisms import discrete_laplace

    mechanism = discrete_laplace(sensitivity=3, epsilon=1.0, confidence=0.95)
    counts = list(range(200_000))
    started = time.perf_counter()
    mechanism(counts)
    return len(counts) / (time.perf_counter() - started)


def _where(query: Query, model, month_column):
    conditions = [model.product_id == query.product, month_column >= query.start,
                  month_column <= query.end]
    for dimension, value in query.filters:
        conditions.append(getattr(model, dimension) == value)
    return conditions


def _raw_cube(store, tenant: str, query: Query) -> dict:
    statement = (
        select(CubeMonthly.period, func.sum(CubeMonthly.n_events), func.sum(CubeMonthly.value_sum))
        .where(CubeMonthly.tenant_id == tenant, CubeMonthly.metric == query.metric,
               *_where(query, CubeMonthly, CubeMonthly.period))
        .group_by(CubeMonthly.period))
    with store.read() as session:
        return dict((period, n) for period, n, _ in session.execute(statement).all())


def _raw_events(store, tenant: str, query: Query) -> dict:
    statement = (
        select(HealthEvent.month, func.count())
        .where(HealthEvent.tenant_id == tenant, HealthEvent.event_type == "vaccination",
               *_where(query, HealthEvent, HealthEvent.month))
        .group_by(HealthEvent.month))
    with store.read() as session:
        return dict(session.execute(statement).all())


def _timed(fn, repeat: int) -> list[float]:
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("VEIL_DATABASE_URL", ""))
    parser.add_argument("--size", default="large", choices=("small", "medium", "large"))
    parser.add_argument("--generate", action="store_true",
                        help="generate demo data of --size first (otherwise use what is there)")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    catalog, store = bench_store(url=args.url, size=args.size, generate_first=args.generate)
    with store.read() as session:
        events = session.scalar(select(func.count()).select_from(HealthEvent))
    with store.write.begin() as session:
        # A new data version, as after `veil materialize`: releases stored by earlier runs of
        # this benchmark cannot be reused, so every timed gate call is a fresh release.
        version = session.get(ProductVersion, ("kigali-east", "health.vaccinations"))
        version.data_version += 1
    tenant = "kigali-east"
    # speed, not privacy: every timed call must be a fresh release of the same months, so the
    # months' shared lifetime budget (issue 16) is lifted here, as a benchmark may
    lifted = dataclasses.replace(catalog.policy, periods=PeriodPolicy(epsilon=1e6))
    gate = Gate(store, dataclasses.replace(catalog, policy=lifted), clock=lambda: NOW)
    fresh = _queries(catalog, tenant, "category")
    warm = _queries(catalog, tenant, "age_bucket")
    repeat = min(args.repeat, len(fresh), len(warm))

    run = uuid.uuid4().hex[:8]  # the ledger persists in the store: fresh principals per run

    def principal(i: int, phase: str = "timed") -> Principal:
        # ten ε=1 releases per principal stay inside the role's monthly cap of 20, and, as for a
        # real user, the budget account already exists for most calls
        return Principal(subject=f"bench-{run}-{phase}-{i // 10}@{tenant}", display_name="bench",
                         role="policy_maker", tenant=tenant, source="demo")

    for i, query in enumerate(warm[:repeat]):  # warm caches and connection pools on both paths
        _raw_cube(store, tenant, query)
        gate.release(principal(i, "warm"), query)
    raw_cube = _timed(lambda i: _raw_cube(store, tenant, fresh[i]), repeat)
    gate_fresh = _timed(lambda i: gate.release(principal(i), fresh[i]), repeat)
    gate_reuse = _timed(lambda i: gate.release(principal(i), fresh[i]), repeat)
    raw_events = _timed(lambda i: _raw_events(store, tenant, fresh[i]), min(repeat, 5))
    by_district = _district_queries(catalog)
    n_district = min(repeat, len(by_district) // 2)
    district_warm, district_fresh = by_district[n_district:], by_district[:n_district]
    for i, query in enumerate(district_warm[:5]):
        grouped = dataclasses.replace(query, group_by=("month", "district"))
        _raw_district(store, tenant, grouped)
        gate.release(principal(i, "dwarm"), grouped)
    district_fresh = [dataclasses.replace(q, group_by=("month", "district"))
                      for q in district_fresh]
    raw_district = _timed(lambda i: _raw_district(store, tenant, district_fresh[i]), n_district)
    gate_district = _timed(lambda i: gate.release(principal(i, "district"), district_fresh[i]),
                           n_district)
    noise_rate = _noise_throughput()

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:9.2f}"

    print(f"\nmachine: {os.cpu_count()} cores, {cpu_model()}, {platform.python_version()}")
    print(f"store: {store.dialect}; health events in store: {events:,}; size={args.size}; "
          f"date {date.today().isoformat()}")
    print("| path | median ms |\n|---|---|")
    print(f"| raw aggregation on the cube | {ms(raw_cube)} |")
    print(f"| gate, fresh release | {ms(gate_fresh)} |")
    print(f"| gate, stored release | {ms(gate_reuse)} |")
    print(f"| raw aggregation on events | {ms(raw_events)} |")
    print(f"ratio gate_fresh / raw_cube = "
          f"{statistics.median(gate_fresh) / statistics.median(raw_cube):.2f}")
    print(f"\n12 months × district (roll-up district → state → tenant), {n_district} queries:")
    print("| path | median ms |\n|---|---|")
    print(f"| raw aggregation on the cube | {ms(raw_district)} |")
    print(f"| gate, fresh release | {ms(gate_district)} |")
    print(f"ratio gate / raw = "
          f"{statistics.median(gate_district) / statistics.median(raw_district):.2f}")
    print(f"\nnoise throughput (OpenDP discrete Laplace): {noise_rate:,.0f} cells/s")
    store.dispose()


if __name__ == "__main__":
    main()
