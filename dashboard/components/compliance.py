"""Compliance views (D7): logs, export records, budgets, policy diffs, KPI history, consent,
data quality and the bias-check dataset — rendered from what ``gate.compliance`` returns.

Frames are built by plain functions (``*_frame``) so they can be read without Streamlit; the
``show_*`` functions render them. Nothing here reads a store or computes a private value: the
bias-check chart draws released values with their intervals, exactly as released.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard.components.badges import interval_percent
from dashboard.components.charts import release_frame
from privacy import (
    BudgetUsage,
    ConsentStatistics,
    KpiDefinition,
    LogPage,
    PolicyDiff,
    PolicyVersion,
    ProductQuality,
    Release,
)

__all__ = ["attention_frame", "audit_frame", "bias_chart", "bias_csv", "budget_chart",
           "consent_chart", "export_frame", "jobs_frame", "quality_frame", "release_log_frame",
           "show_attention", "show_audit_log", "show_budget_usage", "show_consent",
           "show_evidence_bundle", "show_export_records", "show_jobs", "show_kpi_history",
           "show_policy_diff", "show_policy_versions", "show_quality", "show_release_log",
           "show_showback", "showback_frame"]

_PALETTE = ["#2E6F95", "#B23A48", "#3C8D5A", "#D08C2E", "#6B4C9A", "#4A4A4A", "#1F9E89",
            "#8C564B"]
_BREACH = "background-color: #FBE3E4; color: #7A1C24"
_DAY_MS = 86_400_000
#: log times to the second (the store keeps microseconds; the digest and export keep them too)
_WHEN = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")


def _page_caption(page: LogPage, noun: str) -> None:
    if page.total:
        first = (page.page - 1) * page.page_size + 1
        last = first + len(page.rows) - 1
        st.caption(f"{noun} {first:,}–{last:,} of {page.total:,} · page {page.page} of "
                   f"{page.pages} · newest first")


# --- logs ------------------------------------------------------------------------------------


def audit_frame(page: LogPage) -> pd.DataFrame:
    return pd.DataFrame([{
        "When (UTC)": r.at, "Who": r.principal, "Role": r.role or "—", "Action": r.action,
        "Target": r.target, "Outcome": r.outcome, "Detail": r.detail} for r in page.rows],
        columns=["When (UTC)", "Who", "Role", "Action", "Target", "Outcome", "Detail"])


def show_audit_log(page: LogPage) -> None:
    if not page.total:
        st.info("No audit entries match these filters.")
        return
    frame = audit_frame(page)
    st.dataframe(frame.style.apply(
        lambda row: [_BREACH if row["Outcome"] != "allowed" else ""] * len(row), axis=1),
        hide_index=True, width="stretch", column_config={"When (UTC)": _WHEN})
    _page_caption(page, "Entries")


def release_log_frame(page: LogPage) -> pd.DataFrame:
    return pd.DataFrame([{
        "Release id": r.id, "When (UTC)": r.at, "Who": r.principal, "Role": r.role,
        "Product": r.product, "Metric": r.metric, "Level": r.level, "Months": r.window,
        "Grouped by": ", ".join(r.group_by[1:]) or "—",
        "Filters": ", ".join(f"{d}={v}" for d, v in r.filters) or "—",
        "ε": r.epsilon, "Mechanism": r.mechanism, "Policy version": r.policy_version,
        "Data version": r.data_version, "Digest": r.digest,
        "Published": "yes" if r.published else "no"} for r in page.rows],
        columns=["Release id", "When (UTC)", "Who", "Role", "Product", "Metric", "Level",
                 "Months", "Grouped by", "Filters", "ε", "Mechanism", "Policy version",
                 "Data version", "Digest", "Published"])


def show_release_log(page: LogPage) -> None:
    if not page.total:
        st.info("No releases match these filters.")
        return
    st.dataframe(release_log_frame(page), hide_index=True, width="stretch",
                 column_config={"ε": st.column_config.NumberColumn(format="%.4g"),
                                "When (UTC)": _WHEN})
    st.caption("ε is what a release cost when it was computed; a release whose months were "
               "all released before cost 0. Released values are not repeated here.")
    _page_caption(page, "Releases")


_EXPORT_COLUMNS = ["Export id", "Requester", "Purpose", "Status", "Rows", "ε",
                   "Policy version", "Digest", "Requested (UTC)", "Finished (UTC)", "Product",
                   "Justification", "Reviewed by", "Umbrella", "Format"]


def export_frame(page: LogPage) -> pd.DataFrame:
    """One row per export: what, who, why, which policy, what it cost, what was delivered."""
    return pd.DataFrame([{
        "Export id": r.id, "Requester": r.requester, "Purpose": r.purpose, "Status": r.status,
        "Rows": r.row_count, "ε": r.epsilon, "Policy version": r.policy_version,
        "Digest": r.digest, "Requested (UTC)": r.requested_at, "Finished (UTC)": r.finished_at,
        "Product": r.product, "Justification": r.justification,
        "Reviewed by": ", ".join(r.approvers) or None, "Umbrella": "yes" if r.umbrella else "no",
        "Format": r.format} for r in page.rows], columns=_EXPORT_COLUMNS)


def show_export_records(page: LogPage) -> None:
    if not page.total:
        st.info("No export records match these filters.")
        return
    frame = export_frame(page)
    shown = frame.assign(
        Rows=[("—" if pd.isna(n) else f"{int(n):,}") for n in frame["Rows"]],
        ε=[f"{e:g}" for e in frame["ε"]],
        **{"Requested (UTC)": [f"{t:%Y-%m-%d %H:%M}" for t in frame["Requested (UTC)"]],
           "Finished (UTC)": [("—" if pd.isna(t) else f"{t:%Y-%m-%d %H:%M}")
                              for t in frame["Finished (UTC)"]]},
    ).fillna("—")
    # A plain table: every record's id, digest and policy version is text on the page, so it
    # can be searched, copied into an incident report, and read by assistive technology.
    st.table(shown, hide_index=True)
    _page_caption(page, "Exports")


# --- budgets ---------------------------------------------------------------------------------


def budget_chart(usage: BudgetUsage) -> go.Figure:
    """ε committed per day, stacked by role and product."""
    figure = go.Figure()
    series: dict[tuple[str, str], list] = {}
    for day in usage.days:
        series.setdefault((day.role, day.product), []).append(day)
    for i, ((role, product), days) in enumerate(sorted(series.items())):
        # Each bar spans its whole UTC day (centred at noon, 80% of a day wide), so a single
        # day of spending is still a visible bar on a month-long axis.
        figure.add_trace(go.Bar(
            x=[f"{d.day:%Y-%m-%d} 12:00" for d in days], y=[d.epsilon for d in days],
            width=[_DAY_MS * 0.8] * len(days), customdata=[d.day.isoformat() for d in days],
            name=f"{role} · {product}", marker={"color": _PALETTE[i % len(_PALETTE)]},
            hovertemplate=f"{role} · {product}<br>" + "%{customdata}: ε %{y:.4g}<extra></extra>"))
    figure.update_layout(barmode="stack", xaxis_title="Day (UTC)", yaxis_title="ε committed",
                         margin={"t": 24, "l": 8, "r": 8, "b": 8},
                         legend={"orientation": "h", "y": -0.25},
                         xaxis={"type": "date",
                                "range": [f"{usage.start:%Y-%m-%d}",
                                          f"{usage.end + timedelta(days=1):%Y-%m-%d}"]})
    return figure


def show_budget_usage(usage: BudgetUsage) -> None:
    if usage.days:
        st.plotly_chart(budget_chart(usage), width="stretch")
    else:
        st.info("No ε was committed in this period.")
    st.markdown(f"**Current window** ({usage.window_start:%d %b} – {usage.window_end:%d %b %Y}): "
                f"spent against caps per role and product")
    if not usage.lines:
        st.caption("Nobody has spent budget in the current window.")
        return
    lines = pd.DataFrame([{
        "Role": line.role, "Product": line.product, "Principals": line.principals,
        "ε spent": line.spent, "ε cap (sum)": line.cap, "Fullest account": line.fullest,
        "δ spent": line.delta_spent, "Fullest δ": line.delta_fullest}
        for line in usage.lines])
    st.dataframe(lines, hide_index=True, width="stretch", column_config={
        "Fullest account": st.column_config.ProgressColumn(
            "Fullest account", help="The largest share of its own cap any one principal used",
            format="percent", min_value=0.0, max_value=1.0),
        "δ spent": st.column_config.NumberColumn(
            "δ spent", help="Gaussian-noise releases spend δ as well as ε (0: pure ε-DP)",
            format="%.1e"),
        "Fullest δ": st.column_config.ProgressColumn(
            "Fullest δ", help="The largest share of its own δ cap any one principal used",
            format="percent", min_value=0.0, max_value=1.0)})
    with st.expander("Accounts in the current window"):
        st.dataframe(pd.DataFrame([{
            "Principal": a.principal, "Role": a.role, "Product": a.product, "ε spent": a.spent,
            "ε cap": a.cap, "ε remaining": a.remaining, "δ spent": a.delta_spent,
            "δ cap": a.delta_cap} for a in usage.accounts]),
            hide_index=True, width="stretch")
    st.caption("Spent includes reservations held by running exports.")


def show_period_usage(periods) -> None:
    """Per product and data month: the lifetime budget spent against its cap, and by whom."""
    st.markdown("**Lifetime budget per month of data**: everything ever released about a "
                "month, by anyone, draws from that month's budget, which never refills")
    if not periods:
        st.caption("Nothing has been released about any month of data yet.")
        return
    frame = pd.DataFrame([{
        "Product": p.product, "Data month": f"{p.period:%b %Y}", "ε spent": p.spent,
        "Lifetime ε": p.cap, "Used": p.spent / p.cap if p.cap > 0 else 0.0,
        "δ spent": p.delta_spent, "Releases": p.releases, "Principals": p.principals,
        "By role (ε)": ", ".join(f"{role} {eps:g}" for role, eps in p.by_role.items())}
        for p in periods])
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "Used": st.column_config.ProgressColumn(
            "Used", help="Share of the month's lifetime ε spent (viewers stop at their share; "
                         "the rest is kept for publication and umbrella exports)",
            format="percent", min_value=0.0, max_value=1.0),
        "δ spent": st.column_config.NumberColumn("δ spent", format="%.1e")})


# --- policies and KPI definitions ------------------------------------------------------------


def show_policy_versions(versions: tuple[PolicyVersion, ...]) -> None:
    st.dataframe(pd.DataFrame([{
        "Policy version": v.version, "Recorded (UTC)": v.recorded_at,
        "In force": "current" if v.current else "", "Releases": v.releases,
        "Exports": v.exports, "Files": ", ".join(v.files)} for v in versions]),
        hide_index=True, width="stretch")


def show_policy_diff(diff: PolicyDiff) -> None:
    if diff.old == diff.new:
        st.info("Choose two different versions to compare.")
        return
    if not diff.changed:
        st.success("The two versions' files are identical.")
        return
    st.caption(f"{diff.old[:12]} → {diff.new[:12]}: "
               + "; ".join(f"{f.name} {f.status} (+{f.added} −{f.removed})"
                           for f in diff.changed))
    for changed in diff.changed:
        with st.expander(f"{changed.name} — {changed.status}", expanded=True):
            st.code(changed.diff, language="diff")


def show_kpi_history(definitions: tuple[KpiDefinition, ...]) -> None:
    st.dataframe(pd.DataFrame([{
        "Product": d.product_title, "Metric": d.metric_title, "Version": f"v{d.version}",
        "From": d.effective_from, "Until": d.until, "In effect": "yes" if d.in_effect else "",
        "Definition": d.definition} for d in definitions]),
        hide_index=True, width="stretch")
    changed = sorted({(d.product_title, d.metric_title) for d in definitions if d.version > 1})
    if changed:
        st.caption("Redefined KPIs: " + "; ".join(f"{m} ({p})" for p, m in changed)
                   + ". Series across a change mix definitions; trends mark the change.")


# --- consent ---------------------------------------------------------------------------------


def consent_chart(stats: ConsentStatistics) -> go.Figure:
    """Grants (top) and withdrawals (bottom) per month, one bar per vertical: exact counts."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=("Grants", "Withdrawals"))
    verticals = sorted({m.vertical for m in stats.months})
    for i, vertical in enumerate(verticals):
        months = [m for m in stats.months if m.vertical == vertical]
        colour = _PALETTE[i % len(_PALETTE)]
        for row, values in ((1, [m.grants for m in months]), (2, [m.withdrawals for m in months])):
            figure.add_trace(go.Bar(x=[m.month for m in months], y=values, name=vertical,
                                    legendgroup=vertical, showlegend=row == 1,
                                    marker={"color": colour},
                                    hovertemplate=f"{vertical} " + "%{x}: %{y:,}<extra></extra>"),
                             row=row, col=1)
    figure.update_layout(barmode="group", height=460, margin={"t": 32, "l": 8, "r": 8, "b": 8},
                         legend={"orientation": "h", "y": -0.12})
    figure.update_xaxes(type="category", title_text="Month (UTC)", row=2, col=1)
    figure.update_yaxes(rangemode="tozero", tickformat=",d")
    return figure


def show_consent(stats: ConsentStatistics, *, names: dict[str, str]) -> None:
    st.plotly_chart(consent_chart(stats), width="stretch")
    left, right = st.columns(2)
    with left:
        st.markdown("**Subjects by current consent**")
        st.dataframe(pd.DataFrame([{
            "Vertical": v.vertical, "Granted": v.granted, "Withdrawn": v.withdrawn}
            for v in stats.verticals]), hide_index=True, width="stretch")
    with right:
        st.markdown("**Effect on counts: events excluded by withdrawals**")
        st.dataframe(pd.DataFrame([{
            "Product": e.title, "Vertical": e.vertical, "Events excluded": e.events}
            for e in stats.excluded]), hide_index=True, width="stretch")
    st.markdown("**Withdrawn subjects by district**")
    st.dataframe(pd.DataFrame([{
        "Vertical": a.vertical,
        "District": (names.get(a.area, a.area) if a.area != "other"
                     else f"{a.areas} other districts combined"),
        "Withdrawn": a.withdrawn if a.withdrawn is not None else f"fewer than {stats.k}",
        "Shown as": a.status} for a in stats.areas]).astype({"Withdrawn": str}),
        hide_index=True, width="stretch")
    st.caption(f"Tenant-level counts are exact: they are the consent register's own totals, "
               f"which compliance must reconcile. By district, areas with fewer than "
               f"k = {stats.k} withdrawn subjects are combined (and widened so that no single "
               f"district can be worked out from the totals).")


# --- cost showback ---------------------------------------------------------------------------


def showback_frame(report) -> pd.DataFrame:
    """One row per domain: what its numbers cost, what it stores, what rebuilding it took."""
    return pd.DataFrame([{
        "Domain": d.title, "ε in all": d.epsilon, "Releases": d.releases,
        "ε by releases": d.release_epsilon, "Exports": d.exports,
        "ε by exports": d.export_epsilon, "Rows stored": d.stored_rows,
        "Aggregate rows": d.cube_rows, "Rows ingested": d.rows_ingested,
        "Rebuilds": d.rebuilds, "Failed rebuilds": d.failed_rebuilds,
        "Rebuild time (s)": d.rebuild_seconds, "Products": ", ".join(d.products)}
        for d in report.domains])


def show_showback(report) -> None:
    st.caption(f"{report.start:%d %b %Y} – {report.end:%d %b %Y} ({report.days} days). Rows "
               f"stored and aggregate rows are as they stand now; rebuilds, ingested rows, "
               f"releases and exports are those started in the period. ε is what each release "
               f"or export charged: a view served from a stored, published or derived release "
               f"charged nothing.")
    frame = showback_frame(report)
    whole = {"format": "localized"}
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "Rows stored": st.column_config.NumberColumn(**whole),
        "Aggregate rows": st.column_config.NumberColumn(**whole),
        "Rows ingested": st.column_config.NumberColumn(**whole),
        "Rebuild time (s)": st.column_config.NumberColumn(format="%.1f"),
        "ε by releases": st.column_config.NumberColumn(format="%.4g"),
        "ε by exports": st.column_config.NumberColumn(format="%.4g"),
        "ε in all": st.column_config.NumberColumn(format="%.4g")})


# --- data quality ----------------------------------------------------------------------------


def quality_frame(products: tuple[ProductQuality, ...]) -> pd.DataFrame:
    return pd.DataFrame([{
        "Status": "⚠ breach" if q.breached else "✓ within SLO",
        "Product": q.title, "Breaches": "; ".join(q.breaches) or "—", "SLO (h)": q.slo_hours,
        "Last refresh (UTC)": q.last_refresh,
        "Refresh age (h)": None if q.refresh_age_hours is None else round(q.refresh_age_hours, 1),
        "Newest event (UTC)": q.newest_event,
        "Data age (h)": None if q.data_age_hours is None else round(q.data_age_hours, 1),
        "Months waiting": q.pending_months, "Last job": q.last_job_status or "—",
        "Months with data": f"{q.months_with_data} of {q.expected_months}",
        "Completeness": q.completeness,
        "Quarantined": q.quarantine_rate} for q in products])


def show_quality(products: tuple[ProductQuality, ...]) -> None:
    breached = [q for q in products if q.breached]
    if breached:
        st.error(f"{len(breached)} of {len(products)} products breach their SLO: "
                 + ", ".join(q.title for q in breached), icon=":material/warning:")
    else:
        st.success(f"All {len(products)} products are within their SLO.",
                   icon=":material/check_circle:")
    frame = quality_frame(products)
    st.dataframe(frame.style.apply(
        lambda row: [_BREACH if row["Status"].startswith("⚠") else ""] * len(row), axis=1),
        hide_index=True, width="stretch", column_config={
            "Refresh age (h)": st.column_config.NumberColumn(format="%.1f"),
            "Data age (h)": st.column_config.NumberColumn(format="%.1f"),
            "Completeness": st.column_config.ProgressColumn(
                "Completeness", format="percent", min_value=0.0, max_value=1.0,
                help="Months with data / months expected in the longest series window"),
            "Quarantined": st.column_config.NumberColumn(
                "Quarantined", format="percent",
                help="Share of ingested rows quarantined in the window (information)")})
    if products:
        q = products[0]
        st.caption(f"Completeness window: {q.window_start:%b %Y} (or the product's first month "
                   f"of data) to {q.window_end:%b %Y}. Freshness breaches when the cube was never "
                   f"built, changes wait longer than the SLO, or the newest event is older "
                   f"than the SLO.")


# --- job history, attention, evidence (issue 20) ---------------------------------------------


_JOB_COLUMNS = ["Status", "Job", "Product", "Started (UTC)", "Finished (UTC)", "Duration (s)",
                "Rows", "Error", "Run"]


def jobs_frame(runs) -> pd.DataFrame:
    """One row per run (``JobRecord``s from ``gate.compliance.job_history``), newest first."""
    return pd.DataFrame([{
        "Status": "✗ failed" if r.failed else r.status, "Job": r.kind,
        "Product": r.product or "—", "Started (UTC)": r.started_at,
        "Finished (UTC)": r.finished_at,
        "Duration (s)": None if r.duration_s is None else round(r.duration_s, 2),
        "Rows": r.rows, "Error": r.error or "", "Run": r.id} for r in runs],
        columns=_JOB_COLUMNS)


def show_jobs(runs) -> None:
    if not runs:
        st.info("No job runs match these filters.")
        return
    failed = [r for r in runs if r.failed]
    if failed:
        st.error(f"{len(failed)} of {len(runs)} runs failed; the newest: {failed[0].kind} of "
                 f"{failed[0].product or '—'} at {failed[0].started_at:%Y-%m-%d %H:%M} UTC.",
                 icon=":material/error:")
    st.dataframe(jobs_frame(runs).style.apply(
        lambda row: [_BREACH if row["Status"].startswith("✗") else ""] * len(row), axis=1),
        hide_index=True, width="stretch", column_config={
            "Duration (s)": st.column_config.NumberColumn(format="%.2f"),
            "Rows": st.column_config.NumberColumn(format="%d"),
            "Started (UTC)": _WHEN, "Finished (UTC)": _WHEN})
    st.caption("Materialisation runs rebuild the aggregate cubes; export runs build requested "
               "files; retention runs purge the raw events of closed months (their rows: the "
               "events deleted; the aggregates are kept). A failed materialisation leaves the "
               "previous cube in place.")


_KIND_TITLES = {"slo_breach": "SLO breached", "budget_near_cap": "Budget near its cap",
                "job_failed": "Job failed", "refusal_spike": "Refusals spiking"}


def attention_frame(items) -> pd.DataFrame:
    """One row per alert (``AlertState``s from ``gate.compliance.attention``)."""
    def webhook(item) -> str:
        if item.delivered_at is not None:
            return f"sent {item.delivered_at:%Y-%m-%d %H:%M}"
        if item.attempts:
            return f"not sent ({item.attempts} attempt(s)): {item.last_error}"
        return "not sent yet"

    return pd.DataFrame([{
        "Severity": "‼ critical" if i.alert.severity == "critical" else "warning",
        "Kind": _KIND_TITLES.get(i.alert.kind, i.alert.kind),
        "Product": i.alert.product or "—", "What": i.alert.title, "Since (UTC)": i.alert.since,
        "Webhook": webhook(i), "Alert id": i.alert.key} for i in items],
        columns=["Severity", "Kind", "Product", "What", "Since (UTC)", "Webhook", "Alert id"])


def show_attention(items) -> None:
    if not items:
        st.success("Nothing needs attention: every product is within its SLO, no budget is "
                   "near its cap and no job has failed recently.",
                   icon=":material/check_circle:")
        return
    counts: dict[str, int] = {}
    for item in items:
        counts[item.alert.kind] = counts.get(item.alert.kind, 0) + 1
    summary = "; ".join(f"{_KIND_TITLES.get(k, k)}: {n}" for k, n in counts.items())
    critical = sum(1 for i in items if i.alert.severity == "critical")
    (st.error if critical else st.warning)(
        f"{len(items)} item(s) need attention ({critical} critical). {summary}.",
        icon=":material/notifications_active:")
    st.dataframe(attention_frame(items).style.apply(
        lambda row: [_BREACH if row["Severity"].startswith("‼") else ""] * len(row), axis=1),
        hide_index=True, width="stretch")
    st.caption("Budgets are flagged at 80% of their cap. `veil alerts --send` posts each alert "
               "once to the configured webhook (VEIL_ALERT_WEBHOOK_URL); one that could not be "
               "delivered is retried on the next run.")


def show_evidence_bundle(bundle) -> None:
    """What was built, a download button for it, and how to verify it."""
    manifest = bundle.manifest
    signature = manifest["signature"]
    st.success(f"Evidence bundle for {manifest['period']['from']} – {manifest['period']['to']}: "
               f"{len(manifest['members'])} members, {len(bundle.data):,} bytes, SHA-256 "
               f"{bundle.sha256[:16]}…", icon=":material/verified:")
    st.download_button("Download the evidence bundle", data=bundle.data, file_name=bundle.name,
                       mime="application/zip", icon=":material/download:",
                       key="evidence_download")
    st.dataframe(pd.DataFrame([{"Member": m["name"], "Bytes": m["bytes"],
                                "SHA-256": m["sha256"]} for m in manifest["members"]]),
                 hide_index=True, width="stretch")
    st.markdown(f"Signed with Ed25519 key `{signature['public_key']}`. Anyone can check it: "
                f"`veil evidence verify {bundle.name} --public-key {signature['public_key']}`"
                f" (the README inside says how to check it by hand).")
    if signature["demo_key"]:
        st.warning("This is a demo store: the bundle is signed with the public demo key, so it "
                   "proves the bundle is intact, not who made it.", icon=":material/info:")


# --- the bias-check dataset ------------------------------------------------------------------


def bias_chart(release: Release, *, month: str, order: dict[str, tuple[str, ...]],
               unit: str) -> go.Figure:
    """Grouped bars: one bar per age group and gender for ``month``, each with its interval."""
    frame = release_frame(release)
    frame = frame[frame["month"] == month]
    level = interval_percent(release)
    figure = go.Figure()
    ages = list(order["age_bucket"])
    for i, gender in enumerate(order["gender"]):
        part = frame[frame["gender"] == gender].set_index("age_bucket").reindex(ages)
        shown = part["value"].notna()
        colour = _PALETTE[i % len(_PALETTE)]
        figure.add_trace(go.Bar(
            x=[a for a, s in zip(ages, shown) if s], y=part["value"][shown], name=gender,
            marker={"color": colour},
            error_y={"type": "data", "symmetric": False,
                     "array": (part["upper"] - part["value"])[shown],
                     "arrayminus": (part["value"] - part["lower"])[shown]},
            customdata=part.loc[shown, ["lower", "upper"]].to_numpy(),
            hovertemplate=(f"{gender}, " + "%{x}: %{y:,.1f} (" + f"{level}"
                           + "% interval %{customdata[0]:,.1f}–%{customdata[1]:,.1f})"
                           "<extra></extra>")))
        hidden = [a for a, s in zip(ages, shown) if not s]
        if hidden:
            # Marked at the top of the plot on a hidden axis of its own: a suppressed cell has
            # no value, and a mark at 0 on the value axis would read as one.
            figure.add_trace(go.Scatter(
                x=hidden, y=[0.97] * len(hidden), yaxis="y2", mode="markers",
                showlegend=False, marker={"symbol": "x-thin-open", "color": colour, "size": 9,
                                          "line": {"width": 2, "color": colour}},
                hovertemplate=f"{gender}, " + "%{x}: suppressed (fewer than k = "
                              + f"{release.k} people), no value shown<extra></extra>"))
    figure.update_layout(barmode="group", title=f"{unit}, {month}", xaxis_title="Age group",
                         yaxis_title=unit, margin={"t": 48, "l": 8, "r": 8, "b": 8},
                         legend={"orientation": "h", "y": -0.2, "title": {"text": "Gender"}},
                         xaxis={"categoryorder": "array", "categoryarray": ages},
                         yaxis2={"overlaying": "y", "range": [0, 1], "visible": False,
                                 "fixedrange": True})
    figure.add_annotation(text=f"× at the top: suppressed (fewer than k = {release.k})",
                          xref="paper", yref="paper", x=1, y=1.02, showarrow=False,
                          xanchor="right", yanchor="bottom", font={"size": 11})
    return figure


def bias_csv(release: Release, *, title: str) -> str:
    """The dataset as released, with the privacy note on top."""
    frame = release_frame(release).drop(columns="area")
    note = (f"# Veil bias-check dataset, release {release.id}: {title}\n"
            f"# {release.guarantee} Cells under k={release.k} are suppressed (empty); "
            f"lower/upper are {interval_percent(release)}% intervals.\n"
            f"# policy {release.policy_version} · data version {release.data_version} · "
            f"digest {release.digest}\n")
    return note + frame.to_csv(index=False)
