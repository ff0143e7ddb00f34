"""The ``veil`` command line: operator tasks on the configured store.

Owns argument parsing and progress output. It is the one package under dashboard/ that talks to
the data layer directly: it is an operator tool that never shows a released number to a user.
Errors print one line naming what to fix and exit with status 2 — no traceback.

One module per command group: ``_data`` (init, demo, materialize, ingestion, consent,
collector sources and API, freshness), ``_publish`` (donor snapshots), ``_ops`` (export
worker, jobs, alerts, evidence); ``_common`` has what they share. This module builds the
parser, dispatches, and keeps the store-wide reports (``budgets``, ``check``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data.config import load_settings
from data.engine import open_store
from data.errors import VeilError

from dashboard.cli._common import _iso_date
from dashboard.cli._data import (_INGESTION_COMMANDS, _add_ingestion_parsers, _cmd_demo,
                                 _cmd_init, _cmd_materialize)
from dashboard.cli._ops import (_add_export_parsers, _add_operations_parsers, _cmd_alerts,
                                _cmd_evidence, _cmd_export_worker, _cmd_jobs,
                                _cmd_retention)
from dashboard.cli._publish import _cmd_publish, _cmd_snapshots, publish_defaults

__all__ = ["main", "publish_defaults"]


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
        delta = (f"  δ {row.delta_spent:.1e} of {row.delta_cap:.1e}"
                 if row.delta_spent else "")
        print(f"{row.tenant_id:<12} {row.principal:<40} {row.product_id:<24} "
              f"{row.window_start:%Y-%m}  ε {row.spent:g} of {row.cap:g}{delta}")


def _cmd_check(args, settings) -> None:
    from pathlib import Path

    from dashboard.identity import auth_config_of_files, who_can_sign_in
    from data.config import start_up_error
    from privacy import open_gate

    # The files Streamlit reads by default (--secrets.files when the dashboard is started).
    secrets = [Path(p) for p in args.secrets or ()] or [
        Path.home() / ".streamlit" / "secrets.toml", Path.cwd() / ".streamlit" / "secrets.toml"]
    auth = auth_config_of_files(secrets)
    try:
        gate = open_gate(settings)
    except OSError as exc:  # whatever start-up could not read or create, named
        raise start_up_error(settings, exc) from exc
    try:
        mapped = gate.check_role_mappings(settings.role_mappings_file)
        sources = who_can_sign_in(gate, settings, auth)
    finally:
        gate.close()
    if not sources:
        # A dashboard nobody can sign in to is not a working configuration.
        oidc = auth.problem or (f"there is no [auth] section in "
                                f"{' or '.join(str(p) for p in secrets)}")
        raise VeilError(f"nobody can sign in: {oidc}; and demo accounts are off (they need "
                        f"VEIL_DEMO_MODE=1, and VEIL_DEMO_ACCOUNTS=1 beside OIDC)")
    if auth.problem:
        print(f"warning: {auth.problem}", file=sys.stderr)
    print(f"configuration ok: catalog {settings.catalog_dir} (policy {gate.catalog.version[:12]}),"
          f" store reachable and migrated, {mapped} role mappings applied; who can sign in: "
          f"{'; '.join(sources)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="veil", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create or migrate the store and mirror the catalog into it")
    demo = sub.add_parser("demo", help="generate deterministic demo data and build the cubes")
    demo.add_argument("--size", choices=("small", "medium", "large"), default="small")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--as-of", type=_iso_date, default=None, metavar="YYYY-MM-DD",
                      help="generate two years of events up to the day before this date "
                           "(default: today, UTC); the same seed and as-of day give the same "
                           "data")
    mat = sub.add_parser("materialize", help="rebuild aggregate cubes (changed months only, "
                                             "unless --full)")
    mat.add_argument("--tenant")
    mat.add_argument("--product")
    mat.add_argument("--full", action="store_true",
                     help="rebuild every month, not only those changed since the last run")
    mat.add_argument("--workers", type=int, default=None,
                     help="(tenant, product) jobs at once on PostgreSQL (default 2); SQLite "
                          "runs them one after another")
    sub.add_parser("budgets", help="show ε budget usage per principal and product")
    check = sub.add_parser("check", help="validate configuration, catalog and store, and "
                                         "report who can sign in")
    check.add_argument("--secrets", action="append", default=None,
                       metavar="FILE", help="a secrets.toml the dashboard reads (repeatable; "
                                            "default: ~/.streamlit/ and ./.streamlit/)")
    pub = sub.add_parser("publish", help="publish donor snapshots (defaults: every published "
                                         "series by state, all tenants)")
    pub.add_argument("--tenant")
    pub.add_argument("--product")
    pub.add_argument("--metric")
    pub.add_argument("--by", choices=("state", "district", "age_bucket", "gender", "category"))
    pub.add_argument("--months", type=int, default=12)
    pub.add_argument("--level", default="dp_high")
    pub.add_argument("--requested-by", default="operator")
    snap = sub.add_parser("snapshots", help="publish the donor snapshots that are due (a new "
                                            "complete month, changed data); at least daily")
    snap.add_argument("--worker", action="store_true",
                      help="keep running: check every --check-seconds (as the dashboard's "
                           "scheduler thread does)")
    snap.add_argument("--check-seconds", type=float, default=300.0)
    snap.add_argument("--every-hours", type=float, default=24.0,
                      help="run at least this often even with nothing due (default 24)")
    snap.add_argument("--force", action="store_true", help="run now even with nothing due")
    _add_ingestion_parsers(sub)
    _add_export_parsers(sub)
    _add_operations_parsers(sub)
    return parser


COMMANDS = {"publish": _cmd_publish, "snapshots": _cmd_snapshots, "init": _cmd_init,
            "demo": _cmd_demo,
            "materialize": _cmd_materialize, "budgets": _cmd_budgets, "check": _cmd_check}
COMMANDS.update(_INGESTION_COMMANDS)
COMMANDS["export-worker"] = _cmd_export_worker
COMMANDS.update({"jobs": _cmd_jobs, "alerts": _cmd_alerts, "evidence": _cmd_evidence,
                 "retention": _cmd_retention})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        COMMANDS[args.command](args, settings)
    except VeilError as exc:
        print(f"veil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
