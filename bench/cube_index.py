"""Benchmark: which cube index serves the gate's aggregation (issue 18, migration 0010).

Runs the SQL the gate's ``_aggregate`` issues (``privacy/_gate.py``: tenant, product, metric, a
period range, the query's filters as equalities, grouped by period and the query's
dimensions) for the query shapes the pages and benchmarks send, under alternative index sets
on ``cube_monthly``, created and dropped in turn on the same store, and prints the median ms
per query of each shape under each set (``--repeat`` passes over every query of the shape):

  district+category         one district's 12 months of one vaccine (bench/gate_overhead.py)
  category+age by district  12 months of one vaccine and age group, by district (the same)
  district only             one district's 12 months (a trend opened from the map)
  no filter                 the tenant's 12 months (Trends' default)
  map month by district     one month by district (Map)
  map month by cell         one month by H3 cell (Map)

The sets: the (tenant, product, metric, period) lookup alone (before 0010); the lookup plus
(tenant, product, metric, category, district, period) — what 0010 adds; the lookup plus the
same with district before category; that index instead of the lookup. The store's own
``ix_cube_dims`` (0010) is dropped for the run and created again at the end.

Usage:
  .venv/bin/python bench/cube_index.py --var var/bench-medium [--repeat 5]
  .venv/bin/python bench/cube_index.py --url postgresql+psycopg://postgres@127.0.0.1:5432/db
(a store with demo data and cubes: bench/materialize.py --generate makes one)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date

from _machine import cpu_model  # bench/ is on sys.path when a bench runs
from sqlalchemy import func, select

from data.catalog import load_catalog
from data.config import load_settings
from data.engine import open_store
from data.models import CubeMonthly as C

TENANT, PRODUCT, METRIC = "kigali-east", "health.vaccinations", "doses"
START, END = date(2025, 11, 1), date(2026, 10, 1)  # the demo (as of 2026-11-01)'s last year
LOOKUP = "tenant_id, product_id, metric, period"
DIMS = "tenant_id, product_id, metric, category, district, period"
SETS = {
    "lookup only (before 0010)": [],
    "lookup + (t, p, m, category, district, period) = 0010": [DIMS],
    "lookup + (t, p, m, district, category, period)":
        ["tenant_id, product_id, metric, district, category, period"],
    "(t, p, m, category, district, period) instead of lookup": [DIMS, "-lookup"],
}


def _query(group: list[str], filters: list[tuple[str, str]], start: date = START,
           end: date = END):
    """The gate's aggregation (privacy/_gate.py, _aggregate) for one query."""
    columns = [C.period] + [getattr(C, name) for name in group]
    statement = (select(*columns, func.sum(C.n_events), func.sum(C.value_sum))
                 .where(C.tenant_id == TENANT, C.product_id == PRODUCT, C.metric == METRIC,
                        C.period >= start, C.period <= end)
                 .group_by(*columns))
    for name, value in filters:
        statement = statement.where(getattr(C, name) == value)
    return statement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--var", help="the var directory of an SQLite demo store")
    parser.add_argument("--url", help="a PostgreSQL database URL")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = {"VEIL_DEMO_MODE": "1", "VEIL_VAR_DIR": args.var or "var"}
    if args.url:
        env["VEIL_DATABASE_URL"] = args.url
    settings = load_settings(env)
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    districts = [d.code for d in catalog.districts_of(TENANT)]
    vaccines, ages = catalog.domains["vaccine"], catalog.domains["age_bucket"]
    last = date(2026, 10, 1)
    shapes = {
        "district+category": [_query([], [("district", d), ("category", v)])
                              for d in districts for v in vaccines],
        "category+age by district": [_query(["district"], [("category", v), ("age_bucket", a)])
                                     for v in vaccines for a in ages],
        "district only": [_query([], [("district", d)]) for d in districts],
        "no filter": [_query([], [])],
        "map month by district": [_query(["district"], [], last, last)],
        "map month by cell": [_query(["district", "h3_cell"], [], last, last)],
    }
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX IF EXISTS ix_cube_dims")
    medians: dict[tuple[str, str], float] = {}
    try:
        for name, indexes in SETS.items():
            with store.engine.begin() as connection:
                for i, columns in enumerate(indexes):
                    if columns == "-lookup":
                        connection.exec_driver_sql("DROP INDEX ix_cube_lookup")
                    else:
                        connection.exec_driver_sql(
                            f"CREATE INDEX ix_bench_{i} ON cube_monthly ({columns})")
                if store.dialect == "postgresql":
                    connection.exec_driver_sql("ANALYZE cube_monthly")
            for shape, queries in shapes.items():
                times = []
                with store.engine.connect() as connection:
                    for statement in queries[:3]:  # warm the cache and the plan
                        connection.execute(statement).all()
                    for _ in range(args.repeat):
                        for statement in queries:
                            started = time.perf_counter()
                            connection.execute(statement).all()
                            times.append(time.perf_counter() - started)
                medians[(name, shape)] = statistics.median(times) * 1000
            with store.engine.begin() as connection:
                for i, columns in enumerate(indexes):
                    if columns == "-lookup":
                        connection.exec_driver_sql(
                            f"CREATE INDEX ix_cube_lookup ON cube_monthly ({LOOKUP})")
                    else:
                        connection.exec_driver_sql(f"DROP INDEX ix_bench_{i}")
    finally:
        with store.engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS ix_cube_dims "
                                       f"ON cube_monthly ({DIMS})")
    with store.read() as session:
        rows = session.scalar(select(func.count()).select_from(C))
    print(f"\nmachine: {os.cpu_count()} cores, {cpu_model()}, Python "
          f"{platform.python_version()}; store: {store.dialect}; cube rows {rows:,}; "
          f"{date.today().isoformat()}; 1-min load {os.getloadavg()[0]:.1f}")
    print("median ms per query\n| indexes | " + " | ".join(shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    for name in SETS:
        print(f"| {name} | " + " | ".join(f"{medians[(name, s)]:.2f}" for s in shapes) + " |")
    store.dispose()


if __name__ == "__main__":
    main()
