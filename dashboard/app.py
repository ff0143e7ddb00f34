"""Veil's Streamlit entry point: configuration check, sign-in, role-based navigation. Nothing else."""

from __future__ import annotations

import streamlit as st

from dashboard.context import current_gate, current_settings
from dashboard.identity import account_sidebar, require_principal
from dashboard.navigation import pages_for, requested_page
from dashboard.worker import start_export_worker, start_snapshot_scheduler
from privacy import VeilError

# An emoji favicon is drawn in the browser; a :material: one would be fetched from Google.
# The menu (with the light/dark theme choice) shows only when it has an item of ours: About.
st.set_page_config(page_title="Veil", page_icon="🛡️", layout="wide", menu_items={
    "About": "**Veil** — privacy-first analytics for public programmes. Every number passes "
             "one privacy gate; no individual can be singled out."})

try:
    settings = current_settings()
    gate = current_gate()
except VeilError as exc:
    st.error(f"Veil cannot start: {exc}")
    st.stop()
start_export_worker(gate, settings)  # one background thread per server process (D6)
start_snapshot_scheduler(gate, settings)  # and one keeping donor snapshots current

principal = require_principal(gate, settings)
account_sidebar(gate, principal, settings)
pages = pages_for(gate, principal, requested=requested_page())
if not pages:
    st.error(f"The {principal.role} role has no pages in this version of Veil.")
    st.stop()
st.navigation(pages).run()
