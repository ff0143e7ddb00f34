"""Role-based navigation: the registry of built pages and the per-role page list.

Owns which page files exist and how they are titled. A role sees the intersection of its
``pages`` in roles.toml and the pages built so far; the menu lists no other page. A built page
outside the role that the browser asks for by URL is routed (unlisted) to its own file so that
its guard refuses it and the gate audits the attempt — rather than Streamlit silently showing
the home page.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import streamlit as st

from privacy import Gate, Principal

__all__ = ["PAGES", "pages_for", "requested_page"]

_PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"

#: page id → (file, title, icon). Page ids are the ones roles.toml may name.
PAGES: dict[str, tuple[str, str, str]] = {
    "home": ("home.py", "Home", ":material/home:"),
    "trends": ("trends.py", "Trends", ":material/trending_up:"),
    "map": ("map.py", "Map", ":material/map:"),
    "lists": ("lists.py", "Operational lists", ":material/checklist:"),
    "donor": ("donor.py", "Published trends", ":material/public:"),
    "insights": ("insights.py", "Insights", ":material/scatter_plot:"),
    "exports": ("exports.py", "Exports", ":material/download:"),
    "compliance": ("compliance.py", "Compliance", ":material/policy:"),
    "admin": ("admin.py", "Administration", ":material/admin_panel_settings:"),
}


def _page(page_id: str, *, default: bool = False, hidden: bool = False) -> st.Page:
    file, title, icon = PAGES[page_id]
    return st.Page(str(_PAGES_DIR / file), title=title, icon=icon, url_path=page_id,
                   default=default, visibility="hidden" if hidden else "visible")


def pages_for(gate: Gate, principal: Principal, *, requested: str | None = None) -> list[st.Page]:
    """The role's built pages; plus ``requested``, unlisted, if it is a built page outside it."""
    role = gate.catalog.roles[principal.role]
    allowed = [page_id for page_id in role.pages if page_id in PAGES]
    default = "home" if "home" in allowed else (allowed[0] if allowed else None)
    pages = [_page(page_id, default=page_id == default) for page_id in allowed]
    if requested in PAGES and requested not in allowed:
        pages.append(_page(requested, hidden=True))
    return pages


def requested_page() -> str | None:
    """The page id in the browser's URL (``/trends`` → ``trends``), or None at the root."""
    url = st.context.url
    if not url:
        return None
    parts = [part for part in urlparse(url).path.split("/") if part]
    base = [part for part in (st.get_option("server.baseUrlPath") or "").split("/") if part]
    if parts[:len(base)] == base:
        parts = parts[len(base):]
    return parts[0] if parts else None
