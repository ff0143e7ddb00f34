"""Benchmark: how much of a month of realistic use does a lifetime budget per data month answer?

Simulates 30 days (November 2026) of use of the demo by tens of principals in every tenant —
policy makers and researchers opening trends, maps, insights and exports, compliance officers
running the bias check — with the pages' own defaults, a realistic spread of other choices and
many repeats, and replays the same schedule (seeded, so each run sees the same views in the
same order) in three scenarios under several lifetime caps per data month:

- ``none``: nothing is released ahead; every view is released by the first who opens it;
- ``standard``: on the first day a "standard views" principal per tenant releases the pages'
  defaults (every metric's 12-month trend, the default insight pair, the default bias check,
  each count metric by district and by state over 12 months, each count metric's latest H3
  map), in that order, each while the months it reads can still pay for it; viewers then
  find many of them stored;
- ``finest``: the same principal releases only the finest series a planner would derive the
  rest from (every metric by district over 12 months, the default bias check, each count
  metric's latest H3 map): the gate derives coarser views from their stored measurements
  for free where they are accurate enough (``privacy._derive``), so this scenario shows what
  releasing once and serving many gives.

In every scenario the tenant's publication identity first publishes the default donor snapshots
(``publish_defaults``, what ``veil publish`` does monthly) from the reserved share.

Each view is one page open: one or two gate calls, as the page makes them (a year-earlier
comparison and an insight are two releases); it is answered when all of them are. Counted per
run: views answered from a stored release (``release.reused``), derived free from stored
measurements (``release.derived``), assembled free from stored months (charged 0, not stored
as a whole), or released fresh (charged ε); refused by a data
month's lifetime budget (``PeriodBudgetExhausted``), by the viewer's own monthly allowance
(``BudgetExhausted``), or otherwise. Beside the refusals by a lifetime budget, how many of them
could have been answered for free by post-processing releases already stored: every month of
the view stored at the same or a finer geography, with the same or more breakdowns, at the
same or a larger ε (an upper bound on what a planner deriving coarser views could answer: it
ignores whether the derived interval would meet the level's accuracy target). The median
relative interval half-width is ``(upper − lower) / 2 / value`` over a view's shown cells with a
value above 0, its median per view, then the median over answered views. ε per data month is
what ``gate.compliance.period_usage`` reports (tenant × product × month drawn on, publication
included).

Each run reads a fresh copy of one generated demo store (``--var``: copies of that store; it
is never written to). The clock moves through November 2026 (one budget window), so viewer
allowances are one month's.

Usage:
  VEIL_DEMO_MODE=1 .venv/bin/python bench/workload.py [--size medium] [--seed 16]
      [--caps 4,8,10] [--scenarios none,standard,finest] [--var DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from _demo import demo_store
from _machine import cpu_model  # bench/ is on sys.path when a bench runs

from dashboard.cli import publish_defaults
from data.catalog import Catalog, PeriodPolicy
from privacy import (BudgetExhausted, Gate, PeriodBudgetExhausted, Principal, Query,
                     VeilError, add_months)

#: the month simulated: one budget window of the viewers' allowances
FIRST_DAY = datetime(2026, 11, 1, 8, 0)
DAYS = 30
#: per tenant: role → how many principals
STAFF = {"policy_maker": 5, "researcher": 4, "compliance_officer": 1}
#: what each role opens (page → weight); compliance officers only run the bias check
PAGES = {"policy_maker": {"trends": 40, "map": 25, "insights": 15, "exports": 20},
         "researcher": {"trends": 35, "map": 20, "insights": 25, "exports": 20},
         "compliance_officer": {"bias": 100}}
#: a principal re-opens a view it opened before with this probability
REPEAT = 0.45
GEO = ("h3_cell", "district", "state", "tenant")
#: the bias check's breakdown (privacy.compliance.BIAS_DIMENSIONS)
BIAS_BY = ("month", "gender", "age_bucket")
SCENARIOS = ("none", "standard", "finest")


@dataclass(frozen=True)
class View:
    """One page open: the gate calls the page makes, and a label for the breakdown."""

    kind: str                    # trend | insight | export | bias
    label: str
    queries: tuple[Query, ...]


@dataclass
class Tally:
    views: int = 0
    stored: int = 0
    derived: int = 0
    assembled: int = 0
    fresh: int = 0
    period: int = 0
    allowance: int = 0
    other: int = 0
    derivable: int = 0
    widths: list[float] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return self.stored + self.derived + self.assembled + self.fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--var", help="an existing demo store's var directory (else generate)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--caps", default="4,8,10",
                        help="lifetime ε per data month, comma-separated")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, of {', '.join(SCENARIOS)}")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    if not scenarios or set(scenarios) - set(SCENARIOS):
        parser.error(f"--scenarios must be some of {', '.join(SCENARIOS)}, "
                     f"got {args.scenarios!r}")
    try:
        caps = [float(c) for c in args.caps.split(",")]
    except ValueError:
        parser.error(f"--caps must be numbers separated by commas, got {args.caps!r}")
    if not caps or min(caps) <= 0:
        parser.error(f"every cap must be > 0, got {args.caps!r}")

    started = time.perf_counter()
    catalog, store, loaded = demo_store(size=args.size, var=args.var, prefix="veil-workload-")
    source = Path(store.engine.url.database)
    schedule, principals = _schedule(Gate(store, catalog, clock=lambda: FIRST_DAY), catalog,
                                     random.Random(args.seed))
    store.dispose()
    viewers = sum(len(p) for p in principals.values())
    print(f"{args.size} demo, {len(catalog.tenants)} tenants, {viewers} principals "
          f"({', '.join(f'{n} × {r}' for r, n in STAFF.items())} per tenant), {DAYS} days from "
          f"{FIRST_DAY:%d %b %Y}, seed {args.seed}: {len(schedule):,} views "
          f"({len({(p.subject, v) for _, p, v in schedule}):,} distinct principal × view); "
          f"viewers may spend (1 − {catalog.policy.periods.reserved:g}) of each month's cap")
    print()
    results: dict[tuple[str, float], tuple[Tally, dict[str, Tally], dict]] = {}
    for scenario in scenarios:
        for cap in caps:
            results[(scenario, cap)] = _run(catalog, source, schedule, principals,
                                            scenario=scenario, cap=cap, size=args.size)
    if not args.var:
        shutil.rmtree(source.parent, ignore_errors=True)

    print("| scenario | lifetime ε / month (viewers) | views | stored | derived | assembled | fresh | "
          "refused: month's lifetime | refused: allowance | other | answered | "
          "+ derivable from stored (bound) | median rel. half-width | ε / data month max | "
          "median | months drawn on | months full (< ε 1 left) | pre-released views / refused | "
          "donor snapshots |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (scenario, cap), (total, _, extra) in results.items():
        viewer_cap = cap * (1 - catalog.policy.periods.reserved)
        spent = extra["spent"]
        width = f"{statistics.median(total.widths):.1%}" if total.widths else "–"
        print(f"| {scenario} | {cap:g} ({viewer_cap:g}) | {total.views:,} | {total.stored:,} | "
              f"{total.derived:,} | {total.assembled:,} | {total.fresh:,} | {total.period:,} | "
              f"{total.allowance:,} | {total.other:,} | {total.answered / total.views:.1%} | "
              f"{(total.answered + total.derivable) / total.views:.1%} | {width} | "
              f"{max(spent, default=0):.2f} | "
              f"{statistics.median(spent) if spent else 0:.2f} | {len(spent)} | "
              f"{sum(viewer_cap - e < 1 - 1e-9 for e in spent)} | "
              f"{extra['standard'][0]} / {extra['standard'][1]} | "
              f"{extra['published'][0]} / {extra['published'][0] + extra['published'][1]} |")
    for scenario in scenarios:
        cap = min(caps)
        _, kinds, _ = results[(scenario, cap)]
        print()
        print(f"Scenario {scenario}, lifetime ε {cap:g} per data month, by view:")
        print()
        print("| view | views | answered | stored | derived | assembled | fresh | "
              "refused: lifetime | refused: allowance | other | derivable (bound) | "
              "median rel. half-width |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label, tally in sorted(kinds.items(), key=lambda kv: -kv[1].views):
            width = f"{statistics.median(tally.widths):.1%}" if tally.widths else "–"
            print(f"| {label} | {tally.views:,} | {tally.answered / tally.views:.0%} | "
                  f"{tally.stored:,} | {tally.derived:,} | {tally.assembled:,} | "
                  f"{tally.fresh:,} | {tally.period:,} |"
                  f" {tally.allowance:,} | {tally.other:,} | {tally.derivable:,} | {width} |")
    print()
    print(f"Machine: {os.cpu_count()} × {cpu_model()}, Python {platform.python_version()}; "
          f"{date.today().isoformat()}; data {loaded:.0f} s, "
          f"{len(results)} runs {time.perf_counter() - started - loaded:.0f} s "
          f"(mean {(time.perf_counter() - started - loaded) / len(results):.0f} s)")


# --- the schedule: who opens what, when ------------------------------------------------------


def _schedule(gate: Gate, catalog: Catalog, rng: random.Random):
    """Every view of the month in order, as (day, principal, view), and the principals by
    tenant. Choices depend on the seed only, never on what the gate answered: each run
    replays the same month."""
    principals: dict[str, list[Principal]] = {}
    for tenant in catalog.tenants:
        principals[tenant.id] = [
            Principal(subject=f"{role}-{i + 1}@{tenant.id}",
                      display_name=f"{role.replace('_', ' ')} {i + 1}", role=role,
                      tenant=tenant.id, source="demo")
            for role, count in STAFF.items() for i in range(count)]
    products = [p for p in catalog.products if p.kind == "metric_set"]
    favourite = {p.subject: rng.choice(products) for ps in principals.values() for p in ps}
    history: dict[str, list[View]] = defaultdict(list)
    out = []
    for day in range(DAYS):
        moment = FIRST_DAY + timedelta(days=day)
        weekend = moment.weekday() >= 5
        for tenant in catalog.tenants:
            for principal in principals[tenant.id]:
                if rng.random() >= (0.1 if weekend else 0.55):
                    continue
                for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
                    seen = history[principal.subject]
                    if seen and rng.random() < REPEAT:
                        view = rng.choice(seen)
                    else:
                        view = _new_view(gate, catalog, principal, favourite[principal.subject],
                                         rng)
                        seen.append(view)
                    out.append((day, principal, view))
    return out, principals


def _new_view(gate: Gate, catalog: Catalog, principal: Principal, favourite, rng) -> View:
    pages = PAGES[principal.role]
    page = rng.choices(list(pages), weights=list(pages.values()))[0]
    role = catalog.roles[principal.role]
    allowed = gate.aggregate_levels(principal)
    others = [level for level in allowed if level != role.default_level]
    level = (rng.choice(others) if others and rng.random() < 0.15 else role.default_level)
    if page == "bias":
        return _bias_view(gate, catalog, principal, level, rng)
    if page == "insights":
        return _insight_view(gate, catalog, principal, level, rng)
    counts_only = page != "trends" and page != "exports"
    product, metric = _metric(catalog, favourite, rng, counts_only=counts_only)
    clock = gate.data_clock(principal, product=product.id)
    if page == "map":
        geo = ("h3_cell" if "h3_cell" in gate.dimensions(principal, product.id)
               and rng.random() < 0.35 else "district")
        months = list(reversed(clock.months()))
        month = months[0] if rng.random() < 0.8 else rng.choice(months[1:6])
        query = Query(product=product.id, metric=metric.id, level=level, start=month,
                      end=month, group_by=("month", geo))
        return View("trend", f"map by {geo}, one month", (query,))
    if page == "exports":
        months = _months(rng, clock.longest(), choices=((12, 0.85), (6, 0.15)))
        allowed_dims = gate.dimensions(principal, product.id)
        extra = [d for d in ("age_bucket", "gender", "category") if d in allowed_dims]
        by = rng.choices(["month only", "state", "district", "other"],
                         weights=[35, 20, 30, 15 if extra else 0])[0]
        if by == "other":
            by = rng.choice(extra)
        query = clock.query(metric=metric.id, level=level, months=months,
                            group_by=("month",) if by == "month only" else ("month", by))
        return View("export", f"export by {by}", (query,))
    # trends: whole tenant, compare areas, or a year earlier (needs a year before the window)
    mode = rng.choices(["tenant", "areas", "year"], weights=[60, 25, 15])[0]
    if mode == "year" and clock.longest() - 12 < 1:
        mode = "tenant"
    longest = clock.longest() - (12 if mode == "year" else 0)
    months = _months(rng, longest, choices=((12, 0.75), (6, 0.1), (24, 0.1), (3, 0.05)))
    base = clock.query(metric=metric.id, level=level, months=months)
    if mode == "areas":
        geo = "state" if rng.random() < 0.5 else "district"
        return View("trend", f"trend, compare {geo}s",
                    (dataclasses.replace(base, group_by=("month", geo)),))
    if mode == "year":
        earlier = dataclasses.replace(base, start=add_months(base.start, -12),
                                      end=add_months(base.end, -12))
        return View("trend", "trend, year earlier", (base, earlier))
    return View("trend", "trend, whole tenant", (base,))


def _bias_view(gate, catalog, principal, level, rng) -> View:
    metrics = [(p, m) for p in catalog.products if p.kind == "metric_set" for m in p.metrics]
    default = next(((p, m) for p, m in metrics if (p.id, m.id) ==
                    ("education.mastery", "mastery_score")), metrics[0])
    product, metric = default if rng.random() < 0.7 else rng.choice(metrics)
    clock = gate.data_clock(principal, product=product.id)
    longest = min(12, clock.longest())
    months = min(3, longest) if rng.random() < 0.8 else min(rng.choice((1, 6, 12)), longest)
    query = clock.query(metric=metric.id, level=level, months=months, group_by=BIAS_BY)
    return View("bias", "bias check (gender × age group)", (query,))


def _insight_view(gate, catalog, principal, level, rng) -> View:
    counts = [(p, m) for p in catalog.products if p.kind == "metric_set" for m in p.metrics
              if m.measure == "count"]
    x = next(c for c in counts if c[0].vertical == "education")
    y = next((c for c in counts if c[0].vertical == "social_protection"), None)
    if rng.random() >= 0.7 or y is None:
        x = rng.choice(counts)
        y = rng.choice([c for c in counts if c[0].vertical != x[0].vertical])
    clocks = [gate.data_clock(principal, product=p.id) for p, _ in (x, y)]
    end = min(c.latest_complete for c in clocks)
    longest = min(12, *(c.max_months for c in clocks),
                  *(len([m for m in c.months() if m <= end]) for c in clocks))
    months = _months(rng, longest, choices=((12, 0.8), (6, 0.2)))
    queries = tuple(Query.ending(product=p.id, metric=m.id, level=level, months=months, end=end,
                                 group_by=("month", "district"), period="window")
                    for p, m in (x, y))
    return View("insight", "insight (two district windows)", queries)


def _metric(catalog, favourite, rng, *, counts_only: bool):
    """The page's first metric half the time, else the principal's favourite or any."""
    metrics = [(p, m) for p in catalog.products if p.kind == "metric_set" for m in p.metrics
               if m.measure == "count" or not counts_only]
    draw = rng.random()
    if draw < 0.5:
        return metrics[0]
    if draw < 0.85:
        own = [(p, m) for p, m in metrics if p.id == favourite.id]
        return own[0] if rng.random() < 0.7 else rng.choice(own)
    return rng.choice(metrics)


def _months(rng, longest: int, *, choices) -> int:
    values, weights = zip(*choices)
    return max(1, min(rng.choices(values, weights=weights)[0], longest))


# --- one run --------------------------------------------------------------------------------


class _Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _run(catalog: Catalog, source: Path, schedule, principals, *, scenario: str, cap: float,
         size: str):
    periods = PeriodPolicy(epsilon=cap, delta=catalog.policy.periods.delta,
                           reserved=catalog.policy.periods.reserved)
    capped = dataclasses.replace(catalog, policy=dataclasses.replace(catalog.policy,
                                                                     periods=periods))
    var = Path(tempfile.mkdtemp(prefix="veil-workload-run-"))
    with closing(sqlite3.connect(source)) as old, \
            closing(sqlite3.connect(var / "veil.db")) as new:
        old.backup(new)
    _, store, _ = demo_store(size=size, var=str(var), prefix="veil-workload-")
    clock = _Clock(FIRST_DAY)
    gate = Gate(store, capped, clock=clock)
    stored = _Stored(capped)
    try:
        published = _publish(gate, stored)
        standard = (0, 0)
        if scenario != "none":
            standard = _pre_release(gate, capped, stored, scenario)
        total, kinds = Tally(), defaultdict(Tally)
        exports = var / "exports"
        last_day = -1
        for day, principal, view in schedule:
            if day != last_day:
                clock.now, last_day = FIRST_DAY + timedelta(days=day, hours=1), day
            clock.now += timedelta(seconds=20)
            outcome, releases = _open(gate, principal, view, exports)
            for tally in (total, kinds[view.label]):
                tally.views += 1
                setattr(tally, outcome, getattr(tally, outcome) + 1)
            if releases:
                width = _width(releases)
                if width is not None:
                    total.widths.append(width)
                    kinds[view.label].widths.append(width)
                for query in view.queries:
                    stored.add(principal.tenant, query)
            elif outcome == "period" and all(stored.covers(principal.tenant, q)
                                             for q in view.queries):
                total.derivable += 1
                kinds[view.label].derivable += 1
        spent = []
        for tenant, staff in principals.items():
            officer = next(p for p in staff if p.role == "compliance_officer")
            spent += [u.spent for u in gate.compliance.period_usage(officer) if u.spent > 0]
    finally:
        gate.close()
        store.dispose()
        shutil.rmtree(var, ignore_errors=True)
    return total, dict(kinds), {"spent": spent, "standard": standard, "published": published}


def _open(gate: Gate, principal: Principal, view: View, exports: Path):
    """Open one view as its page would: (outcome, the releases shown or None)."""
    try:
        if view.kind == "export":
            return _export(gate, principal, view.queries[0], exports)
        if view.kind == "insight":
            insight = gate.insight(principal, *view.queries)
            releases = [insight.x, insight.y]
        else:
            releases = [gate.release(principal, q) for q in view.queries]
    except PeriodBudgetExhausted:
        return "period", None
    except BudgetExhausted:
        return "allowance", None
    except VeilError:
        return "other", None
    if any(r.charged.value > 0 for r in releases):
        return "fresh", releases
    if any(r.derived for r in releases):
        return "derived", releases
    return ("stored" if all(r.reused for r in releases) else "assembled"), releases


def _export(gate: Gate, principal: Principal, query: Query, directory: Path):
    """Request the export, run the worker on it, and read what the file holds."""
    requested = gate.exports.request(principal, query, purpose="programme_monitoring")
    gate.exports.run_worker(directory=directory, once=True)
    status = gate.exports.status(principal, requested.id)
    if status.status != "done":
        error = status.error or ""
        return ("period" if "lifetime privacy budget" in error
                else "allowance" if error.startswith("Privacy budget for") else "other"), None
    release = gate.release(principal, query)  # the export's release, stored: free
    if status.epsilon.value > 0:
        return "fresh", [release]
    if release.mechanism.startswith("derived"):  # the worker derived it, free
        return "derived", [release]
    return ("stored" if release.reused else "assembled"), [release]


def _publish(gate: Gate, stored: "_Stored") -> tuple[int, int]:
    """The default donor snapshots, per tenant (``publish_defaults``), from the reserved share;
    with a cap too small for all of them, each one alone. Returns (published, refused)."""
    try:
        releases = publish_defaults(gate, requested_by="bench")
    except BudgetExhausted:
        releases = None
    if releases is not None:
        for release in releases:
            stored.add(release.tenant, release.query)
        return len(releases), 0
    published = refused = 0
    for tenant in gate.catalog.tenants:
        publisher = Principal(subject=f"publication@{tenant.id}", display_name="Publication",
                              role="publisher", tenant=tenant.id, source="system")
        for product in gate.catalog.products:
            if product.kind != "metric_set" or not product.published_series:
                continue
            for metric in (m for m in product.metrics if m.measure == "count"):
                query = gate.data_clock(publisher, product=product.id).query(
                    metric=metric.id, level="dp_high", months=12, group_by=("month", "state"))
                try:
                    gate.publish(tenant=tenant.id, query=query, requested_by="bench")
                except BudgetExhausted:
                    refused += 1
                else:
                    published += 1
                    stored.add(tenant.id, query)
    return published, refused


def _pre_release(gate: Gate, catalog: Catalog, stored: "_Stored",
                 scenario: str) -> tuple[int, int]:
    """The standard views, most-opened first, released once per tenant on the first day by a
    "standard views" principal; each as long as its months can pay. (released, refused)"""
    released = refused = 0
    for tenant in catalog.tenants:
        principal = Principal(subject=f"standard-views@{tenant.id}",
                              display_name="Standard views", role="policy_maker",
                              tenant=tenant.id, source="system")
        for query in _standard_views(gate, catalog, principal, scenario):
            try:
                if len(query) == 2:
                    gate.insight(principal, *query)
                else:
                    gate.release(principal, query[0])
            except BudgetExhausted:
                refused += 1
            else:
                released += 1
                for q in query:
                    stored.add(tenant.id, q)
    return released, refused


def _standard_views(gate: Gate, catalog: Catalog, principal: Principal, scenario: str):
    """The views pre-released in ``scenario``, in the order they are released."""
    level = catalog.roles[principal.role].default_level
    metrics = [(p, m) for p in catalog.products if p.kind == "metric_set" for m in p.metrics]
    counts = [(p, m) for p, m in metrics if m.measure == "count"]

    def series(product, metric, group_by=("month",), level=level, months=12):
        clock = gate.data_clock(principal, product=product.id)
        return clock.query(metric=metric.id, level=level, months=months, group_by=group_by)

    def h3_maps():
        for p, m in counts:
            month = gate.data_clock(principal, product=p.id).latest_complete
            yield (Query(product=p.id, metric=m.id, level=level, start=month, end=month,
                         group_by=("month", "h3_cell")),)

    # the bias check's default (Compliance page): mastery score, dp_high, 3 months
    bias = [(series(p, m, BIAS_BY, level="dp_high", months=3),) for p, m in metrics
            if (p.id, m.id) == ("education.mastery", "mastery_score")]
    if scenario == "finest":
        # one finest series per metric: everything coarser could be derived from it
        return ([(series(p, m, ("month", "district")),) for p, m in metrics] + bias
                + list(h3_maps()))
    # the pages' defaults for every metric, most-opened first
    views = [(series(p, m),) for p, m in metrics]            # Trends: whole tenant
    x = next(c for c in counts if c[0].vertical == "education")
    y = next((c for c in counts if c[0].vertical == "social_protection"), None)
    if y is not None:                                         # Insights: the default pair
        clocks = [gate.data_clock(principal, product=p.id) for p, _ in (x, y)]
        end = min(c.latest_complete for c in clocks)
        months = min(12, *(c.max_months for c in clocks))
        views.append(tuple(Query.ending(product=p.id, metric=m.id, level=level, months=months,
                                        end=end, group_by=("month", "district"),
                                        period="window") for p, m in (x, y)))
    views += bias
    views += [(series(p, m, ("month", "district")),) for p, m in counts]  # Map, compare areas
    views += [(series(p, m, ("month", "state")),) for p, m in counts]
    return views + list(h3_maps())


def _width(releases) -> float | None:
    """The median relative half-width of the shown cells with a value above 0."""
    widths = [(c.upper - c.lower) / 2 / c.value for r in releases for c in r.cells
              if c.value is not None and c.value > 0 and c.lower is not None
              and c.upper is not None]
    return statistics.median(widths) if widths else None


class _Stored:
    """What has been released, by atomic period, to tell which refused views a planner could
    have derived for free from finer stored releases (an upper bound: accuracy unchecked)."""

    def __init__(self, catalog: Catalog):
        self._epsilon = {name: level.epsilon for name, level in catalog.policy.levels.items()}
        #: (tenant, product, metric, filters, period kind, period) → [(geo rank, dims, ε)]
        self._periods: dict[tuple, list[tuple[int, frozenset, float]]] = defaultdict(list)

    @staticmethod
    def _shape(query: Query) -> tuple[int, frozenset]:
        geo = next((d for d in query.group_by[1:] if d in GEO), "tenant")
        return GEO.index(geo), frozenset(d for d in query.group_by[1:] if d not in GEO)

    def _periods_of(self, tenant: str, query: Query):
        base = (tenant, query.product, query.metric, tuple(sorted(query.filters)))
        if query.period == "window":
            return [base + ("window", (query.start, query.end))]
        return [base + ("month", month) for month in query.months]

    def add(self, tenant: str, query: Query) -> None:
        geo, dims = self._shape(query)
        for key in self._periods_of(tenant, query):
            self._periods[key].append((geo, dims, self._epsilon[query.level]))

    def _has(self, key, geo: int, dims: frozenset, epsilon: float) -> bool:
        return any(g <= geo and d >= dims and e >= epsilon for g, d, e in self._periods[key])

    def covers(self, tenant: str, query: Query) -> bool:
        geo, dims = self._shape(query)
        epsilon = self._epsilon[query.level]
        if all(self._has(key, geo, dims, epsilon) for key in self._periods_of(tenant, query)):
            return True
        if query.period == "window":  # a window total is also the sum of its stored months
            monthly = dataclasses.replace(query, period="month")
            return all(self._has(key, geo, dims, epsilon)
                       for key in self._periods_of(tenant, monthly))
        return False


if __name__ == "__main__":
    main()
