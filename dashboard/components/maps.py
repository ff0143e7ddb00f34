"""Maps of releases: H3 cells or districts, rolled-up cells at their parent's extent.

Districts are drawn as the union of their H3 cells (public geography), so a district, a cell
and a roll-up share one hexagon layer. Colours encode the value; rolled-up cells take their
parent's value in a hatched-looking, lighter style, and the tooltip says so.
"""

from __future__ import annotations

import json
import math
from urllib.parse import quote

import pandas as pd
import pydeck as pdk

from privacy import Release

from dashboard.components.badges import interval_percent

__all__ = ["map_frame", "map_legend", "release_map"]

_RAMP = [(237, 248, 251), (179, 205, 227), (140, 150, 198), (136, 86, 167), (129, 15, 124)]
_ROLLED = (255, 196, 0)
_SUPPRESSED = (200, 200, 200)
_BLANK_STYLE = "data:application/json;charset=utf-8," + quote(json.dumps(
    {"version": 8, "sources": {},
     "layers": [{"id": "background", "type": "background",
                 "paint": {"background-color": "#F2F5F7"}}]}))


def map_frame(release: Release, *, month: str, cells_of, names: dict[str, str]) -> pd.DataFrame:
    """One row per H3 cell to draw for ``month``: its value, interval and status."""
    geo = release.query.group_by[1]
    parents = {c.key[1]: c for c in release.cells
               if c.key[0] == month and c.status in ("rollup", "total")}
    rows = []
    level = interval_percent(release)
    for cell in release.cells:
        if cell.key[0] != month or cell.status in ("rollup", "total"):
            continue
        code = cell.key[1]
        if geo == "h3_cell" and code.endswith(":unplaced"):
            continue  # events placed by district only: no hexagon; counted in the totals
        hexes = (code,) if geo == "h3_cell" else cells_of(code)
        if cell.status.startswith("rolled_up:"):
            parent = parents.get(cell.status.split(":", 1)[1])
            value, lower, upper = ((parent.value, parent.lower, parent.upper) if parent
                                   else (None, None, None))
            label = f"counted in {names.get(parent.key[1], parent.key[1]) if parent else '?'}"
            kind = "rolled up"
        elif cell.status == "suppressed":
            value = lower = upper = None
            label, kind = "suppressed: fewer than k people", "suppressed"
        else:
            value, lower, upper = cell.value, cell.lower, cell.upper
            label, kind = names.get(code, code), cell.status
        for h in hexes:
            rows.append({"hex": h, "area": names.get(code, code), "value": value,
                         "lower": lower, "upper": upper, "status": kind, "label": label,
                         "level": level})
    return pd.DataFrame(rows)


_LEVEL_NAMES = {"h3_cell": "H3 cell", "district": "district", "state": "state",
                "tenant": "whole tenant"}


def map_legend(release: Release) -> str:
    """The map's caption in plain words: colours, and how often noise paints an empty area."""
    colours = ("Darker = more · amber = small area counted in a larger area · grey = suppressed "
               "(too few even in the whole tenant)")
    if not release.thresholds:
        return colours
    finest = release.thresholds[0]
    area = _LEVEL_NAMES.get(finest.level, finest.level)
    if release.empty_cell_rate == 0:
        return (f"{colours}. Exact counts: an area with no activity is never shown as active; "
                f"each {area} is shown on its own from a count of {finest.count}.")
    # rounded up, so the caption never promises less than the release delivers
    percent = math.ceil(release.empty_cell_rate * 1000) / 10
    return (f"{colours}. An area with no activity is shown as active with probability at most "
            f"{percent:g}% (noise alone): each {area} is shown on its own only when its noisy "
            f"count reaches {finest.count}, otherwise it is counted in a larger area.")


def release_map(frame: pd.DataFrame, *, centre: tuple[float, float]) -> pdk.Deck:
    shown = frame[frame["status"].isin(["noisy", "exact"])]
    top = float(shown["value"].max()) if not shown.empty else 1.0
    colours = []
    for _, row in frame.iterrows():
        if row["status"] == "rolled up":
            colours.append([*_ROLLED, 150])
        elif row["status"] == "suppressed" or row["value"] is None or pd.isna(row["value"]):
            colours.append([*_SUPPRESSED, 90])
        else:
            step = min(int(row["value"] / top * (len(_RAMP) - 1)), len(_RAMP) - 1)
            colours.append([*_RAMP[step], 200])
    data = frame.assign(colour=colours,
                        text=[_tooltip(r) for _, r in frame.iterrows()])
    layer = pdk.Layer("H3HexagonLayer", data=data, get_hexagon="hex", get_fill_color="colour",
                      get_line_color=[80, 80, 80, 80], line_width_min_pixels=0.5,
                      pickable=True, extruded=False)
    view = pdk.ViewState(latitude=centre[0], longitude=centre[1], zoom=8.2)
    # A blank style as a data: URL: without a style Streamlit loads a third-party basemap,
    # and nothing may leave loopback (its frontend only accepts a style given as a string).
    return pdk.Deck(layers=[layer], initial_view_state=view, map_style=_BLANK_STYLE,
                    tooltip={"text": "{text}"})


def _tooltip(row) -> str:
    if row["value"] is None or pd.isna(row["value"]):
        return f"{row['area']}: {row['label']}"
    return (f"{row['area']}: {row['value']:,.0f} "
            f"({row['level']}% interval {row['lower']:,.0f}–{row['upper']:,.0f}) · {row['label']}"
            if row["status"] == "rolled up" else
            f"{row['area']}: {row['value']:,.0f} ({row['level']}% interval {row['lower']:,.0f}–"
            f"{row['upper']:,.0f}) · {row['status']}")
