"""Charts. Every noisy value is drawn with its interval; suppressed cells are drawn as such."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from privacy import Release

__all__ = ["insight_chart", "mark_definition_changes", "period_chart", "release_frame",
           "series_chart", "trend_chart"]

_PALETTE = ["#2E6F95", "#B23A48", "#3C8D5A", "#D08C2E", "#6B4C9A", "#4A4A4A"]


def release_frame(release: Release) -> pd.DataFrame:
    """The release as a table, exactly as shown: suppressed cells have no value."""
    names = list(release.query.group_by)
    if len(names) == 1 or names[1] not in ("state", "district", "h3_cell"):
        names.insert(1, "area")  # the key carries the tenant as the area of ungrouped series
    rows = []
    for cell in release.cells:
        row = dict(zip(names, cell.key))
        row.update(value=cell.value, lower=cell.lower, upper=cell.upper, status=cell.status)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "area" in frame and release.query.group_by == ("month",):
        frame = frame.drop(columns="area")
    return frame


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


def series_chart(release: Release, *, title: str, unit: str, names: dict[str, str],
                 only: list[str] | None = None) -> go.Figure:
    """One line with its interval band per area (month × area releases)."""
    frame = release_frame(release)
    if only is not None:
        frame = frame[frame[release.query.group_by[1]].isin(only)]
    area = release.query.group_by[1]
    level = int(round(release.confidence * 100))
    figure = go.Figure()
    for i, (code, part) in enumerate(frame.groupby(area, sort=True)):
        shown = part[part["value"].notna()]
        if shown.empty:
            continue
        colour = _PALETTE[i % len(_PALETTE)]
        label = names.get(code, code)
        figure.add_trace(go.Scatter(
            x=list(shown["month"]) + list(shown["month"])[::-1],
            y=list(shown["upper"]) + list(shown["lower"])[::-1], fill="toself",
            fillcolor=colour, opacity=0.15, line={"width": 0}, hoverinfo="skip",
            showlegend=False, name=f"{label} {level}% interval"))
        figure.add_trace(go.Scatter(
            x=shown["month"], y=shown["value"], mode="lines+markers", name=label,
            line={"color": colour, "width": 2},
            customdata=shown[["lower", "upper", "status"]].to_numpy(),
            hovertemplate=(f"{label} " + "%{x}: %{y:,.0f} (" + f"{level}"
                           + "% interval %{customdata[0]:,.0f}–%{customdata[1]:,.0f}, "
                             "%{customdata[2]})<extra></extra>")))
    figure.update_layout(title=title, xaxis_title="Month", yaxis_title=unit,
                         margin={"t": 48, "l": 8, "r": 8, "b": 8},
                         legend={"orientation": "h", "y": -0.2})
    figure.update_yaxes(rangemode="tozero")
    return figure


def insight_chart(insight, *, names: dict[str, str], x_title: str, y_title: str) -> go.Figure:
    """Scatter of districts with 95% error bars on both axes."""
    points = insight.points
    z = 1.959963984540054
    figure = go.Figure(go.Scatter(
        x=[p.x for p in points], y=[p.y for p in points], mode="markers",
        text=[names.get(p.district, p.district) for p in points],
        error_x={"type": "data", "array": [z * p.x_sd for p in points], "thickness": 1},
        error_y={"type": "data", "array": [z * p.y_sd for p in points], "thickness": 1},
        marker={"color": "#2E6F95", "size": 9},
        hovertemplate="%{text}: %{x:,.0f}, %{y:,.0f}<extra></extra>", name="district"))
    figure.update_layout(xaxis_title=x_title, yaxis_title=y_title,
                         margin={"t": 24, "l": 8, "r": 8, "b": 8})
    return figure


def period_chart(current: Release, earlier: Release, *, title: str, unit: str) -> go.Figure:
    """The same months of two years on one axis (month of the year), each with its band."""
    figure = go.Figure()
    level = int(round(current.confidence * 100))
    for release, colour, dash in ((earlier, "#9AA5AD", "dot"), (current, "#2E6F95", "solid")):
        frame = release_frame(release)
        shown = frame[frame["value"].notna()]
        labels = [f"{m[5:]}" for m in shown["month"]]
        span = f"{release.query.start:%b %Y}–{release.query.end:%b %Y}"
        figure.add_trace(go.Scatter(
            x=labels + labels[::-1], y=list(shown["upper"]) + list(shown["lower"])[::-1],
            fill="toself", fillcolor=colour, opacity=0.15, line={"width": 0}, hoverinfo="skip",
            showlegend=False))
        figure.add_trace(go.Scatter(
            x=labels, y=shown["value"], mode="lines+markers", name=span,
            line={"color": colour, "dash": dash, "width": 2},
            hovertemplate="%{y:,.0f}<extra>" + span + f" ({level}% band shaded)</extra>"))
    figure.update_layout(title=title, xaxis_title="Month of the year", yaxis_title=unit,
                         margin={"t": 48, "l": 8, "r": 8, "b": 8},
                         legend={"orientation": "h", "y": -0.2})
    figure.update_yaxes(rangemode="tozero")
    return figure


def mark_definition_changes(figure: go.Figure, metric, query) -> None:
    """A vertical marker where a new KPI definition takes effect inside the window."""
    for version in metric.versions[1:]:
        month = version.effective_from.replace(day=1)
        if query.start <= month <= query.end:
            label = month.isoformat()[:7]
            figure.add_shape(type="line", x0=label, x1=label, y0=0, y1=1, yref="paper",
                             line={"color": "#B23A48", "dash": "dash", "width": 1})
            figure.add_annotation(x=label, y=1, yref="paper", showarrow=False,
                                  text=f"KPI v{version.version}", yanchor="bottom",
                                  font={"color": "#B23A48", "size": 11})
