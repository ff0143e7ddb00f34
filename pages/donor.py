"""Donor view: published snapshot trends by region, free to view, downloadable as shown."""

import streamlit as st

from dashboard.components.badges import privacy_badge
from dashboard.components.clock import data_as_of
from dashboard.components.charts import (
    for_theme,
    release_csv,
    release_frame,
    series_chart,
    trend_chart,
)
from dashboard.components.errors import guarded
from dashboard.components.tables import release_table
from dashboard.components.urlstate import from_url, to_url
from dashboard.context import page_context

gate, principal = page_context("donor")
catalog = gate.catalog
st.title("Published trends")
st.caption("Snapshots are released once with differential privacy and shown to every donor "
           "unchanged; viewing them spends no privacy budget.")

with guarded():
    releases = gate.published(principal)
    pending = gate.republishing(principal)
for query in pending:
    # a snapshot whose data changed (e.g. a consent withdrawal) is never shown stale
    pending_product = catalog.product(query.product)
    st.info(f"{pending_product.metric(query.metric).title} — {pending_product.title}: being "
            f"republished after a data update; its previous numbers are withdrawn.",
            icon=":material/autorenew:")
if not releases:
    if not pending:
        st.info("Nothing has been published for your programme yet. Your programme office "
                "publishes snapshots with `veil publish`.")
    st.stop()

def _label(release) -> str:
    product = catalog.product(release.product)
    return f"{product.metric(release.query.metric).title} — {product.title}"

series = [f"{r.product}/{r.query.metric}" for r in releases]
chosen = from_url("series", series, series[0])
release = st.selectbox("Series", releases, format_func=_label, index=series.index(chosen))
to_url(series=f"{release.product}/{release.query.metric}")
product = catalog.product(release.product)
with guarded():
    clock = gate.data_clock(principal, product=product.id)
data_as_of(clock)
st.caption(f"This snapshot covers {release.query.start:%B %Y} – {release.query.end:%B %Y}"
           f"{' (a partial month at its end)' if release.query.end == clock.partial else ''}, "
           f"published {release.created_at:%d %b %Y}.")
metric = product.metric(release.query.metric)
names = ({s.code: s.name for s in catalog.states} | {d.code: d.name for d in catalog.districts}
         | {principal.tenant: catalog.tenant(principal.tenant).name})
if len(release.query.group_by) > 1:
    figure = series_chart(release, title=f"{metric.title} by region", unit=metric.title,
                          names=names)
else:
    figure = trend_chart(release, title=metric.title, unit=metric.title)
st.plotly_chart(for_theme(figure, dark=st.context.theme.type == "dark"), width="stretch")
privacy_badge(release)

frame = release_frame(release)
st.download_button("Download CSV", data=release_csv(release, title=f"published snapshot of "
                                                                  f"{product.title}: "
                                                                  f"{metric.title}", frame=frame),
                   file_name=f"veil-{release.product}-{release.query.metric}.csv",
                   mime="text/csv", icon=":material/download:")
with st.expander("Table of the published values"):
    release_table(frame, measure=release.measure, confidence=release.confidence, names=names,
                  caption=f"{metric.title} — {product.title}, {release.query.start:%b %Y} – "
                          f"{release.query.end:%b %Y}")
