"""Masked record tables: what a role may see of an operational list, and how it was treated."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from privacy import RecordPage

__all__ = ["masked_table"]

_BADGES = {"show": "", "generalise": " (generalised)", "mask": " (masked)",
           "pseudonymise": " (pseudonymised)"}


def masked_table(page: RecordPage) -> pd.DataFrame:
    frame = pd.DataFrame([{page.titles[c] + _BADGES[page.treatments[c]]: row[c]
                           for c in page.columns} for row in page.rows])
    st.dataframe(frame, hide_index=True, width="stretch")
    treated = [f"{page.titles[c]}: {t}" for c, t in page.treatments.items() if t != "show"]
    if treated:
        st.caption("Field treatments for your role — " + "; ".join(treated))
    return frame
