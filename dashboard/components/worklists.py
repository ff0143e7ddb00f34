"""The home page's short lists of what needs attention: case work by status and agent, compliance
alerts, approvals waiting for an administrator.

Like the tiles (``overview``) it never spends and reads no store: the lists come from gate
calls that return operational metadata or records under the role's treatments.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta

import streamlit as st

from dashboard.components.overview import page_link
from privacy import AuditFilter, BudgetFilter, ExportFilter, Gate, Principal, RecordQuery

__all__ = ["Attention", "OpenWork", "admin_queue", "attention", "open_work", "show_admin_queue",
           "show_attention", "show_open_work"]

#: a budget is "near its cap" from this share of it on
NEAR_CAP = 0.8
#: open records read to count them by agent: beyond, the count is of the newest ones only
AGENT_SAMPLE_PAGES, AGENT_PAGE_SIZE = 5, 200


# --- case work --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenWork:
    """Registrations of the tenant waiting for verification, and by whom they were taken."""

    product: str                            # the list's title
    open: int                               # unverified
    done: int                               # verified
    by_agent: tuple[tuple[str, int], ...]   # (agent, open records), most first
    counted: int                            # open records the agent counts cover

    @property
    def sampled(self) -> bool:
        return self.counted < self.open


def open_work(gate: Gate, principal: Principal, *, product: str) -> OpenWork:
    """Counts of open work through ``gate.records`` (each read audited like the list's).

    The gate has no count by field, so agents are counted over the open records read page by
    page, at most AGENT_SAMPLE_PAGES pages (the newest first); beyond that ``sampled`` says so.
    """
    done = gate.records(principal, RecordQuery(product=product,
                                               filters=(("status", "verified"),),
                                               page_size=1)).total
    agents: Counter[str] = Counter()
    total, page = 0, 1
    while page <= AGENT_SAMPLE_PAGES:
        records = gate.records(principal, RecordQuery(
            product=product, filters=(("status", "unverified"),), page=page,
            page_size=AGENT_PAGE_SIZE))
        total = records.total
        agents.update(str(row.get("agent_code") or "unknown") for row in records.rows)
        if page >= records.pages:
            break
        page += 1
    return OpenWork(product=gate.catalog.product(product).title, open=total, done=done,
                    by_agent=tuple(sorted(agents.items(), key=lambda kv: (-kv[1], kv[0]))),
                    counted=sum(agents.values()))


def show_open_work(work: OpenWork, *, top: int = 10) -> None:
    st.subheader(f"Open work: {work.product}")
    left, right = st.columns(2)
    with left, st.container(border=True):
        st.metric("Waiting for verification", f"{work.open:,}")
    with right, st.container(border=True):
        st.metric("Verified", f"{work.done:,}")
    if work.by_agent:
        scope = (f"the {work.counted:,} newest of {work.open:,} open registrations"
                 if work.sampled else "all open registrations")
        st.markdown(f"**Open registrations by agent** ({scope})")
        rows = [{"Agent": agent, "Open registrations": count}
                for agent, count in work.by_agent[:top]]
        st.dataframe(rows, hide_index=True, width="stretch")
        if len(work.by_agent) > top:
            st.caption(f"The {top} agents with most open work of {len(work.by_agent)}.")
    page_link("lists", label="Work through the list", icon=":material/checklist:")


# --- compliance: what needs attention --------------------------------------------------------


@dataclass(frozen=True)
class Attention:
    """What a compliance officer of a tenant should look at first."""

    breaches: tuple[tuple[str, str], ...]            # (product title, breach in words)
    pending_exports: int                             # exports waiting for approvals
    budgets: tuple[tuple[str, str, str, float, float], ...]  # (who, role, product, spent, cap)
    periods: tuple[tuple[str, date, float, float], ...]      # (product, month, spent, cap)
    refusals: tuple[tuple[str, str, str, str], ...]  # (when, who, what, target), newest first
    refusals_total: int
    refusal_days: int

    @property
    def quiet(self) -> bool:
        return not (self.breaches or self.pending_exports or self.budgets or self.periods
                    or self.refusals_total)


_ACTIONS = {"page_view": "opened a page", "release": "asked for numbers",
            "preview": "asked what numbers would cost", "records_view": "opened a list",
            "login": "signed in", "export_request": "requested an export",
            "export_download": "downloaded an export", "compliance_view": "read compliance "
            "records", "admin_view": "opened administration"}


def attention(gate: Gate, principal: Principal, *, days: int = 7) -> Attention:
    """SLO breaches, exports waiting for approval, budgets near their cap, data months near
    their lifetime cap and the last ``days`` days' refusals. Each read is audited as a
    compliance view."""
    catalog = gate.catalog
    today = gate.today()
    quality = gate.compliance.data_quality(principal)
    pending = gate.compliance.export_records(principal, ExportFilter(status="pending",
                                                                     page_size=1)).total
    usage = gate.compliance.budget_usage(principal, BudgetFilter.trailing(days=1, today=today))
    near = tuple((a.principal, catalog.roles[a.role].title if a.role in catalog.roles
                  else a.role, catalog.product(a.product).title, a.spent, a.cap)
                 for a in usage.accounts if a.cap > 0 and a.spent >= NEAR_CAP * a.cap)
    periods = tuple((catalog.product(p.product).title, p.period, p.spent, p.cap)
                    for p in gate.compliance.period_usage(principal)
                    if p.cap > 0 and p.spent >= NEAR_CAP * p.cap)
    refused = gate.compliance.audit_log(principal, AuditFilter(
        start=today - timedelta(days=days - 1), end=today, outcome="refused", page_size=5))
    return Attention(
        breaches=tuple((q.title, breach) for q in quality for breach in q.breaches),
        pending_exports=pending, budgets=near, periods=periods,
        refusals=tuple((f"{r.at:%d %b %H:%M}", r.principal,
                        _ACTIONS.get(r.action, r.action.replace("_", " ")), r.target)
                       for r in refused.rows),
        refusals_total=refused.total, refusal_days=days)


def show_attention(alerts: Attention) -> None:
    st.subheader("Needs your attention")
    counts = [("Freshness or completeness breaches", len(alerts.breaches)),
              ("Exports waiting for approval", alerts.pending_exports),
              ("Budgets at 80% of their cap or more", len(alerts.budgets) + len(alerts.periods)),
              (f"Refusals in the last {alerts.refusal_days} days", alerts.refusals_total)]
    for column, (label, count) in zip(st.columns(len(counts)), counts):
        with column, st.container(border=True):
            st.metric(label, f"{count:,}")
    if alerts.quiet:
        st.success("Nothing needs your attention: data is fresh, no export waits, no budget "
                   "is near its cap and nothing was refused.", icon=":material/check_circle:")
    if alerts.breaches:
        st.markdown("**Data behind its service level**")
        st.markdown("\n".join(f"- {title}: {breach}" for title, breach in alerts.breaches))
    if alerts.budgets:
        st.markdown("**Monthly budgets near their cap**")
        st.markdown("\n".join(f"- {who} ({role}), {product}: ε {spent:g} of {cap:g} used"
                              for who, role, product, spent, cap in alerts.budgets))
    if alerts.periods:
        st.markdown("**Data months near their lifetime budget**")
        st.markdown("\n".join(f"- {product}, {month:%B %Y}: ε {spent:.3g} of {cap:g} used"
                              for product, month, spent, cap in alerts.periods))
    if alerts.refusals:
        st.markdown(f"**Latest refusals** ({alerts.refusals_total:,} in the last "
                    f"{alerts.refusal_days} days)")
        st.dataframe([{"When (UTC)": when, "Who": who, "What": what, "Target": target}
                      for when, who, what, target in alerts.refusals],
                     hide_index=True, width="stretch")
    page_link("compliance", label="Open the compliance records", icon=":material/policy:")


# --- administration: approvals waiting --------------------------------------------------------


def admin_queue(gate: Gate, principal: Principal) -> tuple[list, list, list]:
    """(settings changes this principal may decide, its own proposals waiting for a second
    administrator, umbrella exports it may approve)."""
    proposals = gate.admin.pending(principal)
    exports = gate.exports.pending_approvals(principal)
    return ([p for p in proposals if p.decidable], [p for p in proposals if not p.decidable],
            list(exports))


def show_admin_queue(gate: Gate, principal: Principal, decide: list, waiting: list,
                     exports: list) -> None:
    catalog = gate.catalog
    approver = principal.role == catalog.policy.exports.approver_role
    st.subheader("Waiting for an administrator")
    counts = [("Settings changes for you to decide", len(decide)),
              ("Your proposals waiting for a second administrator", len(waiting))]
    if approver:  # the export policy names who approves umbrella exports
        counts.append(("Umbrella exports for you to approve", len(exports)))
    for column, (label, count) in zip(st.columns(len(counts)), counts):
        with column, st.container(border=True):
            st.metric(label, f"{count:,}")
    if not (decide or waiting or exports):
        st.success("Nothing is waiting for an approval.", icon=":material/check_circle:")
    for proposal in [*decide, *waiting]:
        st.markdown(f"- **{catalog.tenant(proposal.tenant).name}**: settings version "
                    f"{proposal.version} proposed by {proposal.proposed_by}"
                    f"{' (weakens privacy)' if proposal.weakens else ''} — {proposal.reason}")
    for export in exports:
        st.markdown(f"- Umbrella export of **{catalog.product(export.product).title}** "
                    f"requested by {export.requester}: {len(export.approvals)} of "
                    f"{export.needed} approvals")
    page_link("admin", label="Open Administration", icon=":material/admin_panel_settings:")
