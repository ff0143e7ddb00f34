"""Compliance: who did what with your tenant's data, why, under which policy, at what ε cost."""

from datetime import date, timedelta

import streamlit as st

from dashboard.components import compliance as views
from dashboard.components.badges import budget_meter, privacy_badge, spend_button
from dashboard.components.clock import data_as_of, months_slider
from dashboard.components.charts import release_frame
from dashboard.components.errors import guarded
from dashboard.components.levels import level_select
from dashboard.context import page_context
from privacy import (AuditFilter, BudgetFilter, ConsentFilter, ExportFilter, ReleaseFilter,
                     add_months)

gate, principal = page_context("compliance")
catalog = gate.catalog
today = gate.today()  # the audit and budget records' calendar (not the data's)
st.title("Compliance")
st.caption(f"Records of {catalog.tenant(principal.tenant).name} only. Each section you open is "
           f"itself recorded in the audit log.")

SECTIONS = ["Export records", "Attention", "Job history", "Audit log", "Release log",
            "Budget usage", "Policy versions", "KPI definitions", "Consent",
            "Freshness & completeness", "Cost by domain", "Bias check", "Evidence bundle"]
# Only the open tab runs (and is audited); the open tab is in the URL (?section=…) to link to.
tabs = dict(zip(SECTIONS, st.tabs(SECTIONS, key="section", on_change="rerun",
                                  bind="query-params")))
PERIODS = {"Last 7 days": 7, "Last 30 days": 30, "Last 365 days": 365, "All time": None}
EXPORT_STATUSES = ["any", "pending", "queued", "running", "done", "failed", "rejected"]
JOB_STATUSES = ["any", "failed", "succeeded", "running"]
JOB_KINDS = {"any": None, "Materialisation": "materialize", "Export": "export",
             "Retention": "retention", "Donor snapshots": "snapshot"}
# Every filter is in the URL under its key (?audit_period=Last+30+days&audit_outcome=refused),
# so a compliance view can be linked to and survives a refresh; values not offered are ignored.
URL = "query-params"


def since(label: str) -> date | None:
    return None if PERIODS[label] is None else today - timedelta(days=PERIODS[label] - 1)


if tabs["Export records"].open:
    with tabs["Export records"]:
        st.subheader("Export records")
        st.caption("What was exported, by whom, why, under which policy and at what ε.")
        left, middle, right, far = st.columns([2, 2, 3, 1])
        period = left.selectbox("Requested", list(PERIODS), index=3, key="export_period",
                                bind=URL)
        status = middle.selectbox("Status", EXPORT_STATUSES, key="export_status", bind=URL)
        requester = right.text_input("Requester starts with", max_chars=64,
                                     key="export_requester", bind=URL)
        number = far.number_input("Page", min_value=1, value=1, step=1, key="export_page",
                                  bind=URL)
        with guarded():
            records = gate.compliance.export_records(principal, ExportFilter(
                start=since(period), status=None if status == "any" else status,
                requester=requester, page=int(number), page_size=25))
        views.show_export_records(records)

if tabs["Attention"].open:
    with tabs["Attention"]:
        st.subheader("Needs attention")
        st.caption("SLO breaches, budgets at 80% of their cap or more, failed jobs and spikes "
                   "of refused requests, as of now.")
        with guarded():
            items = gate.compliance.attention(principal)
        views.show_attention(items)

if tabs["Job history"].open:
    with tabs["Job history"]:
        st.subheader("Job history")
        left, middle, right = st.columns(3)
        period = left.selectbox("Started", list(PERIODS), index=1, key="jobs_period", bind=URL)
        status = middle.selectbox("Status", JOB_STATUSES, key="jobs_status", bind=URL)
        kind = right.selectbox("Job", list(JOB_KINDS), key="jobs_kind", bind=URL)
        with guarded():
            runs = gate.compliance.job_history(
                principal, status=None if status == "any" else status, kind=JOB_KINDS[kind],
                since=since(period), limit=200)
        views.show_jobs(runs)

if tabs["Audit log"].open:
    with tabs["Audit log"]:
        st.subheader("Audit log")
        left, middle, right = st.columns(3)
        period = left.selectbox("Period", list(PERIODS), index=0, key="audit_period", bind=URL)
        action = middle.text_input("Action starts with", max_chars=64, key="audit_action",
                                   bind=URL,
                                   placeholder="e.g. release, page_view, export, login")
        outcome = right.selectbox("Outcome", ["any", "allowed", "refused", "error"],
                                  key="audit_outcome", bind=URL)
        left, right = st.columns([3, 1])
        who = left.text_input("Who (starts with)", max_chars=64, key="audit_who", bind=URL)
        number = right.number_input("Page", min_value=1, value=1, step=1, key="audit_page",
                                    bind=URL)
        with guarded():
            entries = gate.compliance.audit_log(principal, AuditFilter(
                start=since(period), action=action, principal=who,
                outcome=None if outcome == "any" else outcome, page=int(number)))
        views.show_audit_log(entries)

if tabs["Release log"].open:
    with tabs["Release log"]:
        st.subheader("Release log")
        products = [None] + [p.id for p in catalog.products if p.kind == "metric_set"]
        left, middle, right = st.columns(3)
        period = left.selectbox("Period", list(PERIODS), index=1, key="release_period", bind=URL)
        product = middle.selectbox("Product", products, key="release_product", bind=URL,
                                   format_func=lambda p: "any" if p is None
                                   else catalog.product(p).title)
        who = right.text_input("Who (starts with)", max_chars=64, key="release_who", bind=URL)
        number = st.number_input("Page", min_value=1, value=1, step=1, key="release_page",
                                 bind=URL)
        with guarded():
            releases = gate.compliance.release_log(principal, ReleaseFilter(
                start=since(period), product=product, principal=who, page=int(number)))
        views.show_release_log(releases)

if tabs["Budget usage"].open:
    with tabs["Budget usage"]:
        st.subheader("Budget usage")
        days = st.select_slider("Days", options=[7, 30, 90, 180, 366], value=30,
                                key="budget_days", bind=URL)
        with guarded():
            usage = gate.compliance.budget_usage(
                principal, BudgetFilter.trailing(days=days, today=today))
        views.show_budget_usage(usage)
        with guarded():
            periods = gate.compliance.period_usage(principal)
        views.show_period_usage(periods)

if tabs["Policy versions"].open:
    with tabs["Policy versions"]:
        st.subheader("Policy versions")
        with guarded():
            versions = gate.compliance.policy_versions(principal)
        views.show_policy_versions(versions)
        if len(versions) < 2:
            st.info("Only one policy version is on record; a diff needs two.")
        else:
            ids = [v.version for v in versions]
            left, right = st.columns(2)
            old = left.selectbox("From", ids, index=1, key="policy_old", bind=URL,
                                 format_func=lambda v: v[:12])
            new = right.selectbox("To", ids, index=0, key="policy_new", bind=URL,
                                  format_func=lambda v: v[:12])
            with guarded():
                diff = gate.compliance.policy_diff(principal, old=old, new=new)
            views.show_policy_diff(diff)

if tabs["KPI definitions"].open:
    with tabs["KPI definitions"]:
        st.subheader("KPI definition history")
        with guarded():
            definitions = gate.compliance.kpi_history(principal)
        views.show_kpi_history(definitions)

if tabs["Consent"].open:
    with tabs["Consent"]:
        st.subheader("Consent statistics")
        months = st.select_slider("Months", options=[6, 12, 24, 36], value=12,
                                  key="consent_months", bind=URL)
        with guarded():
            stats = gate.compliance.consent_statistics(
                principal, ConsentFilter.trailing(months=months, today=today))
        views.show_consent(stats, names={d.code: d.name for d in catalog.districts})

if tabs["Freshness & completeness"].open:
    with tabs["Freshness & completeness"]:
        st.subheader("Freshness and completeness against SLOs")
        with guarded():
            quality = gate.compliance.data_quality(principal)
        views.show_quality(quality)

if tabs["Cost by domain"].open:
    with tabs["Cost by domain"]:
        st.subheader("Cost by domain")
        days = st.select_slider("Days", options=[7, 30, 90, 180, 366], value=30,
                                key="showback_days", bind=URL)
        with guarded():
            report = gate.compliance.cost_showback(principal, days=days)
        views.show_showback(report)

if tabs["Bias check"].open:
    with tabs["Bias check"]:
        st.subheader("Bias check: outcomes by gender and age group")
        st.caption("A differentially private release of one metric by gender and age group, "
                   "to check programmes for unequal outcomes. It spends your privacy budget "
                   "once; viewing it again is free.")
        metrics = {f"{p.id}/{m.id}": (p, m) for p in gate.products(principal)
                   if p.kind == "metric_set" for m in p.metrics}
        keys = list(metrics)
        left, middle, right = st.columns(3)
        key = left.selectbox("Outcome", keys, key="bias_metric", bind=URL,
                             index=keys.index("education.mastery/mastery_score")
                             if "education.mastery/mastery_score" in keys else 0,
                             format_func=lambda k: f"{metrics[k][1].title} — "
                                                   f"{metrics[k][0].title}")
        product, metric = metrics[key]
        level = level_select(middle, gate, principal, key="bias_level")
        with guarded():
            clock = gate.data_clock(principal, product=product.id)
        span = months_slider(right, longest=min(12, clock.longest()), default=3,
                             key="bias_months")
        data_as_of(clock)
        if span is None:
            st.stop()
        with guarded():
            query = gate.compliance.bias_query(principal, product=product.id,
                                               metric=metric.id, months=span, level=level)
            preview = gate.preview(principal, query)
            budget = gate.budget(principal, product=product.id)
            budget_meter(budget, preview, title=product.title)
        if not preview.reused:
            if spend_button(f"Release the bias-check dataset (costs ε {preview.epsilon.value:g})",
                            costs=[preview.epsilon.value], budgets=[budget],
                            key="bias_release"):
                with guarded(), st.spinner("Releasing through the privacy gate…"):
                    gate.release(principal, query)
                st.rerun()  # redraw from the stored release with the updated budget
            st.stop()
        with guarded():
            release = gate.release(principal, query)  # stored: spends nothing
        months_released = sorted({cell.key[0] for cell in release.cells}, reverse=True)
        shown = st.selectbox("Month", months_released, key="bias_month", bind=URL)
        st.plotly_chart(views.bias_chart(release, month=shown, unit=metric.title,
                                         order=catalog.domains), width="stretch")
        privacy_badge(release)
        title = f"{metric.title} ({product.title}) by gender and age group"
        st.download_button("Download CSV", data=views.bias_csv(release, title=title),
                           file_name=f"veil-bias-check-{product.id}-{metric.id}.csv",
                           mime="text/csv", icon=":material/download:", key="bias_csv")
        with st.expander("Table of the released values"):
            st.dataframe(release_frame(release), hide_index=True, width="stretch")

if tabs["Evidence bundle"].open:
    with tabs["Evidence bundle"]:
        st.subheader("Evidence bundle")
        st.caption("One signed archive for an auditor: policy versions and diffs, release-log "
                   "digests, export records and approvals, an audit summary and period budget "
                   "usage for the months chosen. Building it is recorded in the audit log.")
        this_month = today.replace(day=1)
        months = [add_months(this_month, -i) for i in range(36)]
        left, right = st.columns(2)
        first = left.selectbox("From", months, index=6, key="evidence_from", bind=URL,
                               format_func=lambda m: f"{m:%b %Y}")
        last = right.selectbox("To", months, index=1, key="evidence_to", bind=URL,
                               format_func=lambda m: f"{m:%b %Y}")
        built = st.session_state.get("evidence_bundle")
        if built is not None and built[0] != (first, last):
            built = None  # another period: build again
        if st.button("Build the evidence bundle", key="evidence_build",
                     icon=":material/inventory_2:"):
            with guarded(), st.spinner("Collecting and signing the evidence…"):
                bundle = gate.compliance.evidence_bundle(principal, start=first, end=last)
            built = ((first, last), bundle)
            st.session_state["evidence_bundle"] = built
        if built is not None:
            views.show_evidence_bundle(built[1])
