"""Privacy badge and budget meter: what protected this number, and what it cost."""

from __future__ import annotations

import streamlit as st

from privacy import BudgetStatus, Preview, Release

__all__ = ["budget_meter", "privacy_badge"]


def privacy_badge(release: Release) -> None:
    cost = "reused a stored release: ε 0 charged" if release.reused else (
        f"ε {release.charged.value:g} charged")
    st.caption(
        f":material/shield_lock: {release.guarantee}  \n"
        f"Mechanism: {release.mechanism} · k = {release.k} · {cost} · "
        f"policy {release.policy_version[:12]} · data v{release.data_version} · "
        f"release {release.id[:8]}")


def budget_meter(status: BudgetStatus, preview: Preview | None = None) -> None:
    cap = status.cap.value
    remaining = status.remaining.value
    fraction = 0.0 if cap <= 0 else min(max(remaining / cap, 0.0), 1.0)
    label = (f"Privacy budget for {status.product}, {status.window_start:%B %Y}: "
             f"ε {remaining:g} of {cap:g} left")
    if preview is not None:
        label += (" · this view is free (stored release)" if preview.reused
                  else f" · this view costs ε {preview.epsilon.value:g}")
    st.progress(fraction, text=label)
