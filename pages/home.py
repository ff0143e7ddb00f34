"""Home: who you are and the few numbers your role looks at first. Never spends.

Tiles come from stored or published releases only (``dashboard.components.overview``); what is
not released yet is a link to the page that releases it, with its cost. Which overview shows
follows the pages the role opens (catalog/roles.toml), not a role name.
"""

import streamlit as st

from dashboard.components import overview, worklists
from dashboard.components.errors import guarded
from dashboard.context import page_context

gate, principal = page_context("home")
catalog = gate.catalog
role = catalog.roles[principal.role]
tenant = catalog.tenant(principal.tenant)
pages = set(role.pages)

st.title(f"Welcome, {principal.display_name}")
st.markdown(f"You are signed in as **{role.title}** for **{tenant.name}**. Every number you "
            f"see here passed Veil's privacy gate: small groups are never shown and noisy "
            f"numbers carry their uncertainty. Opening this page spends no privacy budget.")

if "trends" in pages or "donor" in pages:
    titles = {p.id: p.title for p in gate.products(principal)}
    with guarded():
        clocks = {p.id: gate.data_clock(principal, product=p.id)
                  for p in gate.products(principal) if p.kind == "metric_set"}
        tiles = (overview.headline_tiles(gate, principal, clocks) if "trends" in pages
                 else overview.published_tiles(gate, principal))
    st.subheader("Headline numbers")
    overview.show_data_as_of(clocks, titles=titles)
    st.caption("The latest complete month of your programme with its 95% interval, and the "
               "change from the month before: **beyond noise** means the privacy noise alone "
               "would rarely move the number that much; **within noise** may be chance.")
    if tiles:
        overview.show_tiles(tiles)
    else:
        st.info("Nothing has been published for your programme yet.")
    if "donor" in pages:
        overview.page_link("donor", label="See the published trends by region",
                           icon=":material/public:")

for product in role.record_products:
    with guarded():
        work = worklists.open_work(gate, principal, product=product)
    worklists.show_open_work(work)

if "compliance" in pages:
    with guarded():
        alerts = worklists.attention(gate, principal)
    worklists.show_attention(alerts)

if "admin" in pages:
    with guarded():
        queue = worklists.admin_queue(gate, principal)
    worklists.show_admin_queue(gate, principal, *queue)

if role.budget_epsilon > 0 and "trends" in pages:
    with st.expander("Your privacy budget this month", icon=":material/savings:"):
        st.caption("Releasing new numbers spends ε (epsilon), a measure of how much they may "
                   "reveal about any one person; each data product has its own monthly budget. "
                   "Viewing numbers that are already released is free.")
        with guarded():
            budgets = [gate.budget(principal, product=p.id)
                       for p in gate.products(principal) if p.kind == "metric_set"]
        st.dataframe([{"Data product": catalog.product(b.product).title,
                       "Left this month (ε)": round(b.remaining.value, 3),
                       "Spent (ε)": round(b.spent.value, 3), "Monthly budget (ε)": b.cap.value}
                      for b in budgets], hide_index=True, width="stretch",
                     column_config={title: st.column_config.NumberColumn(title, format="%.2f")
                                    for title in ("Left this month (ε)", "Spent (ε)",
                                                  "Monthly budget (ε)")})
st.caption(f"Policy version {catalog.version[:12]}")
