"""Benchmark: what each index of an event table costs a bulk load on PostgreSQL (issue 18).

Raw COPY of de-identified event rows — no rules, no checks — into a fresh ``health_events`` as
Veil's migrations create it, and into the same table with one of its three indexes dropped, or
all of them: the primary key on the event key (random 32-hex keyed hashes), the
``(tenant, pseudonym, day)`` index the contribution bounds read, the ``(tenant, product,
month)`` index month rebuilds read. Rows are shaped like ingested ones (keyed-hash event ids and
pseudonyms, 15-minute times over a year, one subject per 8 events), written in chunks of
``--chunk-rows`` sorted by (pseudonym, time) as the pipeline writes them, one commit per chunk,
through the same ``data.bulk`` COPY the pipeline uses. The variants alternate within each
repeat, so a machine that drifts drifts for all of them.

It prints rows/s and the server's CPU per row (its backends, from /proc). The full-schema figure
is the ceiling of any ingestion into that schema on the machine: ``bench/ingest.py``'s pipeline
adds the rules, the checks and the storing process to it.

Usage:
  .venv/bin/python bench/copy_indexes.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres
      [--events 1000000] [--chunk-rows 50000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from _machine import cpu_model  # bench/ is on sys.path when a bench runs
from _stores import fresh_store
from ingest import cpu_used, server_cpu
from sqlalchemy import text

from data.bulk import bulk_insert
from data.ingest._rules import EVENT_COLUMNS
from data.models import HealthEvent

TABLE = HealthEvent.__tablename__
DROPS = {
    "the primary key": f"ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_pkey",
    "(tenant, pseudonym, day)": f"DROP INDEX ix_{TABLE}_subject_day",
    "(tenant, product, month)": f"DROP INDEX ix_{TABLE}_period",
}
VARIANTS = {
    "all three indexes (Veil's schema)": (),
    "without the primary key": ("the primary key",),
    "without (tenant, pseudonym, day)": ("(tenant, pseudonym, day)",),
    "without (tenant, product, month)": ("(tenant, product, month)",),
    "no index at all": tuple(DROPS),
}


def rows(events: int, seed: int = 11) -> list[tuple]:
    """``events`` rows in ``EVENT_COLUMNS`` order, shaped like ingested ones."""
    rng = random.Random(seed)
    subjects = [hashlib.sha256(b"subject %d" % i).hexdigest()[:32]
                for i in range(max(1, events // 8))]
    start = datetime(2025, 1, 1)
    out = []
    for i in range(events):
        moment = start + timedelta(minutes=15 * rng.randrange(365 * 96))
        out.append((hashlib.blake2b(b"event %d" % i, digest_size=16).hexdigest(),
                    "kigali-east", "health.vaccinations", "vaccination",
                    subjects[rng.randrange(len(subjects))],
                    moment.strftime("%Y-%m-%d %H:%M:%S"), moment.strftime("%Y-%m-%d"),
                    moment.strftime("%Y-%m-01"), "876a6a2c9ffffff", "RW-KG-GA",
                    rng.choice(("0-4", "5-17", "18-49", "50+")),
                    rng.choice(("female", "male")), rng.choice(("bcg", "polio", "measles")),
                    None))
    return out


def load(postgres: str, work: Path, data: list[tuple], chunk_rows: int,
         dropped: tuple[str, ...]) -> tuple[float, float]:
    """(rows/s, server µs CPU per row) of COPYing ``data`` into a fresh store's event table
    without the ``dropped`` indexes."""
    with fresh_store(postgres, work, secret="bench-secret-0123456789abcdef") as store:
        with store.write.begin() as session:
            for name in dropped:
                session.execute(text(DROPS[name]))
        before = server_cpu(store)
        started = time.perf_counter()
        for at in range(0, len(data), chunk_rows):
            chunk = sorted(data[at:at + chunk_rows], key=lambda row: (row[4], row[5]))
            with store.write.begin() as session:
                bulk_insert(session, TABLE, EVENT_COLUMNS, chunk)
        seconds = time.perf_counter() - started
        cpu = cpu_used(before, server_cpu(store))
    return len(data) / seconds, cpu / len(data) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True,
                        help="base URL of a PostgreSQL server (a throwaway database per load)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    data = rows(args.events)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="veil-copy-") as work:
        for attempt in range(args.repeat):
            for name, dropped in VARIANTS.items():
                rate, cpu = load(args.postgres, Path(work) / f"{attempt}", data,
                                 args.chunk_rows, dropped)
                results[name].append((rate, cpu))
                print(f"  run {attempt + 1}: {name}: {rate:,.0f} rows/s, server {cpu:.1f} µs "
                      f"CPU/row, load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\n{args.events:,} rows, chunks of {args.chunk_rows:,}; {os.cpu_count()} CPUs, "
          f"{cpu_model()}, Python {platform.python_version()}")
    print("| table | rows/s (median) | server µs CPU/row (median) |\n|---|---|---|")
    for name, measured in results.items():
        print(f"| {name} | {statistics.median(r for r, _ in measured):,.0f} | "
              f"{statistics.median(c for _, c in measured):.1f} |")


if __name__ == "__main__":
    main()
