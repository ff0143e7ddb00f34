"""Exports: request a file through the privacy gate, follow its progress, download it by link."""

import streamlit as st

from dashboard.components.badges import budget_meter
from dashboard.components.clock import data_as_of, months_slider
from dashboard.components.errors import guarded, show_error
from dashboard.components.exports import download_panel, export_list, link_url
from dashboard.components.levels import level_select
from dashboard.context import page_context
from privacy import DownloadLink, RecordQuery, VeilError

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
                          format_func=lambda p: catalog.product(p).title)
product = catalog.product(product_id)
umbrella = False
if product.kind == "metric_set":
    left, middle, right = st.columns(3)
    metric = left.selectbox("Metric", [m.id for m in product.metrics],
                            format_func=lambda m: product.metric(m).title)
    level = level_select(middle, gate, principal)
    with guarded():
        clock = gate.data_clock(principal, product=product.id)
    months = months_slider(right, longest=clock.longest(), default=12)
    data_as_of(clock)
    if months is None:
        st.stop()
    allowed = gate.dimensions(principal, product.id)
    by = st.selectbox("Break down by", ["month only"] + [
        d for d in ("state", "district", "age_bucket", "gender", "category") if d in allowed],
        format_func={"month only": "Month only", "state": "State", "district": "District",
                     "age_bucket": "Age group", "gender": "Gender",
                     "category": "Category"}.get)
    query = clock.query(metric=metric, level=level, months=months,
                        group_by=("month",) if by == "month only" else ("month", by))
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
    status_filter = left.selectbox("Verification status", ["unverified", "verified", "any"])
    search = right.text_input("Search agent, district or registration id", max_chars=64)
    query = RecordQuery(product=product.id, search=search,
                        filters=() if status_filter == "any" else (("status", status_filter),))
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
