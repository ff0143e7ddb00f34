"""Cross-vertical insights: two verticals' metrics by district, and how they move together."""

import streamlit as st

from dashboard.components.badges import budget_meter, privacy_badge, spend_button
from dashboard.components.clock import (data_as_of, month_range, month_text, months_between,
                                         parse_month)
from dashboard.components.charts import for_theme, insight_chart
from dashboard.components.errors import guarded
from dashboard.components.levels import level_select
from dashboard.components.metrics import metric_options, metric_select
from dashboard.components.urlstate import to_url
from dashboard.context import page_context
from privacy import Query

gate, principal = page_context("insights")
catalog = gate.catalog
st.title("Cross-vertical insights")
st.caption("Two metrics from different verticals, joined at district level. Each side is a "
           "differentially private release; the comparison is computed from those releases.")

metrics = metric_options(gate.products(principal), counts_only=True)
left, right = st.columns(2)
x_default = next(k for k in metrics if metrics[k][0].vertical == "education")
x_key = metric_select(metrics, where=left, label="First metric", url="x", default=x_default)
x_product, x_metric = metrics[x_key]
others = [k for k in metrics if metrics[k][0].vertical != x_product.vertical]
y_default = next((k for k in others if metrics[k][0].vertical == "social_protection"),
                 others[0])
y_key = metric_select(metrics, where=right, label="Compared with", url="y", keys=others,
                      default=y_default)
y_product, y_metric = metrics[y_key]
with guarded():
    clocks = [gate.data_clock(principal, product=p.id) for p in (x_product, y_product)]
for product, clock in zip((x_product, y_product), clocks):
    data_as_of(clock, title=product.title)
# Both series cover the same months: those up to the earlier of their latest complete months.
ends = [c.latest_complete for c in clocks]
if None in ends:
    st.info("One of the two products has no complete month of data yet.")
    st.stop()
end = min(ends)
# the months both products have data in, up to the earlier latest complete month
options = sorted(set.intersection(*(set(m for m in c.months() if m <= end) for c in clocks)))
left, right = st.columns(2)
window = month_range(left, options, most=min(12, *(c.max_months for c in clocks)),
                     key="insight_window", start=parse_month(st.query_params.get("from"), options),
                     end=parse_month(st.query_params.get("to"), options))
if window is None:
    st.stop()
months = months_between(*window) + 1
end = window[1]
level = level_select(right, gate, principal, preferred=st.query_params.get("level"))
to_url(x=x_key, y=y_key, level=level,
       **{"from": month_text(window[0]), "to": month_text(window[1])})
# One value per district for the whole window (not per month): a district's window total is
# large enough to stand on its own where its monthly counts would be rolled up.
queries = [Query.ending(product=p.id, metric=m.id, level=level, months=months, end=end,
                        group_by=("month", "district"), period="window")
           for p, m in ((x_product, x_metric), (y_product, y_metric))]

if len(catalog.districts_of(principal.tenant)) < 3:
    # Known before spending anything: a correlation needs at least three districts.
    st.info("A correlation needs at least three districts; your programme has fewer, so "
            "this page cannot produce one. Nothing was spent.")
    st.stop()

with guarded():
    previews = [gate.preview(principal, q) for q in queries]
    budgets = [gate.budget(principal, product=product.id) for product in (x_product, y_product)]
    for budget, preview, product in zip(budgets, previews, (x_product, y_product)):
        budget_meter(budget, preview, title=product.title)
if not all(p.reused for p in previews):
    cost = " and ".join(f"ε {p.epsilon.value:g} on {prod.title}"
                        for p, prod in zip(previews, (x_product, y_product)))
    st.info("This comparison has not been released yet; afterwards it is free to view again.")
    if spend_button(f"Compare (costs {cost})", costs=[p.epsilon.value for p in previews],
                    budgets=budgets):
        with guarded(), st.spinner("Releasing both series through the privacy gate…"):
            gate.insight(principal, *queries)
        st.rerun()
    st.stop()

with guarded():
    insight = gate.insight(principal, *queries)  # both stored: spends nothing
names = {d.code: d.name for d in catalog.districts}
st.plotly_chart(for_theme(insight_chart(insight, names=names,
                              x_title=f"{x_metric.title} ({months} months)",
                              y_title=f"{y_metric.title} ({months} months)"),
                          dark=st.context.theme.type == "dark"), width="stretch")
if insight.r is None:
    st.warning("Too few districts have their own value in both series to compare them; "
               "try a longer window.")
else:
    st.markdown(f"**Correlation across {len(insight.points)} districts: r = {insight.r:.2f}** "
                f"({round(insight.confidence * 100)}% interval {insight.r_lower:.2f} to "
                f"{insight.r_upper:.2f}, from the districts' spread and the release noise).")
if insight.excluded:
    st.caption(f"{len(insight.excluded)} districts are left out: in some month one of the "
               f"series counted them only in a larger area (fewer than k people).")
privacy_badge(insight.x)
privacy_badge(insight.y)
