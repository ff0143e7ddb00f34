"""Home: who you are, what you can open, and your privacy budgets."""

import streamlit as st

from dashboard.components.errors import guarded
from dashboard.context import page_context

gate, principal = page_context("home")
role = gate.catalog.roles[principal.role]
tenant = gate.catalog.tenant(principal.tenant)

st.title(f"Welcome, {principal.display_name}")
st.markdown(f"You are signed in as **{role.title}** for **{tenant.name}**. Every number you "
            f"see here passed Veil's privacy gate: small groups are never shown and noisy "
            f"numbers carry their uncertainty.")
if role.budget_epsilon > 0:
    st.subheader("Your privacy budgets this month")
    rows = []
    with guarded():
        for product in gate.catalog.products:
            if product.kind != "metric_set":
                continue
            status = gate.budget(principal, product=product.id)
            rows.append({"data product": product.title, "ε cap": status.cap.value,
                         "ε spent": status.spent.value, "ε left": status.remaining.value})
    st.dataframe(rows, hide_index=True, width="stretch")
st.caption(f"Policy version {gate.catalog.version[:12]}")
