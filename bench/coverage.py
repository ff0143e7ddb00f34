"""Benchmark: do the stated intervals cover the truth, for the cells that are shown?

Releases three demo views ``--runs`` times afresh through the gate's own plan (mechanisms, ε
split, k, thresholds) and engine (``Gate._engine``, what ``Gate.release`` calls), on true
aggregates read once from the cube (``Gate._aggregate``), so no budget cap stops the
repetitions, and checks every *shown* cell's interval against its truth:

- leaf: a cell shown at the asked level (H3 cell or district) with its own noisy count;
- rolled-up parent: a parent area shown for the small children merged into it;
- total: the whole tenant's month (the estimate combining the top's count and every leaf's);
- near-k: leaf and parent cells whose *true* count is under their level's threshold τ, shown
  only because noise lifted them over it (the class a plain ``noisy ± h`` under-covers);
- mean: every shown cell of a mean metric (leaf, parent or total);
- mean, near-k: those whose true count is under τ. Their intervals mostly span the metric's
  whole range (0–100): a sum's noise dwarfs a few values, and no mean lies outside its bounds,
  so they cover more than the level by necessity.

Beside each class: the level the release states (``Release.interval_level``: the achieved
level of the discrete widths, ≥ the policy's 95%).

Usage:
  VEIL_DEMO_MODE=1 .venv/bin/python bench/coverage.py [--size small] [--runs 400] [--var DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections import defaultdict
from datetime import date, datetime

from _demo import demo_store
from _machine import cpu_model  # bench/ is on sys.path when a bench runs

from privacy import Gate, Principal, Query

NOW = datetime(2026, 11, 15, 12, 0)
START, END = date(2025, 11, 1), date(2026, 10, 1)
#: (title, product, metric, level, group by)
VIEWS = (
    ("vaccinations by H3 cell (Laplace)", "health.vaccinations", "doses", "dp_medium",
     ("month", "h3_cell")),
    ("attendance by district (Gaussian)", "education.attendance", "attendance_records",
     "dp_medium", ("month", "district")),
    ("nutrition score by district (mean)", "health.nutrition", "nutrition_score", "dp_medium",
     ("month", "district")),
    ("nutrition score by H3 cell (mean)", "health.nutrition", "nutrition_score", "dp_medium",
     ("month", "h3_cell")),
)
CLASSES = ("leaf", "rolled-up parent", "total", "near-k", "mean", "mean, near-k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=("small", "medium", "large"))
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--tenant", default="kigali-east")
    parser.add_argument("--var", help="an existing demo store's var directory (else generate)")
    args = parser.parse_args()
    catalog, store, loaded = demo_store(size=args.size, var=args.var, prefix="veil-coverage-")
    gate = Gate(store, catalog, clock=lambda: NOW)
    principal = Principal(subject=f"bench@{args.tenant}", display_name="bench",
                          role="policy_maker", tenant=args.tenant, source="demo")
    print(f"{args.size} demo, tenant {args.tenant}, {START:%Y-%m} to {END:%Y-%m}, "
          f"{args.runs} fresh releases per view; policy level "
          f"{catalog.policy.interval_confidence:.0%}")
    print()
    print("| view | class | cells checked | stated level | coverage | ± 2 SE |")
    print("|---|---|---|---|---|---|")
    timed = time.perf_counter()
    overall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for view in VIEWS:
        for line, (name, tally) in _view(gate, principal, view, args.runs):
            print(line)
            for i, v in enumerate(tally):
                overall[name][i] += v
    store.dispose()
    print()
    print("| all views | cells checked | coverage |")
    print("|---|---|---|")
    for name in CLASSES:
        checked, hits = overall[name]
        if checked:
            print(f"| {name} | {checked:,} | {hits / checked:.2%} |")
    print()
    print(f"Machine: {os.cpu_count()} × {cpu_model()}, Python {platform.python_version()}; "
          f"{date.today().isoformat()}; data {loaded:.0f} s, releases "
          f"{time.perf_counter() - timed:.0f} s")


def _view(gate: Gate, principal: Principal, view, runs: int):
    title, product, metric, level, group_by = view
    query = Query(product=product, metric=metric, level=level, start=START, end=END,
                  group_by=group_by)
    plan = gate._plan(principal, query)
    months = query.months
    keys, truth = gate._aggregate(principal, query, plan, months=months)
    cuts = {t.level: t.count for t in gate._thresholds(plan.product, query, k=plan.k,
                                                         level_epsilon=plan.level_epsilon)}
    levels = gate._levels(principal, plan)
    names = [level.name for level in levels]
    depth_of = {key[1]: 0 for key in keys}
    for depth, level in enumerate(levels[:-1], start=1):
        for code in [c for c, d in depth_of.items() if d == depth - 1]:
            depth_of.setdefault(level.parent(code), depth)
    stated = min(t.coverage for t in gate._thresholds(plan.product, query, k=plan.k,
                                                       level_epsilon=plan.level_epsilon))
    strata: dict[tuple, tuple[int, float]] = defaultdict(lambda: (0, 0.0))
    for key in keys:
        n, s = truth.get(key, (0, 0.0))
        tn, ts = strata[(key[0], *key[2:])]
        strata[(key[0], *key[2:])] = (tn + n, ts + s)
    measure = plan.metric.measure
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _ in range(runs):
        for cell in gate._engine(principal, plan, keys=keys, truth=truth):
            if cell.value is None:
                continue
            if cell.status == "total":
                n, s = strata[(cell.key[0], *cell.key[2:])]
                depth = len(names) - 1
            elif cell.members:
                n = s = 0
                for code in cell.members:
                    tn, ts = truth.get((cell.key[0], code, *cell.key[2:]), (0, 0.0))
                    n, s = n + tn, s + ts
                depth = depth_of[cell.key[1]]
            else:
                n, s = truth.get(cell.key, (0, 0.0))
                depth = 0
            if measure == "mean":
                if n == 0:
                    continue  # no true mean to cover
                true = s / n
                classes = ["mean"]
                if cell.status != "total" and n < cuts[names[depth]]:
                    classes.append("mean, near-k")
            else:
                true = n
                status = ("total" if cell.status == "total"
                          else "rolled-up parent" if depth else "leaf")
                classes = [status]
                if status != "total" and n < cuts[names[depth]]:
                    classes.append("near-k")
            hit = cell.lower - 1e-9 <= true <= cell.upper + 1e-9
            for name in classes:
                tally[name][0] += 1
                tally[name][1] += hit
    for name in CLASSES:
        checked, hits = tally[name]
        if not checked:
            continue
        p = hits / checked
        se = math.sqrt(max(p * (1 - p), 1e-12) / checked)
        yield (f"| {title} | {name} | {checked:,} | {stated:.2%} | {p:.2%} | {2 * se:.2%} |",
               (name, (checked, hits)))


if __name__ == "__main__":
    main()
