"""``veil publish``: donor snapshots under each tenant's publication identity."""

from __future__ import annotations

from data.errors import VeilError


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
    """Publish the default donor snapshots (``gate.snapshots.series``): every count metric of
    every published series by state over the latest complete months, for every tenant, and
    every other published series whose data has changed since it was published."""
    return gate.snapshots.publish_defaults(months=months, level=level,
                                           requested_by=requested_by)


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


def _cmd_snapshots(args, settings) -> None:
    import threading
    from datetime import timedelta

    from privacy import open_gate

    gate = open_gate(settings)
    try:
        every = timedelta(hours=args.every_hours)
        if args.worker:
            print(f"snapshot scheduler: checking every {args.check_seconds:g} s, running at "
                  f"least every {args.every_hours:g} h (Ctrl-C stops)")
            try:
                gate.snapshots.run_worker(stop=threading.Event(), every=every,
                                          check_seconds=args.check_seconds)
            except KeyboardInterrupt:
                return
        run = gate.snapshots.run_scheduled(every=every, force=args.force)
        if run is None:
            print("nothing due: every default snapshot is current and a run succeeded within "
                  f"{args.every_hours:g} h (or another run is in progress)")
            return
        for release in run.published:
            print(f"{release.tenant:<12} {release.product:<24} {release.query.metric:<16} "
                  f"{release.query.start:%Y-%m}..{release.query.end:%Y-%m}  "
                  f"ε {release.charged.value:g} charged  release {release.id[:8]}")
        print(f"snapshot run {run.id}: {len(run.published)} of {run.due} due published in "
              f"{run.seconds:.2f} s")
        if run.failed:
            raise VeilError("; ".join(run.errors))
    finally:
        gate.close()
