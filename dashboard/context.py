"""Per-process and per-session context for pages: the gate and the signed-in principal.

Owns the cached Gate (one per settings, ``st.cache_resource``) and the page guard that every
page calls first. The principal is UI state (who is signed in to this browser session); nothing
that matters — budgets, releases, audit — is kept here.
"""

from __future__ import annotations

import streamlit as st

from privacy import Gate, Principal, Settings, VeilError, load_settings, open_gate

__all__ = ["PRINCIPAL_KEY", "current_gate", "page_context", "signed_in"]

PRINCIPAL_KEY = "veil_principal"


@st.cache_resource(show_spinner=False)
def _gate_for(settings: Settings) -> Gate:
    return open_gate(settings)


def current_gate() -> Gate:
    """The gate for the configured settings; configuration errors propagate as VeilError."""
    return _gate_for(load_settings())


def signed_in() -> Principal | None:
    return st.session_state.get(PRINCIPAL_KEY)


def page_context(page_id: str) -> tuple[Gate, Principal]:
    """Guard a page: return (gate, principal) or stop the page with a refusal.

    Navigation only lists a role's own pages; this check refuses a page opened any other way
    and audits the attempt.
    """
    try:
        gate = current_gate()
    except VeilError as exc:
        st.error(str(exc))
        st.stop()
    principal = signed_in()
    if principal is None:
        st.warning("Please sign in.")
        st.stop()
    role = gate.catalog.roles.get(principal.role)
    if role is None or page_id not in role.pages:
        gate.record_page_view(principal, page=page_id, allowed=False)
        st.error(f"Not permitted: the {principal.role} role cannot open this page.")
        st.stop()
    return gate, principal
