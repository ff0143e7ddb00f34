"""Operational lists: record-level work queues of your tenant, fields treated for your role."""

import streamlit as st

from dashboard.components.errors import guarded
from dashboard.components.tables import masked_table, pager
from dashboard.components.urlstate import from_url, number_from_url, to_url
from dashboard.context import page_context
from privacy import RecordQuery

PAGE_SIZES = ["25", "50", "100"]
STATUSES = ["unverified", "verified", "any"]

gate, principal = page_context("lists")
role = gate.catalog.roles[principal.role]
st.title("Operational lists")
st.caption("Every view of this page is recorded in the audit log.")


def _first_page() -> None:
    st.session_state["lists_page"] = 1  # another list, filter or size starts at its page 1


products = list(role.record_products)
product = st.selectbox("List", products, index=products.index(from_url("list", products,
                                                                        products[0])),
                       format_func=lambda p: gate.catalog.product(p).title, on_change=_first_page)
left, middle, right = st.columns([2, 3, 1])
status = left.selectbox("Verification status", STATUSES,
                        index=STATUSES.index(from_url("status", STATUSES, "unverified")),
                        format_func=str.capitalize, on_change=_first_page)
# The search is not written to the address bar: it may name a person's registration or agent,
# and an address ends up in browser history and proxy logs.
search = middle.text_input("Search agent, district or registration id", max_chars=64,
                           on_change=_first_page)
size = int(right.selectbox("Rows per page", PAGE_SIZES,
                           index=PAGE_SIZES.index(from_url("size", PAGE_SIZES, "50")),
                           on_change=_first_page))
if "lists_page" not in st.session_state:
    st.session_state["lists_page"] = number_from_url("page", lowest=1, highest=100_000, default=1)
filters = () if status == "any" else (("status", status),)


def _read(number: int):
    with guarded(), st.spinner("Loading records…"):
        return gate.records(principal, RecordQuery(product=product, filters=filters,
                                                   search=search, page=number, page_size=size))


page = _read(int(st.session_state["lists_page"]))
if page.total and page.page > page.pages:  # e.g. an old link to a page that no longer exists
    st.session_state["lists_page"] = page.pages
    page = _read(page.pages)
to_url(list=product, status=status, size=size, page=page.page)
if page.total == 0:
    st.info("No records match. Clear the search or choose another status.")
else:
    catalog = gate.catalog
    masked_table(page, caption=f"{catalog.product(product).title} — "
                               f"{status if status != 'any' else 'all'} records",
                 names={s.code: s.name for s in catalog.states}
                 | {d.code: d.name for d in catalog.districts})
    pager(page, key="lists_page")
