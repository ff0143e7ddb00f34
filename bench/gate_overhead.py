"""Benchmark: the Trends query through the gate vs the same aggregation run raw (SPEC §5).

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
import os
import platform
import statistics
import time
from datetime import date, datetime

from sqlalchemy import func, select

from data.bootstrap import init_store
from data.catalog import load_catalog
from data.config import load_settings
from data.engine import open_store
from data.models import CubeMonthly, HealthEvent
from privacy import Gate, Principal, Query

NOW = datetime(2026, 11, 15, 12, 0)  # fixed: the demo data ends in October 2026


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _queries(catalog, tenant: str) -> list[Query]:
    """Distinct queries (so each gate call is a fresh release): district × window length."""
    districts = [d.code for d in catalog.districts_of(tenant)]
    out = []
    for months in range(6, 25):
        for district in districts:
            out.append(Query.trailing(product="health.vaccinations", metric="doses",
                                      level="dp_medium", months=months, today=NOW.date(),
                                      filters=(("district", district),)))
    return out


def _raw_cube(store, tenant: str, query: Query) -> dict:
    statement = (
        select(CubeMonthly.period, func.sum(CubeMonthly.n_events))
        .where(CubeMonthly.tenant_id == tenant, CubeMonthly.product_id == query.product,
               CubeMonthly.metric == query.metric, CubeMonthly.period >= query.start,
               CubeMonthly.period <= query.end,
               CubeMonthly.district == dict(query.filters)["district"])
        .group_by(CubeMonthly.period))
    with store.read() as session:
        return dict(session.execute(statement).all())


def _raw_events(store, tenant: str, query: Query) -> dict:
    statement = (
        select(HealthEvent.month, func.count())
        .where(HealthEvent.tenant_id == tenant, HealthEvent.product_id == query.product,
               HealthEvent.event_type == "vaccination", HealthEvent.month >= query.start,
               HealthEvent.month <= query.end,
               HealthEvent.district == dict(query.filters)["district"])
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
    env = dict(os.environ, VEIL_DEMO_MODE="1")
    if args.url:
        env["VEIL_DATABASE_URL"] = args.url
    else:
        env.setdefault("VEIL_VAR_DIR", str(os.path.abspath(f"var/bench-{args.size}")))
    settings = load_settings(env)
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=False)
    if args.generate:
        from data.demo import generate
        from data.materialize import materialize

        started = time.perf_counter()
        report = generate(store, catalog, size=args.size, secret=settings.secret)
        materialize(store, catalog)
        print(f"generated {report.events:,} events in {time.perf_counter() - started:.1f} s")
    with store.read() as session:
        events = session.scalar(select(func.count()).select_from(HealthEvent))
    tenant = "kigali-east"
    gate = Gate(store, catalog, clock=lambda: NOW)
    queries = _queries(catalog, tenant)
    repeat = min(args.repeat, len(queries) // 2)
    fresh, warm = queries[:repeat], queries[repeat:2 * repeat]

    def principal(i: int, phase: str = "timed") -> Principal:
        # ten ε=1 releases per principal stay inside the role's monthly cap of 20, and, as for a
        # real user, the budget account already exists for most calls
        return Principal(subject=f"bench-{phase}-{i // 10}@{tenant}", display_name="bench",
                         role="policy_maker", tenant=tenant, source="demo")

    for i, query in enumerate(warm):  # warm caches and connection pools on both paths
        _raw_cube(store, tenant, query)
        gate.release(principal(i, "warm"), query)
    raw_cube = _timed(lambda i: _raw_cube(store, tenant, fresh[i]), repeat)
    gate_fresh = _timed(lambda i: gate.release(principal(i), fresh[i]), repeat)
    gate_reuse = _timed(lambda i: gate.release(principal(i), fresh[i]), repeat)
    raw_events = _timed(lambda i: _raw_events(store, tenant, fresh[i]), min(repeat, 5))

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:9.2f}"

    print(f"\nmachine: {os.cpu_count()} cores, {_cpu()}, {platform.python_version()}")
    print(f"store: {store.dialect}; health events in store: {events:,}; size={args.size}; "
          f"date {date.today().isoformat()}")
    print("| path | median ms |\n|---|---|")
    print(f"| raw aggregation on the cube | {ms(raw_cube)} |")
    print(f"| gate, fresh release | {ms(gate_fresh)} |")
    print(f"| gate, stored release | {ms(gate_reuse)} |")
    print(f"| raw aggregation on events | {ms(raw_events)} |")
    print(f"ratio gate_fresh / raw_cube = "
          f"{statistics.median(gate_fresh) / statistics.median(raw_cube):.2f}")
    store.dispose()


if __name__ == "__main__":
    main()
