"""Benchmark: a safe export of a large operational list (SPEC D6).

On a fresh store holding ``--rows`` registrations of one tenant, a case worker exports the whole
list (social.registrations, every status) through ``gate.exports``: request, then the worker
(``run_worker(once=True)``) streams the records in chunks through the case worker's field
treatments (two identifiers re-keyed with HMAC, household size masked), writes the file under a
temporary name, hashes it, renames it and records it. Measured:

  export   request → done: wall time, rows/s, CPU per row, peak memory of the process;
  raw      the same SELECT streamed with the same chunks into csv.writer with no treatment,
           no progress updates and no hash — what a bare dump costs on the same store.

The ratio export / raw is what the gate's treatment, progress and delivery guarantees cost.

Usage:
  .venv/bin/python bench/export.py [--rows 1000000] [--format csv|parquet] [--chunk-rows 50000]
      [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
With --postgres the benchmark runs in a throwaway database on that server (dropped after).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

from _machine import cpu_model  # bench/ is on sys.path when a bench runs
from _stores import fresh_store
from sqlalchemy import select

from data.catalog import Catalog, load_catalog
from data.bulk import bulk_insert
from data.engine import Store
from data.models import Registration
from privacy import Gate, Principal, RecordQuery

TENANT = "kigali-east"
SECRET = "bench-secret-0123456789abcdef"
COLUMNS = ("registration_id", "tenant_id", "pseudonym", "registered_at", "district",
           "agent_code", "status", "birth_date", "gender", "household_size")


def registrations(catalog: Catalog, rows: int) -> Iterator[tuple]:
    districts = [d.code for d in catalog.districts_of(TENANT)]
    start = datetime(2024, 1, 1)
    for i in range(rows):
        district = districts[i % len(districts)]
        yield (f"reg-{i:09d}", TENANT, f"{(i * 2654435761) % (1 << 128):032x}",
               start + timedelta(minutes=15 * (i % 70_000)), district,
               f"{district[:3]}-AG{i % 40:02d}", "unverified" if i % 3 else "verified",
               date(1950, 1, 1) + timedelta(days=(i * 37) % 25_000),
               ("female", "male")[i % 2], 1 + i % 9)


def load(store: Store, catalog: Catalog, rows: int) -> float:
    started = time.perf_counter()
    with store.write.begin() as session:
        bulk_insert(session, "registrations", COLUMNS, registrations(catalog, rows))
    if store.dialect == "postgresql":
        with store.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE registrations")
            connection.commit()
    return time.perf_counter() - started


def bench_export(gate: Gate, directory: Path, *, file_format: str, chunk_rows: int):
    principal = Principal(subject="case.worker@kigali-east.demo", display_name="bench",
                          role="case_worker", tenant=TENANT, source="demo")
    before, cpu = time.perf_counter(), os.times()
    requested = gate.exports.request(principal, RecordQuery(product="social.registrations"),
                                     purpose="data_quality_review", format=file_format)
    processed = gate.exports.run_worker(directory=directory, once=True, chunk_rows=chunk_rows)
    seconds = time.perf_counter() - before
    after = os.times()
    status = gate.exports.status(principal, requested.id)
    if processed != 1 or status.status != "done":
        raise SystemExit(f"the export did not finish: {status.status} {status.error}")
    return status, seconds, after.user + after.system - cpu.user - cpu.system


def bench_raw(store: Store, path: Path, chunk_rows: int) -> tuple[int, float, float]:
    columns = [getattr(Registration, c) for c in COLUMNS if c != "tenant_id"]
    statement = (select(*columns).where(Registration.tenant_id == TENANT)
                 .order_by(Registration.registration_id)
                 .execution_options(yield_per=chunk_rows))
    started, cpu, rows = time.perf_counter(), os.times(), 0
    with store.read() as session, path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        for partition in session.execute(statement).partitions():
            writer.writerows(partition)
            rows += len(partition)
    after = os.times()
    return rows, time.perf_counter() - started, after.user + after.system - cpu.user - cpu.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--postgres", help="base URL of a PostgreSQL server (throwaway db)")
    args = parser.parse_args()
    catalog = load_catalog(Path(__file__).resolve().parents[1] / "catalog")
    with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp, \
            fresh_store(args.postgres, Path(tmp) / "var", secret=SECRET) as store:
        work = Path(tmp)
        seconds = load(store, catalog, args.rows)
        print(f"store: {store.dialect}, {args.rows:,} registrations loaded in {seconds:.1f} s"
              f"  load {_load()}")
        rss_before = _peak_rss_mb()
        gate = Gate(store, catalog, secret=SECRET)
        status, seconds, cpu = bench_export(gate, work / "exports", file_format=args.format,
                                            chunk_rows=args.chunk_rows)
        rate = status.row_count / seconds
        print(f"export ({args.format}) {status.row_count:>10,} rows  {seconds:7.2f} s  "
              f"{rate:>9,.0f} rows/s  {cpu / status.row_count * 1e6:.1f} µs CPU/row  "
              f"{status.size_bytes / 1e6:.0f} MB  peak RSS {_peak_rss_mb():.0f} MB "
              f"(before {rss_before:.0f} MB)  load {_load()}")
        print(f"  masking: {status.masking}")
        raw_rows, raw_seconds, raw_cpu = bench_raw(store, work / "raw.csv", args.chunk_rows)
        raw_rate = raw_rows / raw_seconds
        print(f"raw dump (csv)  {raw_rows:>10,} rows  {raw_seconds:7.2f} s  "
              f"{raw_rate:>9,.0f} rows/s  {raw_cpu / raw_rows * 1e6:.1f} µs CPU/row  "
              f"load {_load()}")
        # CPU time is the steadier figure on a shared machine; wall time is what a user waits.
        print(f"ratio export/raw: wall {seconds / raw_seconds:.2f}, CPU in this process "
              f"{cpu / raw_cpu:.2f}  ({store.dialect}, chunks "
              f"of {args.chunk_rows:,}; {os.cpu_count()} CPUs, {cpu_model()}, Python "
              f"{platform.python_version()}, {datetime.now():%Y-%m-%d})")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load() -> str:
    """The 1-minute load average: other jobs on the machine slow every measurement."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
