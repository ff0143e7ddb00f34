"""Veil's Streamlit entry point: configuration check, sign-in, role-based navigation. Nothing else."""

from __future__ import annotations

import streamlit as st

from dashboard.context import current_gate
from dashboard.identity import require_principal, sign_out
from dashboard.navigation import pages_for
from privacy import VeilError

st.set_page_config(page_title="Veil", page_icon=":material/shield_lock:", layout="wide")

try:
    gate = current_gate()
except VeilError as exc:
    st.error(f"Veil cannot start: {exc}")
    st.stop()

principal = require_principal(gate)
with st.sidebar:
    tenant = gate.catalog.tenant(principal.tenant)
    st.markdown(f"**{principal.subject}**  \n{gate.catalog.roles[principal.role].title} · "
                f"{tenant.name}")
    if principal.source == "demo":
        st.caption("Demo identity")
    if st.button("Sign out", icon=":material/logout:"):
        sign_out()
st.navigation(pages_for(gate, principal)).run()
