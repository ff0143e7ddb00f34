"""Trends: a metric's monthly series for your tenant, with 95% intervals."""

from datetime import date

import streamlit as st

from dashboard.components.badges import budget_meter, privacy_badge
from dashboard.components.charts import release_frame, trend_chart
from dashboard.components.errors import guarded
from dashboard.context import page_context
from privacy import Query

gate, principal = page_context("trends")
catalog = gate.catalog
role = catalog.roles[principal.role]
st.title("Trends")

choices = [(p, m) for p in catalog.products if p.kind == "metric_set"
           for m in p.metrics if m.measure == "count"]
product, metric = st.selectbox("Metric", choices, format_func=lambda pm: f"{pm[1].title} — "
                                                                         f"{pm[0].title}")
areas = [None] + [s for s in catalog.states if s.code in catalog.tenant(principal.tenant).states]
area = st.selectbox("Area", areas, format_func=lambda s: "Whole tenant" if s is None else s.name)
left, right = st.columns(2)
level = left.selectbox("Privacy level", role.privacy_levels,
                       index=role.privacy_levels.index(role.default_level)
                       if role.default_level in role.privacy_levels else 0,
                       format_func=lambda lv: catalog.policy.levels[lv].title)
months = right.slider("Months", min_value=3, max_value=catalog.policy.max_series_months,
                      value=12)

query = Query.trailing(product=product.id, metric=metric.id, level=level, months=months,
                       today=date.today(), filters=(("state", area.code),) if area else ())

with guarded():
    preview = gate.preview(principal, query)
    budget_meter(gate.budget(principal, product=product.id), preview)

if not preview.reused:
    st.info("Nothing has been released for this view yet. Releasing it spends the privacy "
            "budget shown above; the same view is free afterwards, for you and your colleagues.")
    if st.button(f"Show trend (costs ε {preview.epsilon.value:g})", type="primary"):
        with guarded(), st.spinner("Releasing through the privacy gate…"):
            gate.release(principal, query)
        st.rerun()  # redraw with the stored release and the updated budget
else:
    with guarded():
        release = gate.release(principal, query)  # the stored release: spends nothing
    st.plotly_chart(trend_chart(release, title=f"{metric.title}, monthly", unit=metric.title),
                    width="stretch")
    privacy_badge(release)
    with st.expander("Table of the released values"):
        st.dataframe(release_frame(release), hide_index=True, width="stretch")

with st.expander(f"KPI definition: {metric.title}"):
    for version in metric.versions:
        st.markdown(f"**v{version.version}** (from {version.effective_from:%d %b %Y}): "
                    f"{version.definition}")
