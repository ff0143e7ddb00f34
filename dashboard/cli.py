"""The ``veil`` command line: operator tasks on the configured store.

Owns argument parsing and progress output. It is the one module under dashboard/ that talks to
the data layer directly: it is an operator tool that never shows a released number to a user.
Errors print one line naming what to fix and exit with status 2 — no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from data.bootstrap import init_store
from data.catalog import load_catalog
from data.config import load_settings
from data.engine import open_store
from data.errors import VeilError

__all__ = ["main"]


def _progress(stage: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r  {stage:<28} [{'#' * filled}{'.' * (width - filled)}] "
                     f"{done:>12,}/{total:,}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _cmd_init(args, settings) -> None:
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=settings.demo_mode)
    print(f"store ready: {store.dialect} · policy version {catalog.version[:12]}"
          + (" · demo accounts enabled" if settings.demo_mode else ""))


def _cmd_demo(args, settings) -> None:
    from data.demo import generate
    from data.materialize import materialize

    if not settings.demo_mode:
        raise VeilError("refusing to generate demo data outside demo mode (VEIL_DEMO_MODE=0): "
                        "demo rows must never mix with real data")
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=True)
    started = time.perf_counter()
    report = generate(store, catalog, size=args.size, seed=args.seed, secret=settings.secret,
                      progress=_progress)
    loaded = time.perf_counter() - started
    results = materialize(store, catalog)
    total = time.perf_counter() - started
    print(f"demo data ({args.size}, seed {args.seed}): {report.events:,} events loaded in "
          f"{loaded:.1f} s; {sum(r.rows for r in results):,} cube rows; total {total:.1f} s")


def _cmd_materialize(args, settings) -> None:
    from data.materialize import materialize

    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    for result in materialize(store, catalog, tenant=args.tenant, product=args.product):
        print(f"{result.tenant:<12} {result.product:<24} {result.rows:>10,} rows  "
              f"{result.seconds:6.2f} s  data v{result.data_version}")


def _cmd_budgets(args, settings) -> None:
    from sqlalchemy import select

    from data.models import BudgetAccount

    store = open_store(settings)
    with store.read() as session:
        rows = session.scalars(select(BudgetAccount).order_by(
            BudgetAccount.tenant_id, BudgetAccount.principal, BudgetAccount.product_id,
            BudgetAccount.window_start)).all()
    if not rows:
        print("no budget has been spent yet")
    for row in rows:
        print(f"{row.tenant_id:<12} {row.principal:<40} {row.product_id:<24} "
              f"{row.window_start:%Y-%m}  ε {row.spent:g} of {row.cap:g}")


def _cmd_check(args, settings) -> None:
    from privacy import open_gate

    gate = open_gate(settings)
    print(f"configuration ok: catalog {settings.catalog_dir} (policy {gate.catalog.version[:12]}),"
          f" store reachable and migrated")
    gate.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="veil", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create or migrate the store and mirror the catalog into it")
    demo = sub.add_parser("demo", help="generate deterministic demo data and build the cubes")
    demo.add_argument("--size", choices=("small", "medium", "large"), default="small")
    demo.add_argument("--seed", type=int, default=7)
    mat = sub.add_parser("materialize", help="rebuild aggregate cubes")
    mat.add_argument("--tenant")
    mat.add_argument("--product")
    sub.add_parser("budgets", help="show ε budget usage per principal and product")
    sub.add_parser("check", help="validate configuration, catalog and store")
    return parser


COMMANDS = {"init": _cmd_init, "demo": _cmd_demo, "materialize": _cmd_materialize,
            "budgets": _cmd_budgets, "check": _cmd_check}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        COMMANDS[args.command](args, settings)
    except VeilError as exc:
        print(f"veil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
