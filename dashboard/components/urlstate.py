"""Page state in the URL: a view can be bookmarked, shared and survives a refresh.

A page reads its widgets' starting values from ``st.query_params`` (ignoring anything that is
not one of the choices it offers: a URL is user input) and writes the chosen values back after
drawing them, so the address bar always names the view on screen.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

__all__ = ["from_url", "list_from_url", "number_from_url", "to_url"]


def from_url(name: str, options: Sequence[str], default: str | None = None) -> str | None:
    """The URL's ``name`` if it is one of ``options``, else ``default``."""
    value = st.query_params.get(name)
    return value if value in options else default


def list_from_url(name: str, options: Sequence[str], *, most: int) -> list[str] | None:
    """The URL's comma-separated ``name`` kept to known ``options`` (at most ``most``); None
    when the URL does not set it."""
    value = st.query_params.get(name)
    if value is None:
        return None
    return [v for v in dict.fromkeys(value.split(",")) if v in options][:most]


def number_from_url(name: str, *, lowest: int, highest: int, default: int) -> int:
    """The URL's whole number ``name`` within [lowest, highest], else ``default``."""
    value = st.query_params.get(name, "")
    return int(value) if value.isdigit() and lowest <= int(value) <= highest else default


def to_url(**values: str | int | Sequence[str] | None) -> None:
    """Write the view's state to the URL (None removes a key); unchanged keys are not
    rewritten, so a rerun does not churn the browser history."""
    for name, value in values.items():
        if value is None:
            if name in st.query_params:
                del st.query_params[name]
            continue
        text = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
        if st.query_params.get(name) != text:
            st.query_params[name] = text
