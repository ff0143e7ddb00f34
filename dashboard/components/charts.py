"""Charts and tables of releases. Every noisy value is drawn with its interval; a suppressed or
rolled-up month is drawn as a gap with a marker that is not a value, never as a zero.

The x axis of a monthly chart holds real dates (the first day of each month of the query's
window, which is public), so ticks are months and the whole window shows even where the first
or last months have no value. Display rounding happens here, on a copy: a release is never
changed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import date, timedelta

import pandas as pd
import plotly.graph_objects as go

from privacy import Release, VeilBug, add_months

from dashboard.components.badges import interval_percent
from dashboard.components.clock import months_between

__all__ = ["for_theme", "insight_chart", "mark_definition_changes", "period_chart",
           "period_frame", "release_frame", "rounded_for_display", "series_chart", "trend_chart"]

_PALETTE = ["#2E6F95", "#B23A48", "#3C8D5A", "#D08C2E", "#6B4C9A", "#4A4A4A"]
_EARLIER = "#8A969E"
_SUPPRESSED = "#9AA5AD"
_BOUNDS = ("value", "lower", "upper")


# --- tables -----------------------------------------------------------------------------------


def _frame(release: Release) -> pd.DataFrame:
    """One row per released cell, unrounded (what the charts draw)."""
    names = list(release.query.group_by)
    if len(names) == 1 or names[1] not in ("state", "district", "h3_cell"):
        names.insert(1, "area")  # the key carries the tenant as the area of ungrouped series
    rows = []
    for cell in release.cells:
        row = dict(zip(names, cell.key))
        row.update(value=cell.value, lower=cell.lower, upper=cell.upper, status=cell.status)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*names, *_BOUNDS, "status"])
    for column in _BOUNDS:
        frame[column] = frame[column].astype("float64")
    if "area" in frame and release.query.group_by == ("month",):
        frame = frame.drop(columns="area")
    return frame


def rounded_for_display(frame: pd.DataFrame, *, measure: str,
                        columns: Sequence[str] = _BOUNDS) -> pd.DataFrame:
    """A copy of ``frame`` with ``columns`` rounded as shown: counts to whole numbers (nullable
    integers, so a suppressed cell stays empty), sums and means to 2 decimals.

    A column named ``lower…`` is rounded down and ``upper…`` up, so the shown interval still
    contains the computed one; every other column is rounded to the nearest.
    """
    places = 0 if measure == "count" else 2
    scale = 10 ** places
    out = frame.copy()
    for column in columns:
        if column not in out:
            continue
        values = out[column].astype("float64")
        name = column.rsplit("_", 1)[-1]
        if name == "lower":
            values = (values * scale).apply(_floor) / scale
        elif name == "upper":
            values = (values * scale).apply(_ceil) / scale
        values = values.round(places)
        out[column] = values.astype("Int64") if places == 0 else values
    return out


def _floor(x: float) -> float:
    # 1e-9 absorbs representation error (0.29 * 100 = 28.999999999999996)
    return x if math.isnan(x) else math.floor(x + 1e-9)


def _ceil(x: float) -> float:
    return x if math.isnan(x) else math.ceil(x - 1e-9)


def release_frame(release: Release, *, rounded: bool = True) -> pd.DataFrame:
    """The release as a table, exactly as shown: suppressed cells have no value; bounds are
    rounded for display (``rounded=False`` keeps the released floats)."""
    frame = _frame(release)
    return rounded_for_display(frame, measure=release.measure) if rounded else frame


def release_csv(release: Release, *, title: str, frame: pd.DataFrame | None = None) -> str:
    """Exactly what a chart shows, as CSV, with the privacy note on top (lines starting with
    "#": a spreadsheet shows them as the first rows). Free: it is the stored release."""
    frame = release_frame(release) if frame is None else frame
    note = (f"# Veil release {release.id}: {title}\n"
            f"# {release.guarantee} Values under k={release.k} are suppressed or counted in a "
            f"larger area; lower/upper are {interval_percent(release)}% intervals.\n"
            f"# policy {release.policy_version} · data version {release.data_version}\n")
    return note + frame.to_csv(index=False)


def period_frame(current: Release, earlier: Release) -> pd.DataFrame:
    """The year-earlier comparison as one labelled table, in the current window's order.

    Each row is a month of the current window next to the month its earlier value belongs to,
    with both intervals and ``change`` = this year − a year earlier (empty when either value
    is suppressed). The change is a difference of two noisy values; its interval is wider than
    either row's.
    """
    now, before = _aligned(current), _aligned(earlier)
    offset = months_between(earlier.query.start, current.query.start)
    rows = []
    for month in current.query.months:
        this = now.get(month, {})
        prior_month = add_months(month, -offset)
        prior = before.get(prior_month, {})
        value, old = this.get("value"), prior.get("value")
        rows.append({
            "month": f"{month:%Y-%m}", "value": value, "lower": this.get("lower"),
            "upper": this.get("upper"), "status": this.get("status", "not released"),
            "earlier_month": f"{prior_month:%Y-%m}", "earlier_value": old,
            "earlier_lower": prior.get("lower"), "earlier_upper": prior.get("upper"),
            "earlier_status": prior.get("status", "not released"),
            "change": None if value is None or old is None else value - old})
    frame = pd.DataFrame(rows)
    return rounded_for_display(frame, measure=current.measure, columns=(
        "value", "lower", "upper", "earlier_value", "earlier_lower", "earlier_upper", "change"))


# --- monthly helpers --------------------------------------------------------------------------


def _month(key: str | date) -> date:
    if isinstance(key, date):
        return key.replace(day=1)
    return date(int(key[:4]), int(key[5:7]), 1)


def _rows(frame: pd.DataFrame) -> dict[date, dict]:
    """Month → its row; where a month has more than one cell, the one with a value wins."""
    out: dict[date, dict] = {}
    for row in frame.to_dict("records"):
        month = _month(row["month"])
        value = row["value"]
        row = {**row, **{c: (None if pd.isna(row[c]) else float(row[c])) for c in _BOUNDS}}
        if month not in out or (out[month]["value"] is None and value is not None
                                and not pd.isna(value)):
            out[month] = row
    return out


def _aligned(release: Release) -> dict[date, dict]:
    if release.query.group_by != ("month",):
        raise VeilBug(f"a year-earlier comparison needs an ungrouped monthly series, "
                      f"got group_by {release.query.group_by!r}")
    return _rows(_frame(release))


def _partial_months(partial: Collection[str | date] | None) -> set[date]:
    return {_month(m) for m in partial or ()}


def _value_format(measure: str) -> str:
    return ",.0f" if measure == "count" else ",.2f"


def _runs(present: list[bool]) -> list[list[int]]:
    """Indices of the consecutive months that have a value."""
    runs, run = [], []
    for i, ok in enumerate(present):
        if ok:
            run.append(i)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    return runs


def _draw_series(figure: go.Figure, *, x: list[date], rows: list[dict | None],
                 labels: list[str], name: str, colour: str, level: int, measure: str,
                 partial: set[date], dash: str = "solid", band_name: str | None = None,
                 show_band_legend: bool = False, legendgroup: str | None = None,
                 partial_name: str = "partial month") -> None:
    """One series on a month axis: its interval band, its line with gaps, partial months.

    ``x`` is where each point is drawn, ``labels`` what the hover calls its month (they differ
    on the year-earlier series, drawn at the current window's months).
    """
    fmt = _value_format(measure)
    value = [None if r is None else r["value"] for r in rows]
    present = [v is not None for v in value]
    group = legendgroup or name

    # The band: one closed polygon per run of months with a value; a lone month gets a
    # narrow box so its interval still shows.
    band_x: list = []
    band_y: list = []
    for run in _runs(present):
        upper = [rows[i]["upper"] for i in run]
        lower = [rows[i]["lower"] for i in run]
        xs = [x[i] for i in run]
        if len(run) == 1:
            xs = [xs[0] - timedelta(days=8), xs[0] + timedelta(days=8)]
            upper, lower = upper * 2, lower * 2
        band_x += xs + xs[::-1] + [None]
        band_y += upper + lower[::-1] + [None]
    if band_x:
        figure.add_trace(go.Scatter(
            x=band_x, y=band_y, fill="toself", fillcolor=colour, opacity=0.18,
            line={"width": 0}, hoverinfo="skip", name=band_name or f"{name} {level}% interval",
            showlegend=show_band_legend, legendgroup=group))

    complete = [v if ok and x_month not in partial else None
                for v, ok, x_month in zip(value, present, _label_months(rows, x))]
    hover = (f"%{{customdata[0]}}: %{{y:{fmt}}} ({level}% interval "
             f"%{{customdata[1]:{fmt}}}–%{{customdata[2]:{fmt}}})")
    customdata = [[label, None if r is None else r["lower"], None if r is None else r["upper"]]
                  for label, r in zip(labels, rows)]
    figure.add_trace(go.Scatter(
        x=x, y=complete, mode="lines+markers", name=name, connectgaps=False,
        line={"color": colour, "width": 2, "dash": dash}, marker={"color": colour, "size": 7},
        customdata=customdata, legendgroup=group,
        hovertemplate=hover + f"<extra>{name}</extra>"))

    months = _label_months(rows, x)
    partial_idx = [i for i, (ok, m) in enumerate(zip(present, months)) if ok and m in partial]
    if partial_idx:
        # Dashed links from each partial month to its neighbours with a value.
        link_x: list = []
        link_y: list = []
        for i in partial_idx:
            for j in (i - 1, i + 1):
                if 0 <= j < len(x) and present[j]:
                    link_x += [x[min(i, j)], x[max(i, j)], None]
                    link_y += [value[min(i, j)], value[max(i, j)], None]
        if link_x:
            figure.add_trace(go.Scatter(
                x=link_x, y=link_y, mode="lines", line={"color": colour, "width": 2,
                                                        "dash": "dash"},
                hoverinfo="skip", showlegend=False, legendgroup=f"{group} partial"))
        figure.add_trace(go.Scatter(
            x=[x[i] for i in partial_idx], y=[value[i] for i in partial_idx], mode="markers",
            name=partial_name,
            marker={"symbol": "circle-open", "color": colour, "size": 10,
                    "line": {"width": 2}},
            customdata=[customdata[i] for i in partial_idx], legendgroup=f"{group} partial",
            hovertemplate=hover + " · partial month, not all data in yet"
                          + f"<extra>{name}</extra>"))


def _label_months(rows: list[dict | None], x: list[date]) -> list[date]:
    """The month each point's value belongs to (its own month, not where it is drawn)."""
    return [x_month if r is None else _month(r["month"]) for r, x_month in zip(rows, x)]


def _month_axis(figure: go.Figure, months: Sequence[date], *, title: str) -> None:
    """Ticks on months only: every month up to a year, every third month beyond."""
    first, last = months[0], months[-1]
    figure.update_xaxes(
        # month over year on two lines: twelve labels fit unrotated (rotated, the last one
        # was dropped on a narrow chart)
        type="date", title=title, tickformat="%b<br>%Y", hoverformat="%b %Y", tick0=first,
        dtick="M1" if len(months) <= 12 else "M3", ticklabelmode="instant", tickangle=0,
        range=[first - timedelta(days=15), last + timedelta(days=15)], showgrid=False)


def _mark_suppressed(figure: go.Figure, months: list[date], *, k: int) -> None:
    """Grey bands over months without a value, and one hoverable marker per month pinned to the
    top of the plot on a hidden axis of its own, so nothing sits on the value axis."""
    if not months:
        return
    for month in months:
        figure.add_vrect(x0=month - timedelta(days=14), x1=month + timedelta(days=14),
                         fillcolor=_SUPPRESSED, opacity=0.15, line_width=0, layer="below")
    figure.add_trace(go.Scatter(
        x=months, y=[1.0] * len(months), yaxis="y2", mode="markers",
        marker={"symbol": "line-ns-open", "color": _SUPPRESSED, "size": 14,
                "line": {"width": 3, "color": _SUPPRESSED}},
        name=f"suppressed (< k = {k})", customdata=[f"{m:%b %Y}" for m in months],
        hovertemplate=("%{customdata}: suppressed, fewer than k = " + f"{k}"
                       + " people; no value is released<extra></extra>")))
    figure.update_layout(yaxis2={"overlaying": "y", "range": [0, 1.05], "visible": False,
                                 "fixedrange": True})


def _layout(figure: go.Figure, *, title: str, unit: str) -> None:
    figure.update_layout(title=title, yaxis_title=unit, hovermode="x unified",
                         margin={"t": 48, "l": 8, "r": 8, "b": 8},
                         legend={"orientation": "h", "y": -0.2})
    figure.update_layout(yaxis={"rangemode": "tozero"})


# --- charts -----------------------------------------------------------------------------------


def trend_chart(release: Release, *, title: str, unit: str,
                partial: Collection[str | date] | None = None) -> go.Figure:
    """A monthly series with its interval band.

    Suppressed months are gaps under a grey band with a marker at the top of the plot (not on
    the value axis). ``partial`` months ("YYYY-MM") are drawn hollow with a dashed link.
    """
    months = list(release.query.months)
    by_month = _rows(_frame(release))
    rows = [by_month.get(m) for m in months]
    level = interval_percent(release)
    figure = go.Figure()
    _draw_series(figure, x=months, rows=rows, labels=[f"{m:%b %Y}" for m in months],
                 name=unit, colour=_PALETTE[0], level=level, measure=release.measure,
                 partial=_partial_months(partial), band_name=f"{level}% interval",
                 show_band_legend=True)
    _mark_suppressed(figure, [m for m, r in zip(months, rows)
                              if r is None or r["value"] is None], k=release.k)
    _layout(figure, title=title, unit=unit)
    _month_axis(figure, months, title="Month")
    return figure


def series_chart(release: Release, *, title: str, unit: str, names: dict[str, str],
                 only: list[str] | None = None,
                 partial: Collection[str | date] | None = None) -> go.Figure:
    """One line with its interval band per area (month × area releases); a month without a
    value for an area (suppressed or counted in a larger area) is a gap in its line."""
    frame = _frame(release)
    area = release.query.group_by[1]
    if only is not None:
        frame = frame[frame[area].isin(only)]
    months = list(release.query.months)
    level = interval_percent(release)
    marked = _partial_months(partial)
    figure = go.Figure()
    for i, (code, part) in enumerate(frame.groupby(area, sort=True)):
        by_month = _rows(part)
        rows = [by_month.get(m) for m in months]
        if all(r is None or r["value"] is None for r in rows):
            continue
        label = names.get(code, code)
        _draw_series(figure, x=months, rows=rows, labels=[f"{m:%b %Y}" for m in months],
                     name=label, colour=_PALETTE[i % len(_PALETTE)], level=level,
                     measure=release.measure, partial=marked, legendgroup=label,
                     partial_name=f"{label}: partial month")
    _layout(figure, title=title, unit=unit)
    _month_axis(figure, months, title="Month")
    return figure


def period_chart(current: Release, earlier: Release, *, title: str, unit: str,
                 partial: Collection[str | date] | None = None) -> go.Figure:
    """This window and the same window a year earlier, month by month on one axis.

    The x axis is the current window's months in order; the earlier series' value for each
    month is drawn at the current month it corresponds to (same position in its window, so the
    same month of the year), and its hover names its own month. Each series has its band;
    months without a value are gaps.
    """
    months = list(current.query.months)
    offset = months_between(earlier.query.start, current.query.start)
    level = interval_percent(current)
    marked = _partial_months(partial)
    figure = go.Figure()
    series = ((earlier, _EARLIER, "dot", -offset), (current, _PALETTE[0], "solid", 0))
    for release, colour, dash, shift in series:
        by_month = _aligned(release)
        own = [add_months(m, shift) for m in months]
        rows = [by_month.get(m) for m in own]
        span = f"{release.query.start:%b %Y}–{release.query.end:%b %Y}"
        _draw_series(figure, x=months, rows=rows, labels=[f"{m:%b %Y}" for m in own],
                     name=span, colour=colour, level=level, measure=release.measure,
                     partial=marked, dash=dash, legendgroup=span,
                     band_name=(f"{level}% interval, {release.query.start:%b %Y} to "
                                f"{release.query.end:%b %Y}"))
    _layout(figure, title=title, unit=unit)
    _month_axis(figure, months, title=(f"Month ({current.query.start:%b %Y}–"
                                       f"{current.query.end:%b %Y}; the year-earlier value "
                                       f"is drawn at the same month of the year)"))
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


def mark_definition_changes(figure: go.Figure, metric, query) -> None:
    """A vertical marker where a new KPI definition takes effect inside the window."""
    for version in metric.versions[1:]:
        month = version.effective_from.replace(day=1)
        if query.start <= month <= query.end:
            figure.add_shape(type="line", x0=month, x1=month, y0=0, y1=1, yref="paper",
                             line={"color": "#B23A48", "dash": "dash", "width": 1})
            figure.add_annotation(x=month, y=1, yref="paper", showarrow=False,
                                  text=f"KPI v{version.version}", yanchor="bottom",
                                  font={"color": "#B23A48", "size": 11})


# --- the dark theme ---------------------------------------------------------------------------

#: each series colour's counterpart on the dark theme's ground: the same hue, lighter, so a
#: line and its interval band read as well on #141E25 as the originals on white
_DARK = {"#2E6F95": "#7AB8DE", "#B23A48": "#E8808C", "#3C8D5A": "#7CCB94",
         "#D08C2E": "#EDB56A", "#6B4C9A": "#B39BDB", "#4A4A4A": "#C9D1D6",
         "#8A969E": "#A9B4BB", "#9AA5AD": "#8A969E",
         # the overview's sparkline band
         "RGBA(46, 111, 149, 0.18)": "rgba(122, 184, 222, 0.25)"}


def _darker_ground(value):
    if isinstance(value, str):
        return _DARK.get(value.upper(), value)
    if isinstance(value, (list, tuple)):
        return [_darker_ground(v) for v in value]
    return value


def for_theme(figure: go.Figure, *, dark: bool) -> go.Figure:
    """``figure`` recoloured for the dark theme (``dark``), else unchanged. Streamlit's plotly
    theme already follows the app's theme for text, grid and ground; only the series colours
    Veil sets itself need their lighter counterparts."""
    if not dark:
        return figure
    for trace in figure.data:
        for part in ("line", "marker"):
            style = getattr(trace, part, None)
            if style is not None and getattr(style, "color", None) is not None:
                style.color = _darker_ground(style.color)
            edge = getattr(style, "line", None) if part == "marker" else None
            if edge is not None and edge.color is not None:
                edge.color = _darker_ground(edge.color)
        if getattr(trace, "fillcolor", None) is not None:
            trace.fillcolor = _darker_ground(trace.fillcolor)
    for shape in figure.layout.shapes or ():
        if shape.fillcolor is not None:
            shape.fillcolor = _darker_ground(shape.fillcolor)
        if shape.line is not None and shape.line.color is not None:
            shape.line.color = _darker_ground(shape.line.color)
    for note in figure.layout.annotations or ():
        if note.font is not None and note.font.color is not None:
            note.font.color = _darker_ground(note.font.color)
    return figure
