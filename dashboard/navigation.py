"""Role-based navigation: the registry of built pages and the per-role page list.

Owns which page files exist and how they are titled. A role sees the intersection of its
``pages`` in roles.toml and the pages built so far; Streamlit serves no other page to it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from privacy import Principal
from privacy import Gate

__all__ = ["PAGES", "pages_for"]

_PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"

#: page id → (file, title, icon). Page ids are the ones roles.toml may name.
PAGES: dict[str, tuple[str, str, str]] = {
    "home": ("home.py", "Home", ":material/home:"),
    "trends": ("trends.py", "Trends", ":material/trending_up:"),
}


def pages_for(gate: Gate, principal: Principal) -> list:
    role = gate.catalog.roles[principal.role]
    return [
        st.Page(str(_PAGES_DIR / PAGES[page_id][0]), title=PAGES[page_id][1],
                icon=PAGES[page_id][2], url_path=page_id, default=page_id == "home")
        for page_id in role.pages if page_id in PAGES
    ]
