"""Exports: request a file through the privacy gate, follow its progress, download it by link."""

import streamlit as st

from dashboard.components.badges import budget_meter
from dashboard.components.clock import (data_as_of, month_range, month_text, months_between,
                                         parse_month)
from dashboard.components.errors import guarded, show_error
from dashboard.components.exports import download_panel, export_list, link_url
from dashboard.components.levels import level_select
from dashboard.components.urlstate import from_url, to_url
from dashboard.context import page_context
from privacy import DownloadLink, Query, RecordQuery, VeilError

BREAKDOWNS = {"month only": "Month only", "state": "State", "district": "District",
              "age_bucket": "Age group", "gender": "Gender", "category": "Category"}
STATUSES = ["unverified", "verified", "any"]

gate, principal = page_context("exports")
catalog = gate.catalog
st.title("Exports")
st.caption("Exports are built in the background through the privacy gate, with the same rules "
           "as the pages. Each names its purpose; who exported what, when and why is on record.")

# --- a download link opened: verify it for whoever is signed in ----------------------------------
token = st.query_params.get("download")
if token:
    try:
        ready = gate.exports.open_link(principal, token)
    except VeilError as exc:
        show_error(exc)
    else:
        link = DownloadLink(export_id=ready.id, token=token, expires_at=ready.link_expires_at)
        if download_panel(ready, url=link_url(link),
                          data=lambda: gate.exports.download(principal, token).content):
            del st.query_params["download"]
            st.rerun()

# --- a new export ---------------------------------------------------------------------------------
st.subheader("New export")
products = gate.exports.products(principal)
purposes = gate.exports.purposes(principal)
product_id = st.selectbox("Data product", products,
                          index=products.index(from_url("product", products, products[0])),
                          format_func=lambda p: catalog.product(p).title)
product = catalog.product(product_id)
umbrella = False
if product.kind == "metric_set":
    left, middle, right = st.columns(3)
    metric_ids = [m.id for m in product.metrics]
    metric = left.selectbox("Metric", metric_ids,
                            index=metric_ids.index(from_url("metric", metric_ids,
                                                            metric_ids[0])),
                            format_func=lambda m: product.metric(m).title)
    level = level_select(middle, gate, principal, preferred=st.query_params.get("level"))
    with guarded():
        clock = gate.data_clock(principal, product=product.id)
    options = list(clock.months())
    window = month_range(right, options, most=clock.max_months, key="export_window",
                         start=parse_month(st.query_params.get("from"), options),
                         end=parse_month(st.query_params.get("to"), options))
    data_as_of(clock)
    if window is None:
        st.stop()
    allowed = gate.dimensions(principal, product.id)
    if product.metric(metric).category_domain == "none":
        # the metric's own categories (its event type's): none, so nothing to break down by
        allowed = tuple(d for d in allowed if d != "category")
    breakdowns = ["month only"] + [d for d in BREAKDOWNS if d != "month only" and d in allowed]
    by = st.selectbox("Break down by", breakdowns,
                      index=breakdowns.index(from_url("by", breakdowns, "month only")),
                      format_func=BREAKDOWNS.get)
    months = months_between(*window) + 1
    query = Query.ending(product=product.id, metric=metric, level=level, months=months,
                         end=window[1],
                         group_by=("month",) if by == "month only" else ("month", by))
    to_url(product=product_id, metric=metric, level=level, by=by, status=None,
           **{"from": month_text(window[0]), "to": month_text(window[1])})
    if gate.exports.may_request_umbrella(principal):
        umbrella = st.toggle("All tenants (umbrella export: runs after two platform "
                             "administrators approve it; each tenant's budget pays its part)")
    if not umbrella:
        try:
            budget_meter(gate.budget(principal, product=product.id),
                         gate.preview(principal, query), title=product.title)
        except VeilError as exc:
            show_error(exc)
else:
    left, right = st.columns(2)
    status_filter = left.selectbox("Verification status", STATUSES,
                                   index=STATUSES.index(from_url("status", STATUSES,
                                                                 "unverified")),
                                   format_func=str.capitalize)
    # not in the address: a search may name a person's registration or agent
    search = right.text_input("Search agent, district or registration id", max_chars=64)
    query = RecordQuery(product=product.id, search=search,
                        filters=() if status_filter == "any" else (("status", status_filter),))
    to_url(product=product_id, status=status_filter, metric=None, level=None, by=None,
           **{"from": None, "to": None})
    st.caption("Every matching record of your tenant, with the field treatments of your role "
               "(as on the Operational lists page).")

with st.form("export-request"):
    purpose = st.selectbox("Purpose (required)", list(purposes), index=None,
                           format_func=purposes.get, placeholder="Choose the purpose of this "
                                                                 "export")
    justification = st.text_area("Justification (optional)", max_chars=2000,
                                 placeholder="e.g. the study's ethics reference, the visit plan")
    file_format = st.radio("Format", ["csv", "parquet"], horizontal=True,
                           format_func=str.upper)
    submitted = st.form_submit_button("Request export", type="primary",
                                      icon=":material/outbox:")
if submitted:
    try:
        requested = gate.exports.request(principal, query, purpose=purpose or "",
                                         format=file_format, justification=justification,
                                         umbrella=umbrella)
    except VeilError as exc:
        show_error(exc)
    else:
        st.success(f"Export `{requested.id[:8]}` "
                   + ("is waiting for two platform administrators' approval."
                      if requested.status == "pending"
                      else "is queued; its progress shows below."), icon=":material/outbox:")

# --- your exports: refreshed while one is under way -----------------------------------------------
st.subheader("Your exports")
with guarded():
    under_way = any(s.active for s in gate.exports.mine(principal))


@st.fragment(run_every=2 if under_way else None)
def your_exports() -> None:
    with guarded():
        statuses = gate.exports.mine(principal)
    if not statuses:
        st.info("You have not requested an export yet.")
        return
    clicked = export_list(statuses, titles={p.id: p.title for p in catalog.products})
    if clicked:
        with guarded():
            st.query_params["download"] = gate.exports.link(principal, clicked).token
        st.rerun(scope="app")
    if under_way and not any(s.active for s in statuses):
        st.rerun(scope="app")  # all finished: redraw once, and stop refreshing


your_exports()
