"""Sign-in: the one place that reads ``st.user`` and turns an identity into a Principal.

Two identity sources resolve through the same role-mapping table: OIDC via ``st.login`` when
``[auth]`` is configured in secrets.toml, and local demo accounts when VEIL_DEMO_MODE=1. With
neither, nobody gets in and the page names the missing setting.
"""

from __future__ import annotations

import streamlit as st

from dashboard.components.errors import show_error
from dashboard.context import PRINCIPAL_KEY, signed_in
from privacy import AccessDenied, Gate, Principal, VeilError

__all__ = ["oidc_configured", "require_principal", "sign_out"]


def oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all: Streamlit raises its own error type
        return False


def require_principal(gate: Gate) -> Principal:
    """Return the signed-in principal, or render the sign-in page and stop the script."""
    principal = signed_in()
    if principal is not None:
        return principal
    if oidc_configured() and st.user.get("is_logged_in", False):
        try:
            principal = gate.resolve(dict(st.user), source="oidc")
        except AccessDenied as exc:
            st.error(str(exc))
            if st.button("Sign out"):
                st.logout()
            st.stop()
        st.session_state[PRINCIPAL_KEY] = principal
        return principal
    _sign_in_page(gate)
    st.stop()


def sign_out() -> None:
    st.session_state.pop(PRINCIPAL_KEY, None)
    if oidc_configured() and st.user.get("is_logged_in", False):
        st.logout()
    st.rerun()


def _sign_in_page(gate: Gate) -> None:
    st.title("Veil")
    st.caption("Privacy-first analytics for public programmes")
    oidc = oidc_configured()
    if not oidc and not gate.demo_accounts:
        st.error(
            "No identity source is configured, so nobody can sign in. Add an [auth] section to "
            ".streamlit/secrets.toml (see secrets.toml.example) or set VEIL_DEMO_MODE=1 for a "
            "demo store.")
        return
    if oidc:
        st.button("Sign in with your organisation", type="primary", on_click=st.login)
    if gate.demo_accounts:
        _demo_form(gate)


def _demo_form(gate: Gate) -> None:
    st.subheader("Demo accounts")
    st.info(
        "**Demo identity source.** These local accounts exist only in demo mode and hold no "
        "real data. Every demo account's password is `veil-demo`. Usernames look like "
        "`policy.maker@kigali-east.demo` — role (`policy.maker`, `researcher`, `case.worker`, "
        "`donor`, `compliance.officer`, `tenant.admin`) at tenant (`kigali-east`, `north-west`, "
        "`south`).", icon=":material/science:")
    with st.form("demo-login"):
        username = st.text_input("Username", key="demo_username")
        password = st.text_input("Password", type="password", key="demo_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            claims = gate.authenticate_demo(username=username, password=password)
            st.session_state[PRINCIPAL_KEY] = gate.resolve(claims, source="demo")
        except VeilError as exc:
            show_error(exc)
            return
        st.rerun()
