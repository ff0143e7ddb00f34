"""The privacy-level choice every release page offers, as the tenant's settings allow it.

A page offers the levels the gate says the principal may release aggregates at
(``gate.aggregate_levels``): the role's noisy levels (no aggregate leaves exact, so never
``anonymized``) minus those the tenant's administrators have switched off. The gate refuses the
others anyway, so this only keeps a choice off the page that could never be released. It never
decides anything the gate does not.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from privacy import Gate, Principal

__all__ = ["level_select"]


#: what ε means, in one sentence, where the level is chosen
EPSILON_IN_WORDS = (
    "Every number gets random noise so that no one person can be singled out. ε says how much "
    "one person's data may change what you see: a smaller ε is stronger protection and more "
    "noise (wider intervals); a larger ε is more precise and protects less.")


def level_select(container: Any, gate: Gate, principal: Principal, *,
                 key: str | None = None, preferred: str | None = None) -> str:
    """A select box of the levels ``principal`` may release at now; ``preferred`` (e.g. from the
    URL) or else the role's default first when allowed. Stops the page with a note when none
    is left."""
    catalog = gate.catalog
    role = catalog.roles[principal.role]
    off = gate.admin.effective(principal.tenant).settings.disabled_levels
    levels = list(gate.aggregate_levels(principal))
    if not levels:
        container.warning(
            "Your organisation has switched off every privacy level your role releases at. "
            "An administrator can switch one back on." if off & set(role.privacy_levels) else
            "Your role releases no aggregates: numbers leave Veil only with "
            "differential-privacy noise, at a level and on a budget your role does not have.")
        st.stop()
    return container.selectbox(
        "Privacy level", levels, key=key,
        index=levels.index(preferred) if preferred in levels else (
            levels.index(role.default_level) if role.default_level in levels else 0),
        format_func=lambda level: catalog.policy.levels[level].title,
        help=EPSILON_IN_WORDS + (
            f" Switched off for your organisation: "
            f"{', '.join(catalog.policy.levels[level].title for level in sorted(off))}."
            if off & set(role.privacy_levels) else ""))
