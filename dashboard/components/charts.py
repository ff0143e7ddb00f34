"""Charts. Every noisy value is drawn with its interval; suppressed cells are drawn as such."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from privacy import Release

__all__ = ["release_frame", "trend_chart"]


def release_frame(release: Release) -> pd.DataFrame:
    """The release as a table, exactly as shown: suppressed cells have no value."""
    return pd.DataFrame({
        "month": [c.key[0] for c in release.cells],
        "value": [c.value for c in release.cells],
        "lower": [c.lower for c in release.cells],
        "upper": [c.upper for c in release.cells],
        "status": [c.status for c in release.cells],
    })


def trend_chart(release: Release, *, title: str, unit: str) -> go.Figure:
    frame = release_frame(release)
    shown = frame[frame["value"].notna()]
    level = int(round(release.confidence * 100))
    figure = go.Figure()
    figure.add_trace(go.Scatter(
        x=list(shown["month"]) + list(shown["month"])[::-1],
        y=list(shown["upper"]) + list(shown["lower"])[::-1],
        fill="toself", fillcolor="rgba(46, 111, 149, 0.18)", line={"width": 0},
        hoverinfo="skip", name=f"{level}% interval"))
    figure.add_trace(go.Scatter(
        x=shown["month"], y=shown["value"], mode="lines+markers", name=unit,
        line={"color": "#2E6F95", "width": 2},
        customdata=shown[["lower", "upper", "status"]].to_numpy(),
        hovertemplate=("%{x}: %{y:,.0f} (" + f"{level}" + "% interval %{customdata[0]:,.0f}"
                       "–%{customdata[1]:,.0f}, %{customdata[2]})<extra></extra>")))
    suppressed = frame[frame["value"].isna()]
    if not suppressed.empty:
        figure.add_trace(go.Scatter(
            x=suppressed["month"], y=[0] * len(suppressed), mode="markers",
            marker={"symbol": "x", "color": "#B23A48", "size": 10},
            name=f"suppressed (< k={release.k})",
            hovertemplate="%{x}: suppressed, fewer than k people<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="Month", yaxis_title=unit,
                         hovermode="x unified", margin={"t": 48, "l": 8, "r": 8, "b": 8},
                         legend={"orientation": "h", "y": -0.2})
    figure.update_yaxes(rangemode="tozero")
    return figure
