"""Operational lists: record-level work queues of your tenant, fields treated for your role."""

import streamlit as st

from dashboard.components.errors import guarded
from dashboard.components.tables import masked_table
from dashboard.context import page_context
from privacy import RecordQuery

gate, principal = page_context("lists")
role = gate.catalog.roles[principal.role]
st.title("Operational lists")
st.caption("Every view of this page is recorded in the audit log.")

product = st.selectbox("List", role.record_products,
                       format_func=lambda p: gate.catalog.product(p).title)
left, middle, right = st.columns([2, 2, 1])
status = left.selectbox("Verification status", ["unverified", "verified", "any"])
search = middle.text_input("Search agent, district or registration id", max_chars=64)
page_number = right.number_input("Page", min_value=1, value=1, step=1)
filters = () if status == "any" else (("status", status),)

with guarded(), st.spinner("Loading records…"):
    page = gate.records(principal, RecordQuery(product=product, filters=filters, search=search,
                                               page=int(page_number), page_size=50))
if page.total == 0:
    st.info("No records match. Clear the search or choose another status.")
else:
    masked_table(page)
    st.caption(f"Page {page.page} of {page.pages} · {page.total:,} records")
