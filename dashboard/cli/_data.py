"""``veil init``, ``demo`` and ``materialize``, and ingestion: files, consent, collector
sources and their API, freshness (SPEC B2-B4, E1)."""

from __future__ import annotations

import sys
import time

from data import clock
from data.bootstrap import init_store
from data.catalog import load_catalog
from data.engine import open_store
from data.errors import VeilError
from data.role_mappings import load_role_mappings

from dashboard.cli._common import _progress, _store
from dashboard.cli._ops import _send_alerts_after_run
from dashboard.cli._publish import publish_defaults


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
                                  incremental=not args.full, workers=args.workers)
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
