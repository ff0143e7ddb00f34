"""Benchmark: map coverage with roll-up vs plain suppression (SPEC §5, C4).

For every tenant, a 12-month map of vaccination doses by H3 cell and by district at dp_medium:
the share of events counted in some released cell (roll-up: the cell itself, a parent that
absorbed it, or the tenant total) against the share that plain small-cell suppression would
keep (only cells whose own noisy count reaches k).

Usage:
  VEIL_DEMO_MODE=1 .venv/bin/python bench/rollup_coverage.py [--size small] [--var DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from datetime import date, datetime

from sqlalchemy import func, select

from data.bootstrap import init_store
from data.catalog import load_catalog
from data.config import load_settings
from data.demo import generate
from data.engine import open_store
from data.materialize import materialize
from data.models import CubeMonthly
from privacy import Gate, Principal, Query

#: a fixed as-of day: the same benchmark data whatever the calendar says
DEMO_AS_OF = date(2026, 11, 1)

NOW = datetime(2026, 11, 15, 12, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=("small", "medium", "large"))
    parser.add_argument("--var", help="an existing demo store's var directory (else generate)")
    args = parser.parse_args()
    var = args.var or tempfile.mkdtemp(prefix="veil-coverage-")
    settings = load_settings({"VEIL_VAR_DIR": var, "VEIL_DEMO_MODE": "1"})
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=False)
    if not args.var:
        generate(store, catalog, size=args.size, as_of=DEMO_AS_OF, secret=settings.secret)
        materialize(store, catalog)
    gate = Gate(store, catalog, clock=lambda: NOW)
    print("| tenant | map | cells | events | roll-up coverage | plain suppression |")
    print("|---|---|---|---|---|---|")
    for tenant in catalog.tenants:
        for geo in ("h3_cell", "district"):
            principal = Principal(subject=f"coverage-{geo}@{tenant.id}", display_name="bench",
                                  role="policy_maker", tenant=tenant.id, source="demo")
            query = Query.trailing(product="health.vaccinations", metric="doses",
                                   level="dp_medium", months=12, today=NOW.date())
            query = dataclasses.replace(query, group_by=("month", geo))
            release = gate.release(principal, query)
            column = getattr(CubeMonthly, geo)
            with store.read() as session:
                truth = {(p.isoformat()[:7], code): n for p, code, n in session.execute(
                    select(CubeMonthly.period, column, func.sum(CubeMonthly.n_events))
                    .where(CubeMonthly.tenant_id == tenant.id,
                           CubeMonthly.product_id == "health.vaccinations",
                           CubeMonthly.metric == "doses",
                           CubeMonthly.period.in_(query.months))
                    .group_by(CubeMonthly.period, column))}
            status = {c.key[:2]: c.status for c in release.cells
                      if c.status not in ("rollup", "total")}
            events = sum(truth.values())
            covered = sum(n for key, n in truth.items() if status[key] != "suppressed")
            plain = sum(n for key, n in truth.items() if status[key] == "noisy")
            print(f"| {tenant.id} | {geo} | {len(status):,} | {events:,} | "
                  f"{covered / events:.1%} | {plain / events:.1%} |")
    store.dispose()


if __name__ == "__main__":
    main()
