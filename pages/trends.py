"""Trends: a metric's monthly series for your tenant, with 95% intervals; compare areas or years."""

import dataclasses

import streamlit as st

from dashboard.components.badges import budget_meter, privacy_badge, spend_button
from dashboard.components.charts import (
    for_theme,
    mark_definition_changes,
    period_chart,
    period_frame,
    release_csv,
    release_frame,
    series_chart,
    trend_chart,
)
from dashboard.components.clock import (
    data_as_of,
    month_range,
    month_text,
    months_between,
    parse_month,
    partial_toggle,
)
from dashboard.components.errors import guarded
from dashboard.components.levels import level_select
from dashboard.components.metrics import metric_options, metric_select
from dashboard.components.tables import release_table
from dashboard.components.urlstate import from_url, list_from_url, number_from_url, to_url
from dashboard.context import page_context
from privacy import Query, add_months

MODES = {"tenant": "Whole tenant", "areas": "Compare areas",
         "year": "Compare with a year earlier"}

gate, principal = page_context("trends")
catalog = gate.catalog
tenant = catalog.tenant(principal.tenant)
names = ({s.code: s.name for s in catalog.states} | {d.code: d.name for d in catalog.districts})
st.title("Trends")

metrics = metric_options(gate.products(principal))
# A map click opens ?district=CODE: that district's trend among its neighbours.
district = from_url("district", [d.code for d in catalog.districts_of(principal.tenant)])
choice = metric_select(metrics)
product, metric = metrics[choice]
with guarded():
    clock = gate.data_clock(principal, product=product.id)
data_as_of(clock)
left, middle, right = st.columns(3)
view = from_url("view", list(MODES), "areas" if district else "tenant")
mode = left.radio("Show", list(MODES.values()), index=list(MODES).index(view),
                  horizontal=False)
level = level_select(middle, gate, principal, preferred=st.query_params.get("level"))
partial = partial_toggle(right, clock, key="trends_partial")
# A year-earlier comparison needs both windows inside the data: only months with a year before.
options = available = list(clock.months(include_partial=partial))
if mode.endswith("year earlier"):
    options = [m for m in available if add_months(m, -12) >= available[0]]
    if not options:
        st.info("There is not yet a year of data before the latest month to compare with.")
        st.stop()
window = month_range(right, options, most=clock.max_months, key="trends_window",
                     default_months=number_from_url("months", lowest=1,
                                                    highest=max(len(options), 1), default=12),
                     start=parse_month(st.query_params.get("from"), options),
                     end=parse_month(st.query_params.get("to"), options))
if window is None:
    st.stop()
months = months_between(*window) + 1
base = Query.ending(product=product.id, metric=metric.id, level=level, months=months,
                    end=window[1])
partial_months = {f"{clock.partial:%Y-%m}"} if partial and clock.partial else set()

areas: list[str] = []
if mode == "Compare areas":
    geos = ["state", "district"]
    geo = st.radio("Areas", geos, horizontal=True,
                   index=geos.index(from_url("by", geos, "district" if district else "state")),
                   format_func={"state": "States", "district": "Districts"}.get)
    options = (list(tenant.states) if geo == "state"
               else [d.code for d in catalog.districts_of(principal.tenant)])
    chosen = list_from_url("areas", options, most=5)
    if chosen is None and district in options:  # from the map: it and two neighbours
        chosen = [district] + [o for o in options if o != district][:2]
    areas = st.multiselect("Up to five areas", options,
                           default=chosen if chosen else options[:min(3, len(options))],
                           max_selections=5, format_func=lambda c: names.get(c, c))
    queries = [dataclasses.replace(base, group_by=("month", geo))]
elif mode == "Compare with a year earlier":
    earlier = dataclasses.replace(base, start=add_months(base.start, -12),
                                  end=add_months(base.end, -12))
    queries = [base, earlier]
else:
    queries = [base]

# the view on screen, in the address bar: bookmark it, share it, refresh it
to_url(metric=choice, view=next(k for k, v in MODES.items() if v == mode), level=level,
       months=None, **{"from": month_text(window[0]), "to": month_text(window[1])},
       by=queries[0].group_by[1] if mode == "Compare areas" else None,
       areas=areas if mode == "Compare areas" else None, district=None)

with guarded():
    previews = [gate.preview(principal, q) for q in queries]
    cost = sum(p.epsilon.value for p in previews)
    budget = gate.budget(principal, product=product.id)
    budget_meter(budget, previews[0] if len(previews) == 1 else None, title=product.title)
if not all(p.reused for p in previews):
    st.info("Nothing has been released for this view yet. Releasing it spends the privacy "
            "budget shown above; the same view is free afterwards, for you and your colleagues.")
    if spend_button(f"Show trend (costs ε {cost:g})", costs=[cost], budgets=[budget]):
        with guarded(), st.spinner("Releasing through the privacy gate…"):
            for q in queries:
                gate.release(principal, q)
        st.rerun()  # redraw with the stored releases and the updated budget
    st.stop()

with guarded():
    releases = [gate.release(principal, q) for q in queries]  # stored: spends nothing
chart_col, kpi_col = st.columns([3, 1])
with chart_col:
    if mode == "Compare areas":
        figure = series_chart(releases[0], title=f"{metric.title}, monthly", unit=metric.title,
                              names=names, only=areas, partial=partial_months)
    elif mode == "Compare with a year earlier":
        figure = period_chart(releases[0], releases[1], title=f"{metric.title}, monthly",
                              unit=metric.title, partial=partial_months)
    else:
        figure = trend_chart(releases[0], title=f"{metric.title}, monthly", unit=metric.title,
                             partial=partial_months)
    if mode != "Compare with a year earlier":
        mark_definition_changes(figure, metric, releases[0].query)
    st.plotly_chart(for_theme(figure, dark=st.context.theme.type == "dark"), width="stretch")
    for release in releases:  # exactly what the chart shows, free: the stored releases
        span = f"{release.query.start:%b %Y} – {release.query.end:%b %Y}"
        st.download_button(
            f"Download the numbers ({span}, CSV)", icon=":material/download:",
            data=release_csv(release, title=f"{metric.title} — {product.title}, {span}"),
            file_name=f"veil-{release.product}-{release.query.metric}-"
                      f"{release.query.start:%Y%m}-{release.query.end:%Y%m}.csv",
            mime="text/csv", key=f"download-{release.id}")
with kpi_col:
    st.markdown(f"**KPI: {metric.title}**")
    for version in reversed(metric.versions):
        st.markdown(f"**v{version.version}** · from {version.effective_from:%d %b %Y}  \n"
                    f"{version.definition}")
for release in releases:
    privacy_badge(release)
with st.expander("Table of the released values"):
    if mode == "Compare with a year earlier":
        release_table(period_frame(releases[0], releases[1]), measure=releases[0].measure,
                      confidence=releases[0].confidence, names=names,
                      caption=f"{metric.title}: each month of {releases[0].query.start:%b %Y} – "
                              f"{releases[0].query.end:%b %Y} beside the same month a year "
                              f"earlier")
    else:
        release_table(release_frame(releases[0]), measure=releases[0].measure,
                      confidence=releases[0].confidence, names=names,
                      caption=f"{metric.title}, {releases[0].query.start:%b %Y} – "
                              f"{releases[0].query.end:%b %Y}")
