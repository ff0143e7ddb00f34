"""Map: a metric for one month by H3 cell or district over the catalog's own outlines and names;
small areas drawn at their parent; a click on an area opens its trend."""

from pathlib import Path

import streamlit as st

from dashboard.components.badges import budget_meter, privacy_badge, spend_button
from dashboard.components.clock import data_as_of, month_text, parse_month
from dashboard.components.errors import guarded
from dashboard.components.levels import level_select
from dashboard.components.metrics import metric_options, metric_select
from dashboard.components.geography import MAP_HEIGHT, tenant_geography
from dashboard.components.maps import (
    colour_scale,
    legend_html,
    map_frame,
    map_legend,
    map_table,
    release_map,
    selected_district,
)
from dashboard.components.urlstate import from_url, to_url
from dashboard.context import page_context
from privacy import Query

gate, principal = page_context("map")
catalog = gate.catalog
geography = gate.geography
st.title("Map")

metrics = metric_options(gate.products(principal), counts_only=True)
choice = metric_select(metrics)
product, metric = metrics[choice]
with guarded():
    clock = gate.data_clock(principal, product=product.id)
data_as_of(clock)
months = list(reversed(clock.months(include_partial=True)))
if not months:
    st.info("There is no data for this product yet.")
    st.stop()
left, middle, right = st.columns(3)
# H3 cells only for a role that sees them as stored (researchers see them as districts)
areas = [a for a in ("district", "h3_cell") if a in gate.dimensions(principal, product.id)]
geo = left.selectbox("Areas", areas, index=areas.index(from_url("areas", areas, areas[0])),
                     format_func={"district": "Districts", "h3_cell": "H3 cells (~5 km²)"}.get)


def month_label(month) -> str:
    if month == clock.partial:
        return f"{month:%B %Y} (partial, to {clock.as_of.day} {clock.as_of:%b})"
    return f"{month:%B %Y}"


# The latest complete month by default; the partial one only when chosen, and labelled so.
linked = parse_month(st.query_params.get("month"), months)
month = middle.selectbox("Month", months, format_func=month_label,
                         index=months.index(linked) if linked is not None else
                         1 if months[0] == clock.partial and len(months) > 1 else 0)
level = level_select(right, gate, principal, preferred=st.query_params.get("level"))
to_url(metric=choice, areas=geo, month=month_text(month), level=level)
query = Query(product=product.id, metric=metric.id, level=level, start=month, end=month,
              group_by=("month", geo))

with guarded():
    preview = gate.preview(principal, query)
    budget = gate.budget(principal, product=product.id)
    budget_meter(budget, preview, title=product.title)
if not preview.reused:
    st.info("This map has not been released yet. Releasing it spends the budget shown above; "
            "afterwards it is free for you and your colleagues.")
    if spend_button(f"Show map (costs ε {preview.epsilon.value:g})",
                    costs=[preview.epsilon.value], budgets=[budget]):
        with guarded(), st.spinner("Releasing through the privacy gate…"):
            gate.release(principal, query)
        st.rerun()
    st.stop()

with guarded():
    release = gate.release(principal, query)  # the stored release: spends nothing
names = ({s.code: s.name for s in catalog.states} | {d.code: d.name for d in catalog.districts}
         | {principal.tenant: catalog.tenant(principal.tenant).name})
frame = map_frame(release, month=f"{month:%Y-%m}", names=names,
                  cells_of=lambda district: geography.cells_by_district[district],
                  district_of=geography.cells.get)
shown = frame[frame["status"].isin(["noisy", "exact"])]["value"]
scale = colour_scale(float(shown.max()) if not shown.empty else 1.0)
places = tenant_geography(catalog, geography, principal.tenant)
drawn, legend = st.columns([4, 1])
with drawn:
    dark = st.context.theme.type == "dark"
    event = st.pydeck_chart(release_map(frame, scale=scale, geography=places, dark=dark),
                            height=MAP_HEIGHT, on_select="rerun",
                            selection_mode="single-object", key="map_area")
legend.markdown(legend_html(scale, title=f"{metric.title}, {month:%B %Y}", geography=places,
                            dark=dark),
                unsafe_allow_html=True)
district = selected_district(event.selection)
if district:
    # Trends reads ?district= (and ?metric=) to open on this area's series
    st.page_link(str(Path(__file__).with_name("trends.py")), icon=":material/trending_up:",
                 label=f"Open the trend of {metric.title.lower()} in {names[district]}",
                 query_params={"district": district, "metric": choice})
else:
    st.caption(":material/touch_app: Click an area to open its trend.")
st.caption(f":material/palette: {map_legend(release)}")
totals = release.totals()[(f"{month:%Y-%m}",)]
tenant_name = catalog.tenant(principal.tenant).name
if totals.released:
    st.metric(f"{tenant_name} total", f"{totals.total:,.0f}",
              help=f"{round(release.confidence * 100)}% interval {totals.lower:,.0f} – "
                   f"{totals.upper:,.0f}. Estimated from the whole tenant's own measurement "
                   f"(never from the areas drawn); the areas on the map plus the small areas "
                   f"counted only here add up to it.")
    st.caption(f"{tenant_name} total {totals.total:,.0f} "
               f"({round(release.confidence * 100)}% interval {totals.lower:,.0f} – "
               f"{totals.upper:,.0f}); areas shown {totals.parts:,.0f}, small areas counted "
               f"only in the total {totals.remainder:,.0f}.")
else:
    st.metric(f"{tenant_name} total", "too few to show",
              help="The whole tenant's count for this month is under the release threshold.")
privacy_badge(release)
with st.expander("Table view of this map"):
    table = map_table(frame, geo=geo)
    st.caption(f"{metric.title} by {'H3 cell' if geo == 'h3_cell' else 'district'}, "
               f"{month:%B %Y}")
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        column: st.column_config.NumberColumn(column, format="localized")
        for column in table.columns if column not in ("Area", "H3 cell", "Shown as")})
