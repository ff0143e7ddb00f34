"""Masked record tables: what a role may see of an operational list, how it was treated, and the
pager beside its "Page x of y"."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from privacy import RecordPage

__all__ = ["masked_table", "pager", "table_height"]

_BADGES = {"show": "", "generalise": " (generalised)", "mask": " (masked)",
           "pseudonymise": " (pseudonymised)"}
_TREATED = {"generalise": "generalised", "mask": "masked", "pseudonymise": "pseudonymised",
            "hide": "hidden"}
_ROW_PX, _HEADER_PX = 35, 38
#: tall enough for a whole page of 25 rows; longer pages scroll inside the table
_MOST_ROWS_SHOWN = 25


def table_height(rows: int, *, most: int = _MOST_ROWS_SHOWN) -> int:
    """Pixels for a table that shows ``rows`` rows (at most ``most``) without an empty band."""
    return _HEADER_PX + _ROW_PX * max(1, min(rows, most)) + 2


def masked_table(page: RecordPage, *, caption: str | None = None,
                 names: dict[str, str] | None = None) -> pd.DataFrame:
    """The page's rows under their fields' titles (and treatments), labelled by ``caption``;
    area codes (public, from the catalog) shown by ``names``."""
    def shown(column: str, value: object) -> object:
        if names and column in ("state", "district") and isinstance(value, str):
            return names.get(value, value)
        return value

    titles = {c: page.titles[c] + _BADGES[page.treatments[c]] for c in page.columns}
    frame = pd.DataFrame([{titles[c]: shown(c, row[c]) for c in page.columns}
                          for row in page.rows])
    if caption:
        st.markdown(f"**{caption}**")
    # Headers name the field; its treatment is in the header's tooltip and the caption below,
    # and pseudonyms (short keys, not reading matter) stay narrow so names and places fit.
    config: dict[str, object] = {}
    for c in page.columns:
        treatment = page.treatments[c]
        note = (f"{_TREATED.get(treatment, treatment).capitalize()} for your role"
                if treatment != "show" else None)
        width = 110 if treatment == "pseudonymise" else None
        if pd.api.types.is_datetime64_any_dtype(frame[titles[c]]):
            config[titles[c]] = st.column_config.DatetimeColumn(
                page.titles[c], help=note, format="YYYY-MM-DD HH:mm", width=width)
        else:
            config[titles[c]] = st.column_config.Column(page.titles[c], help=note,
                                                        width=width)
    st.dataframe(frame, hide_index=True, width="stretch", height=table_height(len(frame)),
                 column_config=config)
    treated = [f"{page.titles[c]}: {_TREATED.get(t, t)}"
               for c, t in page.treatments.items() if t != "show"]
    if treated:
        st.caption("Field treatments for your role — " + "; ".join(treated))
    return frame


def _go(key: str, page: int) -> None:
    st.session_state[key] = page


def pager(page: RecordPage, *, key: str) -> None:
    """Previous / page number / Next beside "Page x of y · N records · S per page"; the page
    number lives in ``st.session_state[key]`` (read by the page before it queries)."""
    back, number, forward, where = st.columns([1.5, 1, 1.2, 4.5], vertical_alignment="center")
    back.button("Previous", icon=":material/chevron_left:", key=f"{key}-back",
                disabled=page.page <= 1, on_click=_go, args=(key, page.page - 1),
                width="stretch")
    number.number_input("Page", min_value=1, max_value=page.pages, step=1, key=key,
                        label_visibility="collapsed")
    forward.button("Next", icon=":material/chevron_right:", key=f"{key}-next",
                   disabled=page.page >= page.pages, on_click=_go, args=(key, page.page + 1),
                   width="stretch")
    where.caption(f"Page {page.page} of {page.pages} · {page.total:,} records · "
                  f"{page.page_size} per page")


# --- released numbers ---------------------------------------------------------------------------

_AREA_COLUMNS = ("area", "state", "district", "h3_cell")
_TITLES = {"month": "Month", "area": "Area", "state": "State", "district": "District",
           "h3_cell": "H3 cell", "age_bucket": "Age group", "gender": "Gender",
           "category": "Category", "status": "Shown as", "change": "Change from a year earlier",
           "earlier_month": "A year earlier", "earlier_status": "Shown as (a year earlier)"}


def _status_words(status: object, names: dict[str, str]) -> object:
    """A cell's status as a reader would say it (the CSV keeps the release's own words)."""
    if not isinstance(status, str):
        return status
    if status.startswith("rolled_up:"):
        parent = status.split(":", 1)[1]
        return f"counted in {names.get(parent, parent)}"
    return {"noisy": "with noise", "exact": "exact", "suppressed": "suppressed: too few",
            "rollup": "small areas together", "total": "whole-area total",
            "not released": "not released"}.get(status, status)


def release_table(frame: pd.DataFrame, *, measure: str, confidence: float,
                  names: dict[str, str] | None = None, caption: str | None = None) -> None:
    """A release's table as read: areas by name, whole numbers for counts (2 decimals for sums
    and means) with thousands separators, and every column titled. The frame itself (the CSV
    download's) keeps its plain column names and codes."""
    shown = frame.copy()
    for column in _AREA_COLUMNS:
        if column in shown and names:
            shown[column] = shown[column].map(lambda code: names.get(code, code))
    for column in ("status", "earlier_status"):
        if column in shown:
            shown[column] = shown[column].map(lambda s: _status_words(s, names or {}))
    number = "localized" if measure == "count" else "%.2f"
    percent = f"{round(confidence * 100)}%"
    config: dict[str, object] = {}
    for column in shown.columns:
        earlier = column.startswith("earlier_")
        base = column.removeprefix("earlier_")
        if base in ("value", "lower", "upper") or column == "change":
            title = {"value": "Value", "lower": f"{percent} interval from", "upper": "to",
                     "change": _TITLES["change"]}[base if column != "change" else "change"]
            if earlier:
                title = f"{title} (a year earlier)"
            config[column] = st.column_config.NumberColumn(title, format=number)
        else:
            config[column] = st.column_config.TextColumn(_TITLES.get(column, column
                                                                     .replace("_", " ")
                                                                     .capitalize()))
    if caption:
        st.caption(caption)
    st.dataframe(shown, hide_index=True, width="stretch", column_config=config,
                 height=table_height(len(shown), most=13))
