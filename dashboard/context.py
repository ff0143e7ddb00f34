"""Per-process and per-session context for pages: the gate, the signed-in principal, its clock.

Owns the cached Gate (one per settings, ``st.cache_resource``; built only if the role mappings
file is valid and applied), the sign-in record of this browser session (principal and the time
it signed in) and the page guard that every page calls first. The principal is UI state (who is
signed in to this browser session); nothing that matters — budgets, releases, audit — is kept
here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from dashboard.components.errors import show_error
from privacy import AccessDenied, Gate, Principal, Settings, VeilError, load_settings, open_gate

__all__ = ["PRINCIPAL_KEY", "SIGNED_IN_AT_KEY", "current_gate", "current_settings", "end_session",
           "now", "page_context", "session_ends_at", "session_expired", "signed_in",
           "signed_in_at", "start_session"]

PRINCIPAL_KEY = "veil_principal"
SIGNED_IN_AT_KEY = "veil_signed_in_at"


@st.cache_resource(show_spinner=False)
def _gate_for(settings: Settings) -> Gate:
    gate = open_gate(settings)
    try:
        gate.check_role_mappings(settings.role_mappings_file)
    except VeilError:
        gate.close()
        raise
    return gate


def current_settings() -> Settings:
    """Settings from the environment; a malformed variable raises ConfigError naming it."""
    return load_settings()


def current_gate() -> Gate:
    """The gate for the configured settings; configuration errors propagate as VeilError."""
    return _gate_for(current_settings())


def now() -> datetime:
    return datetime.now(UTC)


# --- the sign-in record of this browser session ----------------------------------------------


def start_session(principal: Principal, *, signed_in_at: datetime) -> None:
    """Record who signed in and when; the session lasts VEIL_SESSION_HOURS from then."""
    st.session_state[SIGNED_IN_AT_KEY] = signed_in_at
    st.session_state[PRINCIPAL_KEY] = principal


def end_session() -> Principal | None:
    """Forget this browser session's sign-in; return who was signed in."""
    st.session_state.pop(SIGNED_IN_AT_KEY, None)
    return st.session_state.pop(PRINCIPAL_KEY, None)


def signed_in() -> Principal | None:
    return st.session_state.get(PRINCIPAL_KEY)


def signed_in_at() -> datetime | None:
    return st.session_state.get(SIGNED_IN_AT_KEY)


def session_ends_at(started: datetime, *, hours: float) -> datetime:
    return started + timedelta(hours=hours)


def session_expired(started: datetime, *, hours: float, at: datetime) -> bool:
    return at >= session_ends_at(started, hours=hours)


# --- the page guard ----------------------------------------------------------------------------


def page_context(page_id: str) -> tuple[Gate, Principal]:
    """Guard a page: return (gate, principal) or stop the page with a refusal.

    Navigation only lists a role's own pages; the gate refuses a page opened any other way
    and audits the attempt. The entry point (app.py) has already ended an expired session and
    dropped a principal without a sign-in time; the check here is defence in depth.
    """
    try:
        settings = current_settings()
        gate = current_gate()
    except VeilError as exc:
        st.error(str(exc))
        st.stop()
    principal = signed_in()
    if principal is None:
        st.warning("Please sign in.")
        st.stop()
    started = signed_in_at()
    if started is not None and session_expired(started, hours=settings.session_hours, at=now()):
        end_session()
        st.warning("Your session has ended. Please sign in again.")
        st.stop()
    try:
        gate.open_page(principal, page=page_id)
    except AccessDenied as exc:
        show_error(exc)
        st.stop()
    return gate, principal
