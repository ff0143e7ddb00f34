"""Benchmark: cube materialisation — full rebuilds, incremental month rebuilds (issue 18).

Measures, on one demo store and in one run:
  full      ``materialize(store, catalog)``: every tenant × metric_set product rebuilt from its
            events, events/s (median of ``--repeat`` runs), with the time split by statement
            (the one grouped read of each product's events into the temporary base table, the
            metrics' cube rows selected from the base, the delete of the old cube);
  month     an incremental run after one month of every (tenant, product) is marked changed
            (the month before the latest), ms per (tenant, product) (median of ``--repeat``);
  plan      how a month rebuild reads the events: it must seek the (tenant, product, month)
            index, not scan the table (printed, and the run fails if it does not);
  derived   cube rows per metric, and which metrics were selected from another's base rows
            (a category subset like days_present, a mean beside a count) instead of a second
            read of the events.

Usage (``--workers N``: jobs at once; ``--full-only``: no incremental month runs):
  .venv/bin/python bench/materialize.py --size medium --generate [--repeat 3]       # SQLite
  .venv/bin/python bench/materialize.py --var var/bench-large --repeat 3            # existing
  .venv/bin/python bench/materialize.py --size medium --generate \\
      --url postgresql+psycopg://postgres@127.0.0.1:5432/veil_bench                 # PostgreSQL
``--generate`` replaces the demo tenants' records in the target store: never point it at a store
holding real data.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime

from _machine import cpu_model  # bench/ is on sys.path when a bench runs
from sqlalchemy import delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite

from data.bootstrap import init_store
from data.catalog import load_catalog
from data.config import load_settings
from data.demo import generate
from data.engine import open_store
from data.materialize import _Base, _distinct_counts, materialize
from data.models import VERTICAL_EVENT_MODELS, CubeMonthly, CubePending

#: a fixed as-of day: the same benchmark data whatever the calendar says
DEMO_AS_OF = date(2026, 11, 1)
#: the month an incremental run rebuilds (the demo's data end in October 2026)
MONTH = date(2026, 9, 1)


def _statements(store) -> tuple[Counter, callable]:
    """Seconds per kind of statement the store runs, and a function that detaches the hook."""
    seconds: Counter = Counter()

    def before(conn, cursor, statement, params, context, executemany):
        conn.info["veil_bench_t0"] = time.perf_counter()

    def after(conn, cursor, statement, params, context, executemany):
        text = " ".join(statement.split()).upper()
        kind = ("group events into the base" if text.startswith("INSERT INTO VEIL_CUBE_BASE")
                else "cube rows from the base" if text.startswith("INSERT INTO CUBE_MONTHLY")
                else "delete the old cube" if text.startswith("DELETE FROM CUBE_MONTHLY")
                else "other")
        seconds[kind] += time.perf_counter() - conn.info.pop("veil_bench_t0", time.perf_counter())

    event.listen(store.engine, "before_cursor_execute", before)
    event.listen(store.engine, "after_cursor_execute", after)

    def detach() -> None:
        event.remove(store.engine, "before_cursor_execute", before)
        event.remove(store.engine, "after_cursor_execute", after)

    return seconds, detach


def _month_plan(store, catalog) -> str:
    """The plan of a month rebuild's reads of the events: the grouped read (attendance: the
    largest product) and each distinct metric's (sessions); the run fails unless every one
    seeks the (tenant, product, month) index."""
    postgres = store.dialect == "postgresql"
    tenant = catalog.tenants[0].id
    attendance, sessions = (catalog.product("education.attendance"),
                            catalog.product("education.sessions"))
    reads = [("grouped", _Base(attendance, anti_join=postgres).select(
        tenant=tenant, product=attendance, months=(MONTH,)))]
    reads += [(metric.id, _distinct_counts(tenant=tenant, product=sessions, metric=metric,
                                           anti_join=postgres, months=(MONTH,), after=None))
              for metric in sessions.metrics if metric.measure == "distinct"]
    dialect = postgresql.dialect() if postgres else sqlite.dialect()
    explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
    index = f"ix_{VERTICAL_EVENT_MODELS['education'].__tablename__}_period"
    out = []
    with store.engine.connect() as connection:
        for name, statement in reads:
            sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            lines = [str(row[-1]) for row in connection.exec_driver_sql(explain + sql).all()]
            if not any(index in line for line in lines):
                raise SystemExit(f"a month rebuild's {name} read does not go through {index}:\n"
                                 + "\n".join(lines))
            out.append(f"{name}: " + next(line.strip() for line in lines if index in line))
    return "\n  ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--var", help="the var directory of an SQLite demo store")
    parser.add_argument("--url", help="a PostgreSQL database URL (its demo tenants' data)")
    parser.add_argument("--generate", action="store_true",
                        help="generate the demo data of --size first")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None,
                        help="jobs at once (materialize's default: 2 on PostgreSQL, 1 on SQLite)")
    parser.add_argument("--full-only", action="store_true",
                        help="time full rebuilds only (no incremental month runs)")
    args = parser.parse_args()
    env = {"VEIL_DEMO_MODE": "1",
           "VEIL_VAR_DIR": args.var or tempfile.mkdtemp(prefix="veil-bench-materialize-")}
    if args.url:
        env["VEIL_DATABASE_URL"] = args.url
    settings = load_settings(env)
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=False)
    if args.generate:
        report = generate(store, catalog, size=args.size, as_of=DEMO_AS_OF,
                          secret=settings.secret)
        print(f"generated {report.events:,} events in {report.seconds:.1f} s")
    with store.read() as session:
        events = sum(session.scalar(select(func.count()).select_from(model))
                     for model in VERTICAL_EVENT_MODELS.values())
    pairs = [(t.id, p.id) for t in catalog.tenants for p in catalog.products
             if p.kind == "metric_set"]

    full, loads, split = [], [], Counter()
    months = []
    for attempt in range(args.repeat):
        seconds, detach = _statements(store)
        started = time.perf_counter()
        jobs = materialize(store, catalog, workers=args.workers)
        full.append(time.perf_counter() - started)
        detach()
        split.update({k: v / args.repeat for k, v in seconds.items()})
        loads.append(os.getloadavg()[0])
        if args.full_only:
            continue
        with store.write.begin() as session:
            stamp = datetime.now(UTC).replace(tzinfo=None)
            session.execute(delete(CubePending))
            session.add_all(CubePending(tenant_id=t, product_id=p, month=MONTH,
                                        reason="bench", marked_at=stamp) for t, p in pairs)
        started = time.perf_counter()
        incremental = materialize(store, catalog, incremental=True, workers=args.workers)
        months.append((time.perf_counter() - started) / len(pairs))
        assert all(job.months == (MONTH,) for job in incremental), incremental
    cube_rows = sum(job.rows for job in jobs)
    with store.read() as session:
        per_metric = session.execute(
            select(CubeMonthly.product_id, CubeMonthly.metric, func.count())
            .group_by(CubeMonthly.product_id, CubeMonthly.metric)
            .order_by(CubeMonthly.product_id, CubeMonthly.metric)).all()

    print(f"\nmachine: {os.cpu_count()} cores, {cpu_model()}, Python "
          f"{platform.python_version()}; store: {store.dialect}; {events:,} events; "
          f"{cube_rows:,} cube rows; workers {args.workers or 'default'}; "
          f"{date.today().isoformat()}; 1-min load "
          f"{', '.join(f'{x:.1f}' for x in loads)}")
    print("| path | median | runs |\n|---|---|---|")
    print(f"| full rebuild, all tenants × products | {events / statistics.median(full):,.0f} "
          f"events/s ({statistics.median(full):.2f} s) | "
          f"{', '.join(f'{s:.2f} s' for s in full)} |")
    if months:
        print(f"| incremental rebuild of one month, per (tenant, product) | "
              f"{statistics.median(months) * 1000:.0f} ms | "
              f"{', '.join(f'{s * 1000:.0f}' for s in months)} ms |")
    print("\nfull rebuild, seconds by statement (mean per run):")
    for kind, value in split.most_common():
        print(f"  {kind:<28} {value:7.2f}")
    print(f"\nmonth rebuild reads the events through:\n  {_month_plan(store, catalog)}")
    print("\ncube rows per metric (every metric of a product selected from one grouped read of "
          "its events):")
    for product, metric, rows in per_metric:
        spec = catalog.product(product).metric(metric)
        how = (f"category {spec.category!r} of the base" if spec.category is not None
               else f"{spec.measure} of the base")
        print(f"  {product:<24} {metric:<20} {rows:>9,}  {how}")
    store.dispose()


if __name__ == "__main__":
    main()
