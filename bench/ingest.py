"""Benchmark: ingestion throughput (SPEC §5: ≥ 50,000 events/s into the embedded store).

Measures, on a fresh store and one synthetic JSONL file:
  rules      validation + PII defence + de-identification only (no store), events/s;
  pipeline   ``ingest_file``: read + the rules + consent, duplicate and contribution-bound
             checks + bulk insert + quarantine + batch report, committed per chunk, events/s;
  raw        the same de-identified rows bulk-inserted with no checks at all (executemany on
             SQLite, COPY on PostgreSQL), same chunking, order, page cache and commits, into an
             identical fresh table, events/s. Only the inserts and commits are timed: reading
             and the rules are left out, so raw is what the store alone can take.
The ratio pipeline / raw is what everything the pipeline does costs over a bare bulk insert.
On PostgreSQL each line also gives the server's CPU per row (its backends for the benchmark's
database, read from /proc): with the storing process's and the worker's, that is the CPU one
event costs in all, which a loaded machine slows down but does not change.
The machine's 1-minute load average is printed with each measurement: on a shared machine
other jobs take CPU from both, so compare the two within a run.

The file has one event per subject per day or two, 0.5% of rows with a PII problem, 0.5% with
PII smuggled into metadata (a base64 e-mail address), 0.5% repeated event ids and 0.5% from
subjects without consent, so every path is exercised.

Usage:
  .venv/bin/python bench/ingest.py [--events 1000000] [--chunk-rows 50000] [--repeat 3]
      [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
With --postgres the benchmark runs in a throwaway database on that server (dropped after).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path

import h3
from _machine import cpu_model  # bench/ is on sys.path when a bench runs
from _stores import fresh_store
from sqlalchemy import func, insert, select

from data.catalog import Catalog, load_catalog
from data.engine import Store
from data.geo import geography
from data.ingest import DEFAULT_CHUNK_ROWS, Event, Rules, ingest_file
from data.bulk import bulk_insert as _bulk_insert
from data.ingest._tuning import _BulkSettings
from data.ingest._rules import EVENT_COLUMNS
from data.ingest._sources import FileSource
from data.models import HealthEvent, SubjectConsent
from data.pseudonym import pseudonym

TENANT, PRODUCT = "kigali-east", "health.vaccinations"
SECRET = "bench-secret-0123456789abcdef"
GRANTED_AT = datetime(2024, 1, 1)
_PLUS2 = timezone(timedelta(hours=2))  # half the file carries a local offset, not Z


def write_events(path: Path, catalog: Catalog, *, events: int, seed: int = 11) -> int:
    """A JSONL file of ``events`` rows; returns the number of subjects."""
    rng = random.Random(seed)
    cells = [cell for cell, district in geography(catalog).cells.items()
             if district in {d.code for d in catalog.districts_of(TENANT)}]
    centres = [h3.cell_to_latlng(cell) for cell in cells]
    subjects = max(1, events // 8)
    vaccines = ["bcg", "polio", "dtp", "measles", "hpv"]
    genders = ["female", "male", "female", "male", "other", "unknown"]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with path.open("w") as handle:
        for i in range(events):
            lat, lng = centres[rng.randrange(len(centres))]
            subject = rng.randrange(subjects)
            moment = start + timedelta(seconds=rng.randrange(365 * 86_400))
            row = {
                "event_id": f"ev-{i:09d}",
                "subject_id": f"bench-person-{subject}",
                "event_type": "vaccination",
                "timestamp": moment.astimezone(
                    UTC if i % 2 else _PLUS2).isoformat(timespec="seconds"),
                "age": rng.randrange(0, 90),
                "gender": genders[i % len(genders)],
                "category": vaccines[i % len(vaccines)],
                "lat": round(lat + rng.uniform(-0.002, 0.002), 6),
                "lng": round(lng + rng.uniform(-0.002, 0.002), 6),
                "metadata": {"device": "tablet-7", "app_version": "2.3.1"},
            }
            roll = i % 200
            if roll == 17:
                row["category"] = "+250 788 123 456"  # PII in a kept field
            elif roll == 41 and i > 0:
                row["event_id"] = f"ev-{i - 1:09d}"  # a repeated event id
            elif roll == 83:
                row["subject_id"] = f"no-consent-{i}"
            elif roll == 131:  # base64 of "person-<i>@example.org", in metadata
                row["metadata"] = {"device": "tablet-7", "ref": base64.b64encode(
                    f"person-{i}@example.org".encode()).decode()}
            handle.write(json.dumps(row))
            handle.write("\n")
    return subjects


def grant_all(store: Store, subjects: int) -> None:
    rows = [{"tenant_id": TENANT, "pseudonym": pseudonym(SECRET, f"bench-person-{k}"),
             "vertical": "health", "status": "granted", "changed_at": GRANTED_AT}
            for k in range(subjects)]
    with store.write.begin() as session:
        for start in range(0, len(rows), 50_000):
            session.execute(insert(SubjectConsent), rows[start:start + 50_000])


def bench_rules(catalog: Catalog, path: Path) -> tuple[int, float]:
    rules = Rules(catalog, tenant=TENANT, product=PRODUCT, secret=SECRET)
    started = time.perf_counter()
    n = 0
    cpu = time.process_time()
    for _, row in FileSource(path).rows():
        rules.check(row)
        n += 1
    print(f"  (rules: {(time.process_time() - cpu) / max(n, 1) * 1e6:.1f} µs CPU/row)")
    return n, time.perf_counter() - started


def server_cpu(store: Store) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving ``store``'s database (Linux /proc;
    the server runs on this machine in the benchmarks). Empty for SQLite."""
    if store.dialect != "postgresql":
        return {}
    with store.engine.connect() as connection:
        pids = connection.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()").scalars().all()
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def bench_raw(store: Store, catalog: Catalog, path: Path, chunk_rows: int) -> tuple[int, float]:
    """The same de-identified rows (deduplicated, as stored) bulk-inserted with no checks."""
    rules = Rules(catalog, tenant=TENANT, product=PRODUCT, secret=SECRET)
    rows = FileSource(path).rows()
    seen: set[str] = set()
    bulk = _BulkSettings(store)  # the page cache and checkpoints the pipeline uses, to be fair
    timed = 0.0
    stored = 0
    server_before = server_cpu(store)
    while chunk := list(islice(rows, chunk_rows)):
        batch = []
        for _, row in chunk:
            event = rules.check(row)
            if isinstance(event, Event) and event.row[0] not in seen:
                seen.add(event.row[0])
                batch.append(event.row)
        batch.sort(key=lambda row: (row[4], row[5]))  # the order the pipeline writes them in
        started = time.perf_counter()
        with store.write.begin() as session:
            bulk.begin(session)
            _bulk_insert(session, HealthEvent.__tablename__, EVENT_COLUMNS, batch)
        bulk.committed()
        timed += time.perf_counter() - started
        stored += len(batch)
    started = time.perf_counter()
    bulk.restore()
    if store.dialect == "sqlite":  # what the pipeline's last commit does: the WAL left over
        raw = store.engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            raw.close()
    timed += time.perf_counter() - started
    server = cpu_used(server_before, server_cpu(store))
    if server:
        print(f"  (raw: server {server / max(stored, 1) * 1e6:.1f} µs CPU/row)")
    return stored, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                        help=f"rows per committed chunk (default {DEFAULT_CHUNK_ROWS}, as "
                             f"`veil ingest`)")
    parser.add_argument("--postgres", help="base URL of a PostgreSQL server (throwaway db)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pipeline and raw runs, alternating (the machine's speed drifts: "
                             "the medians of several runs compare better than one)")
    args = parser.parse_args()
    catalog = load_catalog(Path(__file__).resolve().parents[1] / "catalog")
    with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp:
        work = Path(tmp)
        path = work / "events.jsonl"
        started = time.perf_counter()
        subjects = write_events(path, catalog, events=args.events)
        print(f"file: {args.events:,} events, {subjects:,} subjects, "
              f"{path.stat().st_size / 1e6:.0f} MB, written in "
              f"{time.perf_counter() - started:.1f} s")
        n, seconds = bench_rules(catalog, path)
        print(f"rules only      {n:>10,} rows  {seconds:7.2f} s  {n / seconds:>10,.0f} rows/s"
              f"  load {_load()}")
        ratios, rates = [], []
        for attempt in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"-- run {attempt} of {args.repeat}")
            pipeline_rate, backend = bench_pipeline(args, catalog, work / f"pipeline-{attempt}",
                                                    path, subjects)
            with fresh_store(args.postgres, work / f"raw-{attempt}", secret=SECRET) as store:
                raw_rows, raw_seconds = bench_raw(store, catalog, path, args.chunk_rows)
            # Each attempt's stores go before the next: a few GB of old files left to the page
            # cache and writeback would tax the later attempts.
            for name in (f"pipeline-{attempt}", f"raw-{attempt}"):
                shutil.rmtree(work / name, ignore_errors=True)
            raw_rate = raw_rows / raw_seconds
            print(f"raw bulk insert {raw_rows:>10,} rows  {raw_seconds:7.2f} s  "
                  f"{raw_rate:>10,.0f} rows/s  load {_load()}")
            rates.append(pipeline_rate)
            ratios.append(pipeline_rate / raw_rate)
        summary = (f"ratio pipeline/raw: {statistics.median(ratios):.2f}" if len(ratios) == 1
                   else f"pipeline median {statistics.median(rates):,.0f} rows/s (runs: "
                        f"{', '.join(f'{r:,.0f}' for r in rates)}); ratio pipeline/raw median "
                        f"{statistics.median(ratios):.2f} (runs: "
                        f"{', '.join(f'{r:.2f}' for r in ratios)})")
        print(f"{summary}  ({backend}, chunks of {args.chunk_rows:,}; {os.cpu_count()} CPUs, "
              f"{cpu_model()}, Python {platform.python_version()})")


def bench_pipeline(args, catalog: Catalog, var_dir: Path, path: Path,
                   subjects: int) -> tuple[float, str]:
    """``ingest_file`` into a fresh store whose subjects all consent; prints and returns the
    rate (rows/s) and the store's dialect."""
    with fresh_store(args.postgres, var_dir, secret=SECRET) as store:
        grant_all(store, subjects)
        server_before = server_cpu(store)
        before = os.times()
        report = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT,
                             secret=SECRET, chunk_rows=args.chunk_rows)
        after = os.times()
        server = cpu_used(server_before, server_cpu(store))
        cpu = after.user + after.system - before.user - before.system
        worker_cpu = (after.children_user + after.children_system
                      - before.children_user - before.children_system)
        with store.read() as session:
            stored = session.scalar(select(func.count()).select_from(HealthEvent))
        backend = store.dialect
    rate = report.rows / report.seconds
    print(f"pipeline        {report.rows:>10,} rows  {report.seconds:7.2f} s  "
          f"{rate:>10,.0f} rows/s  µs CPU/row: {cpu / report.rows * 1e6:.1f} "
          f"in this process, {worker_cpu / report.rows * 1e6:.1f} in the worker"
          f"{f', {server / report.rows * 1e6:.1f} in the server' if server else ''}  "
          f"(accepted {report.accepted:,}, duplicate "
          f"{report.duplicate:,}, bounded {report.bounded:,}, rejected {report.rejected:,};"
          f" stored {stored:,})  load {_load()}")
    return rate, backend


def _load() -> str:
    """The 1-minute load average: other jobs on the machine slow every measurement."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
