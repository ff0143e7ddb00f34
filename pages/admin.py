"""Administration (being built: issue 7)."""

import streamlit as st

from dashboard.context import page_context

gate, principal = page_context("admin")
st.title("Administration")
