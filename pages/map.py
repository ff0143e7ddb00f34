"""Map: a metric for one month by H3 cell or district; small areas drawn at their parent."""

from datetime import date

import streamlit as st

from dashboard.components.badges import budget_meter, privacy_badge
from dashboard.components.errors import guarded
from dashboard.components.levels import level_select
from dashboard.components.maps import map_frame, release_map
from dashboard.context import page_context
from privacy import Query

gate, principal = page_context("map")
catalog = gate.catalog
role = catalog.roles[principal.role]
geography = gate.geography
st.title("Map")

metrics = {f"{p.id}/{m.id}": (p, m) for p in catalog.products if p.kind == "metric_set"
           for m in p.metrics if m.measure == "count"}
choice = st.selectbox("Metric", list(metrics),
                      format_func=lambda key: f"{metrics[key][1].title} — {metrics[key][0].title}")
product, metric = metrics[choice]
left, middle, right = st.columns(3)
geo = left.selectbox("Areas", ["district", "h3_cell"],
                     format_func={"district": "Districts", "h3_cell": "H3 cells (~5 km²)"}.get)
months = Query.trailing(product=product.id, metric=metric.id, level=role.default_level,
                        months=12, today=date.today()).months
month = middle.selectbox("Month", list(reversed(months)), format_func=lambda m: f"{m:%B %Y}")
level = level_select(right, gate, principal)
query = Query(product=product.id, metric=metric.id, level=level, start=month, end=month,
              group_by=("month", geo))

with guarded():
    preview = gate.preview(principal, query)
    budget_meter(gate.budget(principal, product=product.id), preview)
if not preview.reused:
    st.info("This map has not been released yet. Releasing it spends the budget shown above; "
            "afterwards it is free for you and your colleagues.")
    if st.button(f"Show map (costs ε {preview.epsilon.value:g})", type="primary"):
        with guarded(), st.spinner("Releasing through the privacy gate…"):
            gate.release(principal, query)
        st.rerun()
    st.stop()

with guarded():
    release = gate.release(principal, query)  # the stored release: spends nothing
names = ({s.code: s.name for s in catalog.states} | {d.code: d.name for d in catalog.districts}
         | {principal.tenant: catalog.tenant(principal.tenant).name})
frame = map_frame(release, month=f"{month:%Y-%m}", names=names,
                  cells_of=lambda district: geography.cells_by_district[district])
districts = catalog.districts_of(principal.tenant)
centre = (sum(d.lat for d in districts) / len(districts),
          sum(d.lng for d in districts) / len(districts))
st.pydeck_chart(release_map(frame, centre=centre), height=520)
st.caption(":material/palette: darker = more · amber = small area counted in a larger area · "
           "grey = suppressed (fewer than k people in the whole tenant)")
totals = release.totals()[(f"{month:%Y-%m}",)]
st.metric(f"{catalog.tenant(principal.tenant).name} total", f"{totals.total:,.0f}",
          help="Parts shown on the map plus small areas counted only in the total; "
               "post-processed so that they add up.")
privacy_badge(release)
with st.expander("Table view of this map"):
    table = frame.drop(columns=["hex"]).drop_duplicates(subset=["area", "status", "label"])
    st.dataframe(table, hide_index=True, width="stretch")
