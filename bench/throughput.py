"""Benchmark: fresh releases per second through the gate with concurrent viewers (issue 18).

Each call releases a query no one released before (12 months of one district's doses of one
vaccine for one age group and gender: pairwise disjoint, so nothing is reused or derived) under
a principal of its own thread (ten releases per principal, inside the role's allowance); the
data months' lifetime budget is lifted, as a benchmark of speed may. For each thread count it
prints releases per second over the whole run, the median and 95th percentile latency, and the
median Python CPU a release took on its thread (``time.thread_time``): one process serves every
thread, so that CPU, not the database, is what caps the rate on two cores (issue 18).
Target (issue 18): ≥ 150 fresh releases/s with 8 threads on PostgreSQL on 2 cores, p95 < 100 ms.

Usage:
  VEIL_DEMO_MODE=1 .venv/bin/python bench/throughput.py [--url URL] [--size small]
      [--threads 1,8] [--calls 240]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import statistics
import threading
import time
import uuid
from datetime import date

from _demo import bench_store  # bench/ is on sys.path when a bench runs
from _machine import cpu_model
from gate_overhead import NOW

from data.catalog import PeriodPolicy
from data.models import ProductVersion
from privacy import Gate, Principal, Query

TENANT = "kigali-east"


def _queries(catalog) -> list[Query]:
    """Every (district, vaccine, age group, gender) of the tenant: disjoint 12-month series."""
    return [Query.trailing(product="health.vaccinations", metric="doses", level="dp_medium",
                           months=12, today=NOW.date(),
                           filters=(("district", district), ("category", vaccine),
                                    ("age_bucket", age), ("gender", gender)))
            for district, vaccine, age, gender in itertools.product(
                [d.code for d in catalog.districts_of(TENANT)], catalog.domains["vaccine"],
                catalog.domains["age_bucket"], catalog.domains["gender"])]


def _run(gate: Gate, queries: list[Query], *, threads: int,
         calls: int) -> tuple[float, list, list]:
    """(seconds, latencies, CPU times) of ``calls`` fresh releases spread over ``threads``
    threads; a release's CPU time is its thread's (``time.thread_time``): the Python process's
    work for it, which caps the rate of one process whatever the database does."""
    todo = iter(queries[:calls])
    lock, latencies, cpu, errors = threading.Lock(), [], [], []
    run = uuid.uuid4().hex[:8]

    def work(index: int) -> None:
        done = 0
        while True:
            with lock:
                query = next(todo, None)
            if query is None:
                return
            principal = Principal(subject=f"tp-{run}-{index}-{done // 10}@{TENANT}",
                                  display_name="bench", role="policy_maker", tenant=TENANT,
                                  source="demo")
            started, thread_started = time.perf_counter(), time.thread_time()
            try:
                release = gate.release(principal, query)
                assert not release.reused, "a benchmark call reused a stored release"
            except Exception as exc:  # noqa: BLE001 — reported, and the run is failed below
                errors.append(exc)
                return
            with lock:
                latencies.append(time.perf_counter() - started)
                cpu.append(time.thread_time() - thread_started)
            done += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise SystemExit(f"{len(errors)} releases failed, the first: {errors[0]!r}")
    return time.perf_counter() - started, latencies, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("VEIL_DATABASE_URL", ""))
    parser.add_argument("--size", default="small", choices=("small", "medium", "large"))
    parser.add_argument("--generate", action="store_true",
                        help="generate demo data of --size first (otherwise use what is there)")
    parser.add_argument("--threads", default="1,8")
    parser.add_argument("--calls", type=int, default=240, help="fresh releases per thread count")
    args = parser.parse_args()
    catalog, store = bench_store(url=args.url, size=args.size, generate_first=args.generate)
    lifted = dataclasses.replace(catalog.policy, periods=PeriodPolicy(epsilon=1e6))
    gate = Gate(store, dataclasses.replace(catalog, policy=lifted), clock=lambda: NOW)
    queries = _queries(catalog)
    counts = [int(n) for n in args.threads.split(",")]
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, {platform.python_version()}; "
          f"store {store.dialect}; {len(queries)} disjoint queries; date {date.today()}; "
          f"load {os.getloadavg()[0]:.1f}")
    print("| threads | fresh releases/s | median ms | p95 ms | Python CPU ms per release "
          "(median) |\n|---|---|---|---|---|")
    for threads in counts:
        with store.write.begin() as session:  # a new data version: nothing stored is reusable
            session.get(ProductVersion, (TENANT, "health.vaccinations")).data_version += 1
        gate.release(Principal(subject=f"warm-{uuid.uuid4().hex[:6]}@{TENANT}",
                               display_name="bench", role="policy_maker", tenant=TENANT,
                               source="demo"), queries[-1])  # pools and caches warm
        seconds, latencies, cpu = _run(gate, queries, threads=threads,
                                       calls=min(args.calls, len(queries) - 1))
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        print(f"| {threads} | {len(latencies) / seconds:.1f} | "
              f"{statistics.median(latencies) * 1000:.1f} | {p95 * 1000:.1f} | "
              f"{statistics.median(cpu) * 1000:.2f} |")
    store.dispose()


if __name__ == "__main__":
    main()
