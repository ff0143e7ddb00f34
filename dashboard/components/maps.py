"""Maps of releases: values drawn over the catalog's own outlines, names and colour scale.

Owns how a release becomes a map: one row per H3 cell to draw (a district is the union of its
cells, so a district, a cell and a roll-up share one hexagon layer), the colour scale and its
legend, tooltips in place names, and the deck. Rolled-up cells take their parent's value in
amber and the tooltip says so. Never fetches tiles or a basemap: nothing leaves loopback.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from urllib.parse import quote

import pandas as pd
import pydeck as pdk

from privacy import Release

from dashboard.components.badges import interval_percent
from dashboard.components.geography import TenantGeography

__all__ = ["ColourScale", "colour_scale", "legend_html", "map_frame", "map_legend",
           "map_table", "release_map", "selected_district", "tooltip"]

#: ColorBrewer BuPu without its palest step, which vanishes into the background
_RAMP = ((191, 211, 230), (158, 188, 218), (140, 150, 198), (136, 86, 167), (129, 15, 124))
_ROLLED = (255, 196, 0)
_SUPPRESSED = (200, 200, 200)
_DISTRICT_LINE = (60, 60, 60)
#: one muted line colour per state of a tenant, clear of the purple values and the amber
_STATE_LINES = ((31, 120, 140), (150, 90, 40), (90, 115, 45), (70, 80, 125), (150, 60, 80))
#: Streamlit's own face, already loaded from the app's server; a pydeck String, because pydeck
#: turns a plain string into an accessor expression
_FONT = pdk.types.String('"Source Sans", "Source Sans Pro", sans-serif')


def _blank_style(background: str) -> str:
    return "data:application/json;charset=utf-8," + quote(json.dumps(
        {"version": 8, "sources": {},
         "layers": [{"id": "background", "type": "background",
                     "paint": {"background-color": background}}]}))


_BLANK_STYLE = _blank_style("#F2F5F7")
#: the dark theme's map: the app's dark panel colour, light lines and names on dark labels
_DARK_STYLE = _blank_style("#1F2D36")
_DARK_DISTRICT_LINE = (190, 200, 206)
#: the id of the values layer, the one a click selects from
AREAS_LAYER = "areas"


def _number(value: float) -> str:
    return f"{value:,.0f}"


def tooltip(*, place: str, value: float | None, lower: float | None, upper: float | None,
            status: str, level: str, counted_in: str = "") -> str:
    """What hovering an area says, in place names: its value and interval, or why it has none."""
    if status == "suppressed":
        return f"{place}: suppressed (fewer than k people, even in the whole tenant)"
    if value is None or pd.isna(value):
        return f"{place}: counted in {counted_in or 'a larger area'}"
    interval = f"{level}% interval {_number(lower)}–{_number(upper)}"
    if status == "rolled up":
        # the value is the larger area's: too few here to show this area alone
        return f"{place} (rolled up into {counted_in}): {_number(value)} ({interval})"
    return f"{place}: {_number(value)} ({interval}){' · exact count' if status == 'exact' else ''}"


def map_frame(release: Release, *, month: str, names: dict[str, str], cells_of,
              district_of) -> pd.DataFrame:
    """One row per H3 cell to draw for ``month``: the place it lies in (a name, never an H3 id),
    its district's code, its value, interval, status and tooltip. ``cells_of(district)`` gives a
    district's cells and ``district_of(cell)`` a cell's district (or None)."""
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
        if geo == "h3_cell":
            district = district_of(code)
            place = f"H3 cell in {names[district]}" if district in names else "H3 cell"
            hexes = (code,)
        else:
            district, place, hexes = code, names.get(code, code), cells_of(code)
        counted_in = ""
        if cell.status.startswith("rolled_up:"):
            parent = parents.get(cell.status.split(":", 1)[1])
            value, lower, upper = ((parent.value, parent.lower, parent.upper) if parent
                                   else (None, None, None))
            counted_in = names.get(parent.key[1], parent.key[1]) if parent else ""
            kind = "rolled up"
        elif cell.status == "suppressed":
            value = lower = upper = None
            kind = "suppressed"
        else:
            value, lower, upper, kind = cell.value, cell.lower, cell.upper, cell.status
        text = tooltip(place=place, value=value, lower=lower, upper=upper, status=kind,
                       level=level, counted_in=counted_in)
        for h in hexes:
            rows.append({"hex": h, "district": district, "place": place, "value": value,
                         "lower": lower, "upper": upper, "status": kind,
                         "counted_in": counted_in, "level": level, "tooltip": text})
    return pd.DataFrame(rows, columns=["hex", "district", "place", "value", "lower", "upper",
                                       "status", "counted_in", "level", "tooltip"])


def map_table(frame: pd.DataFrame, *, geo: str) -> pd.DataFrame:
    """The map as a labelled table: one row per area drawn (per cell for H3 cells)."""
    rows = frame if geo == "h3_cell" else frame.drop_duplicates(subset=["district"])
    level = rows["level"].iloc[0] if not rows.empty else ""
    shown = [f"counted in {c}" if s == "rolled up" else s
             for s, c in zip(rows["status"], rows["counted_in"])]
    table = pd.DataFrame({"Area": rows["place"], "Value": rows["value"].round(),
                          f"{level}% interval from": rows["lower"].round(),
                          "to": rows["upper"].round(), "Shown as": shown})
    if geo == "h3_cell":
        table.insert(1, "H3 cell", rows["hex"])
    return table.reset_index(drop=True)


@dataclass(frozen=True)
class ColourScale:
    """Equal steps of ``step`` from 0, one colour each; the last step holds the top value."""

    step: float
    colours: tuple[tuple[int, int, int], ...] = _RAMP

    def __post_init__(self):
        if not self.step > 0:
            raise ValueError(f"a colour scale's step must be > 0, got {self.step}")

    def colour(self, value: float) -> tuple[int, int, int]:
        index = int(max(value, 0) // self.step)
        return self.colours[min(index, len(self.colours) - 1)]

    def bins(self) -> list[tuple[tuple[int, int, int], float, float]]:
        """``(colour, from, to)`` per step, lowest first."""
        return [(colour, i * self.step, (i + 1) * self.step)
                for i, colour in enumerate(self.colours)]


def colour_scale(top: float) -> ColourScale:
    """Five round-numbered steps (1, 2, 2.5 or 5 × 10ⁿ each) from 0 that reach ``top``."""
    steps = len(_RAMP)
    raw = max(top, steps) / steps  # counts: never a step under 1
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return ColourScale(step=step)


def _swatch(css: str) -> str:
    return (f'<span style="display:inline-block;width:1.1em;height:1.1em;{css};'
            f'vertical-align:-0.2em;margin-right:0.5em;border-radius:2px"></span>')


def _rgb(colour, alpha: float = 1.0) -> str:
    return f"rgba({colour[0]},{colour[1]},{colour[2]},{alpha})"


def _state_colours(geography: TenantGeography) -> dict[str, tuple[int, int, int]]:
    codes = list(dict.fromkeys(o["code"] for o in geography.state_outlines))
    return {code: _STATE_LINES[i % len(_STATE_LINES)] for i, code in enumerate(codes)}


def legend_html(scale: ColourScale, *, title: str,
                geography: TenantGeography | None = None, dark: bool = False) -> str:
    """The colour legend shown beside the map (pydeck draws none): the value scale, highest
    first, then the amber and grey keys, each state's outline colour and the districts'."""
    rows = [f'<div style="font-weight:600;margin-bottom:0.3em">{html.escape(title)}</div>']
    for colour, lower, upper in reversed(scale.bins()):
        rows.append(f"<div>{_swatch('background:' + _rgb(colour))}"
                    f"{lower:,.4g} – {upper:,.4g}</div>")
    rows += [
        f"<div style='margin-top:0.4em'>{_swatch('background:' + _rgb(_ROLLED, 0.6))}"
        "counted in a larger area (its value)</div>",
        f"<div>{_swatch('background:' + _rgb(_SUPPRESSED, 0.5))}suppressed: too few</div>",
    ]
    states = _state_colours(geography) if geography else {}
    names = {o["code"]: o["name"] for o in geography.state_outlines} if geography else {}
    for i, (code, colour) in enumerate(states.items()):
        margin = "margin-top:0.4em" if i == 0 else ""
        rows.append(f"<div style='{margin}'>{_swatch('border:3px solid ' + _rgb(colour))}"
                    f"{html.escape(names[code])}</div>")
    gap = "" if states else "margin-top:0.4em"
    line = _DARK_DISTRICT_LINE if dark else _DISTRICT_LINE
    rows.append(f"<div style='{gap}'>{_swatch('border:1px solid ' + _rgb(line))}"
                "district outline</div>")
    return ('<div class="veil-map-legend" style="font-size:0.875rem;line-height:1.7">'
            + "".join(rows) + "</div>")


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


def release_map(frame: pd.DataFrame, *, scale: ColourScale,
                geography: TenantGeography, dark: bool = False) -> pdk.Deck:
    """The deck: values by cell (the one pickable layer), then state and district outlines and
    the place names on top, opened at the view fitted to the tenant; ``dark`` draws it for the
    dark theme (dark ground, light lines and names)."""
    colours = []
    for status, value in zip(frame["status"], frame["value"]):
        if status == "rolled up":
            colours.append([*_ROLLED, 150])
        elif status == "suppressed" or value is None or pd.isna(value):
            colours.append([*_SUPPRESSED, 90])
        else:
            colours.append([*scale.colour(value), 210])
    values = pdk.Layer("H3HexagonLayer", id=AREAS_LAYER, data=frame.assign(colour=colours),
                       get_hexagon="hex", get_fill_color="colour",
                       get_line_color=[255, 255, 255, 90], line_width_min_pixels=0.5,
                       pickable=True, auto_highlight=True, extruded=False)
    lines = _state_colours(geography)
    states = pdk.Layer("PolygonLayer", id="state-outlines",
                       data=[o | {"line": [*lines[o["code"]], 230]}
                             for o in geography.state_outlines],
                       get_polygon="polygon", filled=False, stroked=True,
                       get_line_color="line", line_width_min_pixels=4, pickable=False)
    districts = pdk.Layer("PolygonLayer", id="district-outlines",
                          data=list(geography.district_outlines), get_polygon="polygon",
                          filled=False, stroked=True,
                          get_line_color=[*(_DARK_DISTRICT_LINE if dark else _DISTRICT_LINE),
                                          230],
                          line_width_min_pixels=1, pickable=False)
    names = [pdk.Layer("TextLayer", id=layer_id, data=list(labels), get_position="position",
                       get_text="name", get_pixel_offset="offset",
                       get_size=labels[0]["size"] if labels else 12,
                       get_color=colour, font_family=_FONT, font_weight=weight,
                       background=True,
                       get_background_color=[20, 30, 37, 190] if dark else [255, 255, 255, 170],
                       background_padding=[3, 1], pickable=False)
             for layer_id, labels, colour, weight in (
                 ("state-names", geography.state_labels,
                  [190, 200, 206, 255] if dark else [85, 85, 85, 255], 400),
                 ("district-names", geography.labels,
                  [240, 244, 247, 255] if dark else [20, 20, 20, 255], 600))]
    view = pdk.ViewState(latitude=geography.view.latitude, longitude=geography.view.longitude,
                         zoom=geography.view.zoom)
    # A blank style as a data: URL: without a style Streamlit loads a third-party basemap,
    # and nothing may leave loopback (its frontend only accepts a style given as a string).
    tip = {"text": "{tooltip}",  # wraps, so a long place name stays inside the map
           "style": {"maxWidth": "280px", "whiteSpace": "normal", "fontSize": "0.85rem"}}
    return pdk.Deck(layers=[values, states, districts, *names], initial_view_state=view,
                    map_style=_DARK_STYLE if dark else _BLANK_STYLE, tooltip=tip)


def selected_district(selection) -> str | None:
    """The district of the area a click selected on the map (None when nothing is)."""
    objects = (selection or {}).get("objects", {}).get(AREAS_LAYER) or []
    district = objects[0].get("district") if objects else None
    return district or None

