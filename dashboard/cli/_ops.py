"""Operations: the export worker (SPEC D6, E1), job history, alerts and evidence bundles
(issue 20)."""

from __future__ import annotations

import sys

from data import clock
from data.catalog import load_catalog
from data.errors import VeilError

from dashboard.cli._common import _iso_date, _migrated_store, _month, _red, _store


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


def _cmd_jobs(args, settings) -> None:
    from datetime import datetime

    from privacy.compliance.jobs import job_history

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


def _cmd_retention(args, settings) -> None:
    from data.retention import purge_expired

    catalog = load_catalog(settings.catalog_dir)
    with _migrated_store(settings) as store:
        purges = purge_expired(store, catalog, tenant=args.tenant, product=args.product,
                               dry_run=args.dry_run)
    if not purges:
        print("no product declares raw_retention_days: nothing to purge")
        return
    verb = "would purge" if args.dry_run else "purged"
    for purge in purges:
        months = (f"{purge.months[0]:%Y-%m} – {purge.months[-1]:%Y-%m}" if purge.months
                  else "no months")
        print(f"{purge.tenant:<14} {purge.product:<28} {verb} {purge.rows:>11,} raw events "
              f"({months}; months before {purge.purge_before:%Y-%m}, retention "
              f"{purge.retention_days} days)")


def _send_alerts_after_run(store, catalog, settings, *, tenant: str | None) -> None:
    """After a job: post new alerts to the webhook; a delivery problem is reported on stderr
    and never changes the job's own outcome (the alerts are retried by the next run)."""
    from sqlalchemy.exc import SQLAlchemyError

    from privacy.compliance.alerts import send_alerts

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
    from privacy.compliance.alerts import alert_states, current_alerts, send_alerts

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


def _cmd_evidence(args, settings) -> None:
    from pathlib import Path

    from privacy.compliance.evidence import build_bundle, public_key, public_key_pem, verify_bundle
    from privacy.core import audit

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
    jobs.add_argument("--kind", choices=("materialize", "export", "ingest", "demo", "retention",
                                         "snapshot"))
    jobs.add_argument("--since", type=_iso_date, metavar="YYYY-MM-DD",
                      help="runs started on or after this day (UTC)")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many runs (1–1000)")
    jobs.add_argument("--tenant")

    retention = sub.add_parser(
        "retention", help="purge the raw events of months closed longer than each product's "
                          "raw_retention_days (cube rows are kept); run it daily from cron")
    retention.add_argument("--tenant")
    retention.add_argument("--product")
    retention.add_argument("--dry-run", action="store_true",
                           help="say what would be purged, delete nothing")

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
