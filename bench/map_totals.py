"""Benchmark: are map totals unbiased, and how often is an empty area drawn as active?

For one demo tenant and month at dp_medium (ε = 1), three views of the same metric — the
H3-cell map, the district map and the whole-tenant series (group by month only) — are released
``--runs`` times afresh. Each run goes through the gate's own plan (mechanisms, ε split, k,
thresholds) and engine (``Gate._engine``, what ``Gate.release`` calls), on the true aggregates
read once from the cube (``Gate._aggregate``), so no budget cap stops the repetitions.

Per view: the true tenant total; the released total's mean, bias, the bias's standard error and
the RMSE (on the stored estimate, before ``Release.totals`` shows a negative total as 0, which
never happened here and is counted); the interval's mean half-width and how often it covered the
truth; the share of truly empty cells released with a value of their own, against the exact rate
the release states. A month with no events at all is measured too.

Usage:
  VEIL_DEMO_MODE=1 .venv/bin/python bench/map_totals.py [--size small|medium] [--runs 1000]
      [--tenant kigali-east] [--month 2026-06] [--var DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from datetime import date, datetime

from _demo import demo_store
from _machine import cpu_model  # bench/ is on sys.path when a bench runs

from privacy import Epsilon, Gate, Principal, Query, Release

NOW = datetime(2026, 11, 15, 12, 0)
#: a month before any demo data: every cell is empty
EMPTY_MONTH = date(2020, 1, 1)
VIEWS = (("H3 cells", ("month", "h3_cell")), ("districts", ("month", "district")),
         ("tenant series", ("month",)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=("small", "medium", "large"))
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tenant", default="kigali-east")
    parser.add_argument("--month", default="2026-06", help="YYYY-MM, inside the demo window")
    parser.add_argument("--var", help="an existing demo store's var directory (else generate)")
    args = parser.parse_args()
    if args.runs < 200:
        parser.error(f"--runs must be >= 200, got {args.runs}")
    catalog, store, loaded = demo_store(size=args.size, var=args.var, prefix="veil-map-totals-")
    gate = Gate(store, catalog, clock=lambda: NOW)
    month = date.fromisoformat(args.month + "-01")
    principal = Principal(subject=f"bench@{args.tenant}", display_name="bench",
                          role="policy_maker", tenant=args.tenant, source="demo")
    print(f"{args.size} demo, tenant {args.tenant}, health.vaccinations/doses, dp_medium (ε = 1),"
          f" {args.runs} fresh releases per row; α = {catalog.policy.empty_cell_rate:g}")
    print()
    print("| view | month | cells | thresholds τ | true total | mean released total | bias | "
          "SE of bias | bias / SE | RMSE | mean 95% half-width | interval coverage | "
          "total shown | empty cells | empty shown as active | stated rate |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    timed = time.perf_counter()
    for title, group_by in VIEWS:
        for when in (month, EMPTY_MONTH):
            print(_row(gate, principal, title, group_by, when, args.runs))
    store.dispose()
    print()
    print(f"Machine: {os.cpu_count()} × {cpu_model()}, Python {platform.python_version()}; "
          f"{date.today().isoformat()}; data {loaded:.0f} s, releases "
          f"{time.perf_counter() - timed:.0f} s")


def _row(gate: Gate, principal: Principal, title: str, group_by: tuple[str, ...], month: date,
         runs: int) -> str:
    query = Query(product="health.vaccinations", metric="doses", level="dp_medium",
                  start=month, end=month, group_by=group_by)
    plan = gate._plan(principal, query)
    keys, truth = gate._aggregate(principal, query, plan, months=[month])
    true_total = sum(truth.get(key, (0, 0.0))[0] for key in keys)
    empty = [key for key in keys if truth.get(key, (0, 0.0))[0] == 0]
    empty_keys = set(empty)
    thresholds = gate._thresholds(plan.product, query, k=plan.k,
                                  level_epsilon=plan.level_epsilon)
    estimates, halves, covered, shown_empty, clamped = [], [], 0, 0, 0
    for _ in range(runs):
        cells = gate._engine(principal, plan, keys=keys, truth=truth)
        top = [c for c in cells if c.status == "total" or (
            c.key[1] == principal.tenant and c.value is not None)]
        shown_empty += sum(c.status == "noisy" for c in cells if c.key in empty_keys)
        if not top:
            continue
        estimates.append(top[0].value)
        halves.append((top[0].upper - top[0].lower) / 2)
        covered += top[0].lower <= true_total <= top[0].upper
        shown = _release(query, cells, principal.tenant).totals()[(month.isoformat()[:7],)]
        clamped += shown.total != top[0].value
    label = f"{month:%Y-%m}" + (" (empty)" if true_total == 0 else "")
    cuts = "/".join(str(t.count) for t in thresholds)
    rate = thresholds[0].empty_cell_rate
    empties = (f"{len(empty):,} | {shown_empty / (len(empty) * runs):.2%} | {rate:.2%}"
               if empty else "0 | – | –")
    if true_total == 0 or len(estimates) < 2:
        # An empty month's total is shown only when the top's own noisy count reaches τ, so a
        # shown one is high by construction; what matters is how rarely it is shown.
        return (f"| {title} | {label} | {len(keys):,} | {cuts} | {true_total:,} | – | – | – | – |"
                f" – | – | – | {len(estimates) / runs:.1%} | {empties} |")
    mean = statistics.fmean(estimates)
    bias = mean - true_total
    error = statistics.stdev(estimates) / math.sqrt(len(estimates))
    rmse = math.sqrt(statistics.fmean((e - true_total) ** 2 for e in estimates))
    note = f" ({clamped} shown as 0)" if clamped else ""
    return (f"| {title} | {label} | {len(keys):,} | {cuts} | {true_total:,} | {mean:,.1f}{note} |"
            f" {bias:+.2f} | {error:.2f} | {bias / error:+.2f} | {rmse:.1f} |"
            f" {statistics.fmean(halves):.1f} | {covered / len(estimates):.1%} |"
            f" {len(estimates) / runs:.1%} | {empties} |")


def _release(query: Query, cells, tenant: str) -> Release:
    """A release object around fresh cells, for ``Release.totals`` (nothing is stored)."""
    return Release(id="bench", tenant=tenant, product=query.product, query=query,
                   cells=tuple(cells), epsilon=Epsilon(1.0), charged=Epsilon(0.0),
                   reused=False, mechanism="bench", k=5, confidence=0.95, privacy_unit="bench",
                   policy_version="bench", data_version=0, digest="bench",
                   created_at=NOW)


if __name__ == "__main__":
    main()
