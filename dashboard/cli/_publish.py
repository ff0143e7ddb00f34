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
