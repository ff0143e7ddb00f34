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
from contextlib import contextmanager

from data import clock
from data.bootstrap import init_store
from data.catalog import load_catalog
from data.config import load_settings
from data.engine import open_store
from data.errors import VeilError
from data.role_mappings import load_role_mappings

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
    mappings = load_role_mappings(settings.role_mappings_file, catalog)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=settings.demo_mode, role_mappings=mappings)
    print(f"store ready: {store.dialect} · policy version {catalog.version[:12]}"
          f" · {len(mappings.mappings)} role mappings from {settings.role_mappings_file}"
          + (" · demo accounts enabled" if settings.demo_mode else ""))


def _cmd_demo(args, settings) -> None:
    from data.demo import generate
    from data.materialize import materialize

    if not settings.demo_mode:
        raise VeilError("refusing to generate demo data outside demo mode (VEIL_DEMO_MODE=0): "
                        "demo rows must never mix with real data")
    catalog = load_catalog(settings.catalog_dir)
    mappings = load_role_mappings(settings.role_mappings_file, catalog)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=True, role_mappings=mappings)
    started = time.perf_counter()
    as_of = args.as_of or clock.today()
    report = generate(store, catalog, size=args.size, seed=args.seed, secret=settings.secret,
                      as_of=as_of, progress=_progress)
    loaded = time.perf_counter() - started
    results = materialize(store, catalog)
    from privacy import open_gate

    gate = open_gate(settings)
    try:
        published = publish_defaults(gate, requested_by="veil demo")
    finally:
        gate.close()
    total = time.perf_counter() - started
    print(f"demo data ({args.size}, seed {args.seed}, {report.start:%d %b %Y} – "
          f"{report.end:%d %b %Y}): {report.events:,} events loaded in "
          f"{loaded:.1f} s; {sum(r.rows for r in results):,} cube rows; "
          f"{len(published)} donor snapshots published; total {total:.1f} s")


def _cmd_materialize(args, settings) -> None:
    from data.materialize import materialize

    catalog = load_catalog(settings.catalog_dir)
    with _store(settings) as store:
        try:
            results = materialize(store, catalog, tenant=args.tenant, product=args.product,
                                  incremental=not args.full)
        finally:  # a failed run is the alert most worth sending
            if settings.alert_webhook_url:
                _send_alerts_after_run(store, catalog, settings, tenant=args.tenant)
    for result in results:
        if result.months is None:
            scope = "full rebuild"
        elif result.months:
            scope = (f"{len(result.months)} month(s) {result.months[0]:%Y-%m}.."
                     f"{result.months[-1]:%Y-%m}")
        else:
            scope = "up to date"
        print(f"{result.tenant:<12} {result.product:<24} {result.rows:>10,} rows  "
              f"{result.seconds:6.2f} s  data v{result.data_version}  {scope}")


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


def _latest_query(gate, *, tenant: str, product: str, metric: str, level: str, months: int,
                  group_by: tuple[str, ...] = ("month",)):
    """The ``months`` latest complete months with data of the tenant's product (never the
    calendar's: an empty or partial month is not published as data)."""
    from privacy import Principal

    publisher = Principal(subject=f"publication@{tenant}", display_name="Publication",
                          role="publisher", tenant=tenant, source="system")
    return gate.data_clock(publisher, product=product).query(
        metric=metric, level=level, months=months, group_by=group_by)


def publish_defaults(gate, *, months: int = 12, level: str = "dp_high",
                     requested_by: str = "veil publish") -> list:
    """Publish the default donor snapshots: every count metric of every published series,
    by state, over the ``months`` latest complete months with data, for every tenant.

    Then republish, at the publisher's cost, every other published series whose data has
    changed since (``gate.republishing``: e.g. a rebuild after a consent withdrawal), with
    its metric, level, grouping, filters and window length over the latest complete months;
    donors see none of them until this has run.
    """
    import dataclasses

    from privacy import Principal

    releases = []
    for tenant in gate.catalog.tenants:
        done = set()
        for product in gate.catalog.products:
            if product.kind != "metric_set" or not product.published_series:
                continue
            for metric in product.metrics:
                if metric.measure != "count":
                    continue
                query = _latest_query(gate, tenant=tenant.id, product=product.id,
                                      metric=metric.id, level=level, months=months,
                                      group_by=("month", "state"))
                releases.append(gate.publish(tenant=tenant.id, query=query,
                                             requested_by=requested_by))
                done.add((query.product, query.metric, query.group_by, query.filters))
        publisher = Principal(subject=f"publication@{tenant.id}", display_name="Publication",
                              role="publisher", tenant=tenant.id, source="system")
        for stale in gate.republishing(publisher):
            if (stale.product, stale.metric, stale.group_by, stale.filters) in done:
                continue
            query = gate.data_clock(publisher, product=stale.product).query(
                metric=stale.metric, level=stale.level, months=len(stale.months),
                group_by=stale.group_by, filters=stale.filters)
            if stale.period != query.period:
                query = dataclasses.replace(query, period=stale.period)
            releases.append(gate.publish(tenant=tenant.id, query=query,
                                         requested_by=requested_by))
    return releases


def _cmd_publish(args, settings) -> None:
    from privacy import open_gate

    gate = open_gate(settings)
    try:
        if args.product is None:
            releases = publish_defaults(gate, months=args.months, level=args.level,
                                        requested_by=f"cli:{args.requested_by}")
        else:
            if not (args.tenant and args.metric):
                raise VeilError("veil publish --product needs --tenant and --metric too")
            query = _latest_query(gate, tenant=args.tenant, product=args.product,
                                  metric=args.metric, level=args.level, months=args.months,
                                  group_by=("month", args.by) if args.by else ("month",))
            releases = [gate.publish(tenant=args.tenant, query=query,
                                     requested_by=f"cli:{args.requested_by}")]
        for release in releases:
            print(f"{release.tenant:<12} {release.product:<24} {release.query.metric:<16} "
                  f"{release.query.start:%Y-%m}..{release.query.end:%Y-%m}  "
                  f"ε {release.charged.value:g} charged  release {release.id[:8]}")
    finally:
        gate.close()


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


# --- ingestion, consent, collector sources (SPEC B2-B4, E1) ---------------------------------


@contextmanager
def _store(settings):
    """The configured store, disposed afterwards (no pooled connection outlives a command)."""
    store = open_store(settings)
    try:
        yield store
    finally:
        store.dispose()



def _ingest_progress():
    """A progress bar for ``veil ingest``: MB read, rows, rows per second."""
    started = time.perf_counter()

    def show(done: int, total: int, rows: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        elapsed = time.perf_counter() - started
        rate = rows / elapsed if elapsed > 0 else 0.0
        sys.stderr.write(f"\r  ingest [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done / 1e6:8.1f}/{total / 1e6:.1f} MB {rows:>12,} rows "
                         f"{rate:>9,.0f}/s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _cmd_ingest(args, settings) -> None:
    from data.ingest import ingest_file

    catalog = load_catalog(settings.catalog_dir)
    with _store(settings) as store:
        report = ingest_file(store, catalog, args.file, tenant=args.tenant,
                             product=args.product, secret=settings.secret, format=args.format,
                             chunk_rows=args.chunk_rows,
                             progress=None if args.quiet else _ingest_progress())
    if report.already_ingested:
        print(f"{args.file} was already ingested in full (batch {report.batch_id[:8]}); "
              f"nothing to do. Its report:")
    else:
        resumed = (f", resumed after line {report.resumed_after:,}"
                   if report.resumed_after else "")
        print(f"ingested {args.file} into {report.product} for {report.tenant} "
              f"(batch {report.batch_id[:8]}{resumed}): {report.status}")
    for label, count in (("rows", report.rows), ("accepted", report.accepted),
                         ("duplicate", report.duplicate), ("bounded", report.bounded),
                         ("rejected", report.rejected)):
        print(f"  {label:<22} {count:>12,}")
    for reason, count in sorted(report.reasons.items(), key=lambda item: -item[1]):
        print(f"    {reason:<20} {count:>12,}")
    if not report.already_ingested:
        print(f"  {report.seconds:.1f} s, {report.rows_per_second:,.0f} rows/s. Rejected and "
              f"bounded rows are in the quarantine with their line numbers; run "
              f"`veil materialize` to refresh the cubes.")


def _subject_pseudonym(args, settings) -> str:
    from data.pseudonym import pseudonym

    if args.pseudonym:
        return args.pseudonym
    return pseudonym(settings.secret, args.subject)


def _cmd_consent(args, settings) -> None:
    from datetime import datetime

    from data.consent import grant_consent, withdraw_consent

    catalog = load_catalog(settings.catalog_dir)
    subject = _subject_pseudonym(args, settings)
    at = None
    if args.at:
        if args.action == "withdraw":
            raise VeilError("a withdrawal is recorded when it is made; --at is for grants only")
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise VeilError(f"--at must be an ISO 8601 time with a time zone, e.g. "
                            f"2025-03-04T09:00:00+02:00; got {args.at!r}") from None
    with _store(settings) as store:
        if args.action == "grant":
            change = grant_consent(store, catalog, tenant=args.tenant, pseudonym=subject,
                                   vertical=args.vertical, at=at)
        else:
            change = withdraw_consent(store, catalog, tenant=args.tenant, pseudonym=subject,
                                      vertical=args.vertical)
    who = f"subject {subject[:8]}… ({args.vertical}, {args.tenant})"
    if not change.changed:
        print(f"{who} already has consent {change.status} since "
              f"{change.at:%Y-%m-%d %H:%M} UTC; nothing changed")
        return
    print(f"consent {change.status} for {who} at {change.at:%Y-%m-%d %H:%M} UTC")
    for result in change.rebuilt:
        months = ("full rebuild" if result.months is None
                  else f"{len(result.months)} month(s) rebuilt")
        print(f"  {result.product:<24} {months}, data v{result.data_version}")
    if change.status == "granted" and change.months:
        print(f"  {sum(len(m) for m in change.months.values())} month(s) marked; the next "
              f"`veil materialize` counts the subject again")


def _cmd_source(args, settings) -> None:
    from data.ingest import add_source, list_sources, revoke_source

    catalog = load_catalog(settings.catalog_dir)
    with _store(settings) as store:
        if args.action == "add":
            with store.write.begin() as session:
                source, token = add_source(session, catalog, tenant=args.tenant,
                                           name=args.name, products=args.product or [])
        elif args.action == "revoke":
            with store.write.begin() as session:
                source = revoke_source(session, tenant=args.tenant, name=args.name)
        else:
            with store.read() as session:
                sources = list_sources(session, tenant=args.tenant)
    if args.action == "add":
        print(f"source {source.name} of {source.tenant} may post: "
              f"{', '.join(source.products)}")
        print("token (shown once; keep it in the collector's secret store):")
        print(token)
    elif args.action == "revoke":
        print(f"source {source.name} of {source.tenant} revoked at "
              f"{source.revoked_at:%Y-%m-%d %H:%M} UTC; its token is refused from now on")
    else:
        if not sources:
            print("no collector sources")
        for source in sources:
            state = ("active" if source.active
                     else f"revoked {source.revoked_at:%Y-%m-%d %H:%M}")
            used = (f"last used {source.last_used_at:%Y-%m-%d %H:%M}" if source.last_used_at
                    else "never used")
            print(f"{source.tenant:<12} {source.name:<24} {source.token_hint}…  {state:<22} "
                  f"{used:<28} {', '.join(source.products)}")


def _cmd_serve_api(args, settings) -> None:
    import uvicorn

    from data.ingest.api import ApiLimits, create_app, server_config

    try:
        limits = ApiLimits(max_events=args.max_events, max_bytes=args.max_bytes,
                           body_seconds=settings.api_body_seconds,
                           header_seconds=settings.api_header_seconds,
                           max_per_token=settings.api_max_per_token,
                           max_requests=settings.api_max_requests,
                           max_connections=settings.api_max_connections)
    except ValueError as exc:
        raise VeilError(str(exc)) from exc
    catalog = load_catalog(settings.catalog_dir)
    with _store(settings) as store:
        app = create_app(store, catalog, secret=settings.secret, limits=limits)
        print(f"collector API on http://{args.host}:{args.port}/api/v1/events (at most "
              f"{limits.max_events:,} events and {limits.max_bytes:,} bytes per request; "
              f"headers within {limits.header_seconds:g} s, the body within "
              f"{limits.body_seconds:g} s; {limits.max_per_token} requests at once per token, "
              f"{limits.max_requests} in all, {limits.max_connections} connections)",
              flush=True)
        uvicorn.Server(server_config(app, limits=limits, host=args.host, port=args.port)).run()


def _cmd_freshness(args, settings) -> None:
    from data.freshness import freshness

    catalog = load_catalog(settings.catalog_dir)
    with _store(settings) as store, store.read() as session:
        rows = freshness(session, catalog, tenant=args.tenant)
    for row in rows:
        refreshed = f"{row.last_refresh:%Y-%m-%d %H:%M}" if row.last_refresh else "never"
        newest = f"{row.newest_event:%Y-%m-%d %H:%M}" if row.newest_event else "none"
        state = "BREACHED: " + "; ".join(row.breaches) if row.breached else "ok"
        print(f"{row.tenant:<12} {row.product:<24} refreshed {refreshed:<16} newest event "
              f"{newest:<16} pending {row.pending_months:>3} month(s)  "
              f"SLO {row.slo_hours:>3} h  {state}")


# --- safe exports (SPEC D6, E1) ---------------------------------------------------------------


def _cmd_export_worker(args, settings) -> None:
    import signal
    import threading

    from privacy import open_gate

    gate = open_gate(settings)
    stop = threading.Event()
    if not args.once:
        # SIGTERM / Ctrl-C: finish the export in hand, then stop (a killed worker's job is
        # retried by another once its lease runs out).
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        print(f"export worker: polling every {args.poll_seconds:g} s; files under "
              f"{settings.var_dir / 'exports'}", flush=True)
    try:
        processed = gate.exports.run_worker(
            directory=settings.var_dir / "exports", worker_id=args.worker_id, once=args.once,
            stop=stop, poll_seconds=args.poll_seconds, lease_seconds=args.lease_seconds,
            chunk_rows=args.chunk_rows)
    finally:
        gate.close()
    print(f"export worker: {processed} export(s) processed")
    if args.once and processed and settings.alert_webhook_url:
        with _store(settings) as store:  # a failed export is an alert worth sending now
            _send_alerts_after_run(store, load_catalog(settings.catalog_dir), settings,
                                   tenant=None)


def _add_export_parsers(sub) -> None:
    worker = sub.add_parser("export-worker", help="build queued exports in the background "
                                                  "(the dashboard runs one unless "
                                                  "VEIL_EXPORT_WORKER=0)")
    worker.add_argument("--once", action="store_true",
                        help="process the exports waiting now, then exit")
    worker.add_argument("--poll-seconds", type=float, default=1.0)
    worker.add_argument("--lease-seconds", type=float,
                        help="how long a claim lasts without progress (default: policy.toml "
                             "[exports] lease_seconds)")
    worker.add_argument("--chunk-rows", type=int, default=50_000,
                        help="records read and written per chunk (default 50000)")
    worker.add_argument("--worker-id", help="a name for this worker in the export records")


def _add_ingestion_parsers(sub) -> None:
    ingest = sub.add_parser("ingest", help="ingest a CSV or JSONL file of events (resumable)")
    ingest.add_argument("file")
    ingest.add_argument("--tenant", required=True)
    ingest.add_argument("--product", required=True)
    ingest.add_argument("--format", choices=("csv", "jsonl"),
                        help="default: from the file name (.csv, .jsonl, .ndjson)")
    ingest.add_argument("--chunk-rows", type=int, default=50_000,
                        help="rows per committed chunk (default 50000)")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")

    consent = sub.add_parser("consent", help="grant or withdraw a subject's consent")
    consent.add_argument("action", choices=("grant", "withdraw"))
    consent.add_argument("--tenant", required=True)
    consent.add_argument("--vertical", required=True,
                         choices=("health", "education", "social_protection"))
    who = consent.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject", help="the raw subject id (pseudonymised, never stored)")
    who.add_argument("--pseudonym", help="the subject's stored pseudonym")
    consent.add_argument("--at", help="when a grant was given (ISO 8601 with a time zone); "
                                      "default now")

    source = sub.add_parser("source", help="collector sources and their API tokens")
    actions = source.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="issue a token for a new source")
    add.add_argument("name")
    add.add_argument("--tenant", required=True)
    add.add_argument("--product", action="append", required=True,
                     help="a product the source may post (repeat for several)")
    revoke = actions.add_parser("revoke", help="revoke a source's token")
    revoke.add_argument("name")
    revoke.add_argument("--tenant", required=True)
    listing = actions.add_parser("list", help="list sources (never their tokens)")
    listing.add_argument("--tenant")

    serve = sub.add_parser(
        "serve-api", help="serve POST /api/v1/events for collectors",
        description="Time and concurrency limits come from VEIL_API_HEADER_SECONDS (10), "
                    "VEIL_API_BODY_SECONDS (30), VEIL_API_MAX_PER_TOKEN (8), "
                    "VEIL_API_MAX_REQUESTS (64) and VEIL_API_MAX_CONNECTIONS (512).")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8502)
    serve.add_argument("--max-events", type=int, default=1_000)
    serve.add_argument("--max-bytes", type=int, default=1_048_576)

    fresh = sub.add_parser("freshness", help="data freshness per product against its SLO")
    fresh.add_argument("--tenant")


_INGESTION_COMMANDS = {"ingest": _cmd_ingest, "consent": _cmd_consent, "source": _cmd_source,
                       "serve-api": _cmd_serve_api, "freshness": _cmd_freshness}


# --- job history, alerts, evidence bundles (issue 20) ----------------------------------------


@contextmanager
def _migrated_store(settings):
    """The configured store, at the schema this Veil needs (else: run `veil init`)."""
    from sqlalchemy.exc import SQLAlchemyError

    from data.errors import StoreError
    from data.migrate import current_revision, head_revision

    with _store(settings) as store:
        try:
            current = current_revision(store)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the store at VEIL_DATABASE_URL: "
                             f"{type(exc).__name__}") from None
        if current != head_revision():
            raise StoreError(f"the store at VEIL_DATABASE_URL is at schema revision "
                             f"{current or 'none'} but this Veil needs {head_revision()}; run "
                             f"`veil init`")
        try:
            yield store
        except SQLAlchemyError as exc:
            raise StoreError(f"the store refused the operation: {type(exc).__name__}; nothing "
                             f"was changed, try again") from None


def _red(text: str) -> str:
    return f"\033[31m{text}\033[0m" if sys.stdout.isatty() else text


def _cmd_jobs(args, settings) -> None:
    from datetime import datetime

    from privacy._jobs import job_history

    catalog = load_catalog(settings.catalog_dir)
    if args.tenant is not None:
        catalog.tenant(args.tenant)
    since = datetime.combine(args.since, datetime.min.time()) if args.since else None
    with _migrated_store(settings) as store, store.read() as session:
        runs = job_history(session, tenant=args.tenant, status=args.status, kind=args.kind,
                           since=since, limit=args.limit)
    if not runs:
        print("no job runs match")
        return
    print(f"{'STATUS':<10} {'JOB':<11} {'TENANT':<12} {'PRODUCT':<24} {'STARTED (UTC)':<16} "
          f"{'DURATION':>9} {'ROWS':>11}  RUN")
    for run in runs:
        duration = f"{run.duration_s:.2f} s" if run.duration_s is not None else "—"
        rows = f"{run.rows:,}" if run.rows is not None else "—"
        line = (f"{('FAILED' if run.failed else run.status):<10} {run.kind:<11} "
                f"{run.tenant or '—':<12} {run.product or '—':<24} "
                f"{run.started_at:%Y-%m-%d %H:%M} {duration:>9} {rows:>11}  {run.id}")
        if run.failed:
            print(_red(line))
            print(_red(f"    error: {' '.join((run.error or 'no reason recorded').split())}"))
        else:
            print(line)
    failed = sum(1 for r in runs if r.failed)
    print(f"{len(runs)} run(s), {failed} failed")


def _send_alerts_after_run(store, catalog, settings, *, tenant: str | None) -> None:
    """After a job: post new alerts to the webhook; a delivery problem is reported on stderr
    and never changes the job's own outcome (the alerts are retried by the next run)."""
    from sqlalchemy.exc import SQLAlchemyError

    from privacy._alerts import send_alerts

    try:
        deliveries = send_alerts(store, catalog, url=settings.alert_webhook_url,
                                 clock=lambda: clock.utcnow(), tenant=tenant)
    except (VeilError, SQLAlchemyError) as exc:
        print(f"alerts: not sent ({type(exc).__name__}: {exc}); `veil alerts --send` retries",
              file=sys.stderr)
        return
    failed = [d for d in deliveries if not d.delivered]
    if deliveries:
        print(f"alerts: {len(deliveries) - len(failed)} sent to the webhook"
              + (f", {len(failed)} not delivered ({failed[0].error}); retried next time"
                 if failed else ""), file=sys.stderr)


def _cmd_alerts(args, settings) -> None:
    from privacy._alerts import alert_states, current_alerts, send_alerts

    catalog = load_catalog(settings.catalog_dir)
    if args.tenant is not None:
        catalog.tenant(args.tenant)
    if args.send:
        if not settings.alert_webhook_url:
            raise VeilError("VEIL_ALERT_WEBHOOK_URL is not set: there is nowhere to send "
                            "alerts (an https:// URL, or http:// to the loopback interface)")
        with _migrated_store(settings) as store:
            deliveries = send_alerts(store, catalog, url=settings.alert_webhook_url,
                                     clock=lambda: clock.utcnow(), tenant=args.tenant)
        for delivery in deliveries:
            state = "sent" if delivery.delivered else f"NOT SENT: {delivery.error}"
            print(f"{delivery.alert.key:<60} {state}")
        failed = [d for d in deliveries if not d.delivered]
        print(f"{len(deliveries) - len(failed)} alert(s) sent, {len(failed)} failed"
              + ("" if deliveries else " (nothing new to send)"))
        if failed:
            raise VeilError(f"{len(failed)} alert(s) were not delivered ({failed[0].error}); "
                            f"they stay unsent and are retried by the next `veil alerts --send`")
        return
    with _migrated_store(settings) as store, store.read() as session:
        states = alert_states(session, current_alerts(session, catalog, now=clock.utcnow(),
                                                      tenant=args.tenant))
    if not states:
        print("nothing needs attention")
        return
    for item in states:
        alert = item.alert
        sent = (f"sent {item.delivered_at:%Y-%m-%d %H:%M}" if item.delivered_at
                else f"not sent ({item.attempts} attempt(s): {item.last_error})"
                if item.attempts else "not sent")
        line = (f"{alert.severity.upper():<9} {alert.kind:<16} {alert.tenant or '—':<12} "
                f"{alert.title}  [{sent}]")
        print(_red(line) if alert.severity == "critical" else line)
    print(f"{len(states)} alert(s); `veil alerts --send` posts the unsent ones to "
          f"VEIL_ALERT_WEBHOOK_URL")


def _month(text: str):
    from datetime import date

    try:
        year, month = text.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError
        return date(int(year), int(month), 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a month as YYYY-MM, got {text!r}") from None


def _cmd_evidence(args, settings) -> None:
    from pathlib import Path

    from privacy._audit import audit
    from privacy._evidence import build_bundle, public_key, public_key_pem, verify_bundle

    action = args.action
    if not action:
        if not (args.start and args.end and args.out):
            raise VeilError("veil evidence needs --from YYYY-MM --to YYYY-MM --out FILE (or "
                            "`veil evidence verify FILE`, `veil evidence key`)")
        catalog = load_catalog(settings.catalog_dir)
        tenants = [catalog.tenant(args.tenant).id] if args.tenant else [
            t.id for t in catalog.tenants]
        out = Path(args.out)
        with _migrated_store(settings) as store:
            with store.read() as session:
                bundle = build_bundle(session, catalog, tenants=tenants, start=args.start,
                                      end=args.end, secret=settings.secret,
                                      generated_at=clock.utcnow(),
                                      generated_by="veil evidence (operator)")
            try:
                partial = out.with_name(out.name + ".part")
                partial.write_bytes(bundle.data)
                partial.replace(out)
            except OSError as exc:
                raise VeilError(f"cannot write {out}: {exc.strerror or exc}") from None
            for tenant in tenants:
                audit(store, principal="veil evidence", tenant=tenant, role=None,
                      action="evidence_bundle", target=f"{args.start:%Y-%m}..{args.end:%Y-%m}",
                      outcome="allowed", detail={"sha256": bundle.sha256, "file": str(out)})
        print(f"evidence bundle for {', '.join(tenants)}, {args.start:%Y-%m} – {args.end:%Y-%m}:"
              f" {out} ({len(bundle.data):,} bytes, {len(bundle.manifest['members'])} members, "
              f"SHA-256 {bundle.sha256})")
        print(f"signed with Ed25519 key {bundle.manifest['signature']['public_key']}"
              + (" (the DEMO key: proves integrity, not origin)"
                 if bundle.manifest["signature"]["demo_key"] else ""))
        return
    if action[0] == "key" and len(action) == 1:
        print(public_key_pem(settings.secret) if args.pem else public_key(settings.secret))
        return
    if action[0] != "verify" or len(action) != 2:
        raise VeilError(f"unknown evidence action {' '.join(action)!r}; use `veil evidence "
                        f"--from … --to … --out FILE`, `veil evidence verify FILE` or "
                        f"`veil evidence key`")
    path = Path(action[1])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VeilError(f"cannot read {path}: {exc.strerror or exc}") from None
    key = args.public_key or public_key(settings.secret)
    manifest = verify_bundle(data, public_key=key)
    print(f"{path}: verified — signature by {key[:16]}… holds and all "
          f"{len(manifest['members'])} members match their SHA-256 "
          f"(tenants {', '.join(manifest['tenants'])}, {manifest['period']['from']} – "
          f"{manifest['period']['to']}, generated {manifest['generated_at']})"
          + (" [signed with the DEMO key]" if manifest["signature"]["demo_key"] else ""))


def _add_operations_parsers(sub) -> None:
    jobs = sub.add_parser("jobs", help="job history: materialisation and export runs (status, "
                                       "rows, duration, error), newest first")
    jobs.add_argument("--status", choices=("running", "succeeded", "failed"))
    jobs.add_argument("--kind", choices=("materialize", "export", "ingest", "demo"))
    jobs.add_argument("--since", type=_iso_date, metavar="YYYY-MM-DD",
                      help="runs started on or after this day (UTC)")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many runs (1–1000)")
    jobs.add_argument("--tenant")

    alerts = sub.add_parser("alerts", help="what needs attention (SLO breaches, budgets near "
                                           "their cap, failed jobs); --send posts new ones to "
                                           "VEIL_ALERT_WEBHOOK_URL")
    alerts.add_argument("--send", action="store_true",
                        help="post each alert not delivered yet (once) to the webhook")
    alerts.add_argument("--tenant")

    evidence = sub.add_parser(
        "evidence", help="write a signed evidence bundle for a period; `verify FILE` checks one",
        description="veil evidence --from 2026-01 --to 2026-06 --out FILE writes the bundle; "
                    "veil evidence verify FILE [--public-key HEX] checks it; veil evidence key "
                    "[--pem] prints the public key auditors verify with.")
    evidence.add_argument("action", nargs="*", metavar="verify FILE | key",
                          help="verify FILE: check a bundle; key: print the public key")
    evidence.add_argument("--from", dest="start", type=_month, metavar="YYYY-MM")
    evidence.add_argument("--to", dest="end", type=_month, metavar="YYYY-MM")
    evidence.add_argument("--out", metavar="FILE")
    evidence.add_argument("--tenant", help="one tenant (default: every tenant)")
    evidence.add_argument("--public-key", metavar="HEX",
                          help="verify against this key (default: this deployment's key)")
    evidence.add_argument("--pem", action="store_true", help="key: print it as PEM")


def _iso_date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


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
    _add_ingestion_parsers(sub)
    _add_export_parsers(sub)
    _add_operations_parsers(sub)
    return parser


COMMANDS = {"publish": _cmd_publish, "init": _cmd_init, "demo": _cmd_demo, "materialize": _cmd_materialize,
            "budgets": _cmd_budgets, "check": _cmd_check}
COMMANDS.update(_INGESTION_COMMANDS)
COMMANDS["export-worker"] = _cmd_export_worker
COMMANDS.update({"jobs": _cmd_jobs, "alerts": _cmd_alerts, "evidence": _cmd_evidence})


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
