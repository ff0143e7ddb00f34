"""Administration (D8): the approvals queue, the tenant's privacy settings, its role mappings.

Every change goes through ``gate.admin`` (settings, mappings) or ``gate.exports`` (umbrella
export decisions), which version and audit it; a change that weakens privacy waits here for a
second administrator. This page only reads widgets, makes one gate call and renders.
"""

import pandas as pd
import streamlit as st

from dashboard.components.errors import guarded, show_error
from dashboard.context import page_context
from privacy import Epsilon, TenantSettings

gate, principal = page_context("admin")
catalog = gate.catalog
st.title("Administration")

_FLASH = "admin_flash"  # UI state only: the outcome of the last action, shown once


def _act(action, message) -> None:
    """Run one gate call; on success remember what happened and redraw from the store."""
    try:
        result = action()
    except Exception as exc:  # every error is shown through the one component
        show_error(exc)
        return
    st.session_state[_FLASH] = message(result)
    st.rerun()


def _value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}"


def _setting_label(setting: str) -> str:
    kind, _, name = setting.partition(".")
    if kind == "budget":
        return f"Budget of {catalog.roles[name].title} (ε per month)"
    if kind == "level":
        return f"ε of level {name}"
    if kind == "enabled":
        return f"Level {name} available"
    return "k (smallest group shown)"


def _changes(version) -> pd.DataFrame:
    return pd.DataFrame([{"setting": _setting_label(c.setting), "before": _value(c.before),
                          "after": _value(c.after),
                          "weakens privacy": "yes" if c.weakens else "no"}
                         for c in version.changes],
                        columns=["setting", "before", "after", "weakens privacy"])


def _when(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else ""


if _FLASH in st.session_state:
    st.success(st.session_state.pop(_FLASH))

with guarded():
    tenants = gate.admin.tenants(principal)
if len(tenants) > 1:
    tenant = st.selectbox("Tenant", tenants, format_func=lambda t: catalog.tenant(t).name)
else:
    tenant = tenants[0]
    st.caption(f"Tenant: {catalog.tenant(tenant).name}")

approvals_tab, settings_tab, mappings_tab = st.tabs(
    ["Approvals", "Privacy settings", "Role mappings"])

# --- approvals queue ---------------------------------------------------------------------------

with approvals_tab:
    with guarded():
        proposals = gate.admin.pending(principal)
        exports = gate.exports.pending_approvals(principal)
    if not proposals and not exports:
        st.info("Nothing is waiting for an approval.")
    if proposals:
        st.subheader("Privacy settings changes")
    for proposal in proposals:
        key = f"{proposal.tenant}-{proposal.version}"
        with st.container(border=True):
            st.markdown(f"**{catalog.tenant(proposal.tenant).name}: settings version "
                        f"{proposal.version}**, proposed by {proposal.proposed_by} on "
                        f"{_when(proposal.proposed_at)}")
            st.text(f"Reason: {proposal.reason}")
            st.dataframe(_changes(proposal), hide_index=True, width="stretch")
            if proposal.decidable:
                note = st.text_input("Your reason (required to reject)",
                                     key=f"settings-note-{key}")
                approve, reject = st.columns(2)
                if approve.button("Approve", key=f"settings-approve-{key}", type="primary"):
                    _act(lambda p=proposal, n=note: gate.admin.approve_settings(
                        principal, tenant=p.tenant, version=p.version, reason=n),
                        lambda v: f"Settings version {v.version} of {v.tenant} is in force.")
                if reject.button("Reject", key=f"settings-reject-{key}"):
                    _act(lambda p=proposal, n=note: gate.admin.reject_settings(
                        principal, tenant=p.tenant, version=p.version, reason=n),
                        lambda v: f"Settings version {v.version} of {v.tenant} was rejected.")
            else:
                st.caption("You proposed this change: it waits for a second administrator "
                           "(a tenant administrator of this tenant or a platform "
                           "administrator).")
                note = st.text_input("Reason for withdrawing", key=f"settings-withdraw-note-{key}")
                if st.button("Withdraw", key=f"settings-withdraw-{key}"):
                    _act(lambda p=proposal, n=note: gate.admin.reject_settings(
                        principal, tenant=p.tenant, version=p.version, reason=n),
                        lambda v: f"Settings version {v.version} was withdrawn.")
    if exports:
        st.subheader("Umbrella (cross-tenant) exports")
    for export in exports:
        with st.container(border=True):
            st.markdown(f"**{export.product}** requested by {export.requester} "
                        f"({export.tenant}) on {_when(export.created_at)} · tenants: "
                        f"{', '.join(export.scope)} · approvals {len(export.approvals)} of "
                        f"{export.needed}")
            st.text(f"Query: {export.query_summary}\nPurpose: {export.purpose_title}\n"
                    f"Justification: {export.justification or '—'}")
            if export.approvals:
                st.caption(f"Approved so far by {', '.join(export.approvals)}")
            note = st.text_input("Reason (required to reject)", key=f"export-note-{export.id}")
            approve, reject = st.columns(2)
            if approve.button("Approve export", key=f"export-approve-{export.id}",
                              type="primary"):
                _act(lambda e=export: gate.exports.approve(principal, e.id),
                     lambda _r, e=export: f"Your approval of export {e.id[:8]} is recorded.")
            if reject.button("Reject export", key=f"export-reject-{export.id}"):
                _act(lambda e=export, n=note: gate.exports.reject(principal, e.id, reason=n),
                     lambda _r, e=export: f"Export {e.id[:8]} was rejected.")

# --- tenant privacy settings -------------------------------------------------------------------

with settings_tab:
    with guarded():
        current = gate.admin.settings(principal, tenant=tenant)
        history = gate.admin.history(principal, tenant=tenant)
    values = current.settings
    st.markdown(f"In force: **version {current.version}**"
                + (" (the catalog's values)" if current.version == 0 else
                   f", by {current.decided_by} on {_when(current.decided_at)}"))
    st.caption("Tightening (higher k, smaller budgets or ε, switching a level off) applies at "
               "once. Anything that weakens privacy is proposed and applies only when a second "
               "administrator approves it.")
    form_key = f"{tenant}-{current.version}"
    with st.form(f"settings-{form_key}"):
        k = st.number_input("k: smallest group shown (smaller cells are rolled up or "
                            "suppressed)", min_value=2, step=1, value=values.k,
                            key=f"k-{form_key}")
        st.markdown("**ε budget per role and month**")
        budget_columns = st.columns(max(len(values.budgets), 1))
        budgets = {role: column.number_input(catalog.roles[role].title, min_value=0.0,
                                             value=budget.value, step=0.5, format="%.2f",
                                             key=f"budget-{role}-{form_key}")
                   for column, (role, budget) in zip(budget_columns, values.budgets.items())}
        st.markdown("**Privacy levels**")
        levels, enabled = {}, {}
        for level_id, level in catalog.policy.levels.items():
            left, right = st.columns([1, 2])
            enabled[level_id] = left.checkbox(level_id, key=f"enabled-{level_id}-{form_key}",
                                              value=level_id not in values.disabled_levels)
            if level_id in values.levels:
                levels[level_id] = right.number_input(
                    f"ε of {level_id}", min_value=0.0, value=values.levels[level_id].value,
                    step=0.1, format="%.2f", key=f"level-{level_id}-{form_key}")
            else:
                right.caption(level.title)
        reason = st.text_area("Reason for the change (kept in the audit log)",
                              key=f"settings-reason-{form_key}")
        saved = st.form_submit_button("Save settings", type="primary")
    if saved:
        _act(lambda: gate.admin.change_settings(
            principal,
            TenantSettings(k=int(k), budgets={r: Epsilon(v) for r, v in budgets.items()},
                           levels={lv: Epsilon(v) for lv, v in levels.items()},
                           disabled_levels={lv for lv, on in enabled.items() if not on}),
            tenant=tenant, reason=reason, base_version=current.version),
            lambda v: (f"Settings version {v.version} is in force." if v.status == "active"
                       else f"Settings version {v.version} is proposed: it weakens privacy, "
                            f"so it applies once a second administrator approves it."))
    st.subheader("History")
    st.dataframe(pd.DataFrame([{
        "version": v.version, "status": v.status,
        "changes": "; ".join(f"{_setting_label(c.setting)} {_value(c.before)} → "
                             f"{_value(c.after)}" for c in v.changes) or "catalog values",
        "weakens": "yes" if v.weakens else "no", "proposed by": v.proposed_by,
        "proposed": _when(v.proposed_at), "reason": v.reason, "decided by": v.decided_by or "",
        "decided": _when(v.decided_at), "decision": v.decision_reason or ""}
        for v in history]), hide_index=True, width="stretch")

# --- role mappings -----------------------------------------------------------------------------

with mappings_tab:
    with guarded():
        mappings = gate.admin.mappings(principal, tenant=tenant)
        changes = gate.admin.mapping_history(principal, tenant=tenant)
        roles = gate.admin.grantable_roles(principal)
    st.caption(f"Mapping version {changes[0].version if changes else 0}. Organisation accounts "
               f"get a role from these mappings (e-mail first, then subject, then groups). "
               f"Mappings from the role mappings file change there (then run `veil init`); "
               f"demo mappings belong to the demo accounts.")
    st.dataframe(pd.DataFrame([{
        "claim": m.claim, "value": m.value, "role": catalog.roles[m.role].title,
        "source": m.source, "created by": m.created_by, "created": _when(m.created_at)}
        for m in mappings], columns=["claim", "value", "role", "source", "created by",
                                     "created"]), hide_index=True, width="stretch")
    with st.form(f"add-mapping-{tenant}", clear_on_submit=True):
        st.markdown("**Add a mapping**")
        left, middle, right = st.columns(3)
        claim = left.selectbox("Claim", gate.admin.claims)
        value = middle.text_input("Value (e-mail address, subject or group)")
        role = right.selectbox("Role", roles, format_func=lambda r: catalog.roles[r].title)
        add_reason = st.text_input("Reason", key=f"add-mapping-reason-{tenant}")
        added = st.form_submit_button("Add mapping")
    if added:
        _act(lambda: gate.admin.add_mapping(principal, claim=claim, value=value, role=role,
                                            tenant=tenant, reason=add_reason),
             lambda m: f"{m.claim} {m.value} is mapped to {catalog.roles[m.role].title}.")
    removable = [m for m in mappings if m.removable]
    if removable:
        with st.form(f"remove-mapping-{tenant}"):
            st.markdown("**Remove a mapping made here**")
            chosen = st.selectbox("Mapping", removable, format_func=lambda m: (
                f"{m.claim} {m.value} → {catalog.roles[m.role].title}"))
            remove_reason = st.text_input("Reason", key=f"remove-mapping-reason-{tenant}")
            removed = st.form_submit_button("Remove mapping")
        if removed:
            _act(lambda: gate.admin.remove_mapping(principal, claim=chosen.claim,
                                                   value=chosen.value, tenant=tenant,
                                                   reason=remove_reason),
                 lambda c: f"{c.claim} {c.value} no longer has a role (mapping version "
                           f"{c.version}).")
    if changes:
        st.subheader("Changes made here")
        st.dataframe(pd.DataFrame([{
            "version": c.version, "action": c.action, "claim": c.claim, "value": c.value,
            "role": c.role, "by": c.changed_by, "at": _when(c.at), "reason": c.reason}
            for c in changes]), hide_index=True, width="stretch")
