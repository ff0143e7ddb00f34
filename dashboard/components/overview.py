"""The home page's overview: the few numbers each role looks at first.

Owns turning stored or published releases into KPI tiles — the latest complete month, its
interval, the change against the month before and whether that change is larger than the noise,
a sparkline — and the short lists of what needs attention: case work by status and agent,
compliance alerts, approvals waiting for an administrator (``worklists``).

It must never spend. A metric tile is drawn only from a published snapshot or from a release the
gate says is stored (``gate.preview(...).reused``, so ``gate.release`` returns it at no cost);
anything else is offered as a link to the Trends page with what releasing it would cost. Nothing
here reads a store or recomputes a private value: tiles post-process released numbers only.

The plain functions (``tenant_series``, ``change_between``, ``format_*``, ``sparkline``) hold the
logic and need no Streamlit; the ``show_*`` functions render.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from dashboard.components.badges import interval_percent
from dashboard.components.charts import for_theme
from dashboard.navigation import PAGES
from privacy import DataClock, Epsilon, Gate, Principal, Release

__all__ = ["Change", "Point", "Tile", "Unreleased", "change_between", "format_change",
           "format_value", "headline_tiles", "interval_text", "page_link", "published_tiles",
           "show_data_as_of", "show_tiles", "sparkline", "tenant_series"]

#: the normal quantile of a two-sided 95% test: a change is "larger than the noise" when it is
#: more than this many standard deviations of the difference's noise
Z95 = 1.959964
#: months a tile's sparkline shows (and the Trends page's default window)
MONTHS = 12

_PAGES_DIR = Path(__file__).resolve().parents[2] / "pages"
_LINE, _BAND = "#2E6F95", "rgba(46, 111, 149, 0.18)"


# --- the logic of a tile ----------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """The tenant's value of one month: a released total with its interval and noise sd.

    ``value`` is None when the month was not released (too few events to show)."""

    month: date
    value: float | None
    lower: float | None = None
    upper: float | None = None
    sd: float | None = None


@dataclass(frozen=True)
class Change:
    """The latest month against the month before."""

    delta: float
    #: the standard deviation of the difference's noise, sqrt(sd1² + sd2²); None when a month
    #: carries no sd (releases stored before it was recorded: then the intervals decide)
    noise_sd: float | None
    #: True when the change is larger than the noise: |Δ| > 1.96 · noise_sd, or, without an
    #: sd, the two months' intervals do not overlap
    beyond_noise: bool


def change_between(current: Point, previous: Point, *, z: float = Z95) -> Change | None:
    """The change from ``previous`` to ``current`` and whether it is larger than the noise;
    None when either month has no released value."""
    if current.value is None or previous.value is None:
        return None
    delta = current.value - previous.value
    if current.sd is not None and previous.sd is not None:
        noise = math.hypot(current.sd, previous.sd)
        return Change(delta=delta, noise_sd=noise, beyond_noise=abs(delta) > z * noise)
    bounds = (current.lower, current.upper, previous.lower, previous.upper)
    apart = None not in bounds and (current.lower > previous.upper
                                    or previous.lower > current.upper)
    return Change(delta=delta, noise_sd=None, beyond_noise=apart)


def tenant_series(release: Release) -> tuple[Point, ...]:
    """The tenant-wide value of each month of ``release``'s window, oldest first.

    The tenant's own cell: the "total" cell of a release grouped by area, or the one cell of a
    release by month only. A month without one is a Point without a value, never a zero.
    """
    cells = {cell.key[0]: cell for cell in release.cells
             if len(cell.key) >= 2 and cell.key[1] == release.tenant}
    out = []
    for month, label in release.query.periods.items():
        cell = cells.get(label)
        if cell is None or cell.value is None:
            out.append(Point(month=month, value=None))
        else:
            out.append(Point(month=month, value=cell.value, lower=cell.lower, upper=cell.upper,
                             sd=cell.sd))
    return tuple(out)


def _places(measure: str) -> int:
    return 1 if measure == "mean" else 0


def format_value(value: float | None, *, measure: str) -> str:
    """A released value as shown: counts and sums whole (never below 0 for a count), means to
    one decimal; "—" for a month that was not released."""
    if value is None:
        return "—"
    if measure == "count":
        value = max(value, 0.0)
    return f"{value:,.{_places(measure)}f}"


def format_change(change: Change, *, measure: str) -> str:
    """The change with its sign: "+45", "−12" (a minus sign Streamlit reads as a fall)."""
    text = f"{abs(change.delta):,.{_places(measure)}f}"
    if text.strip("0.,") == "":
        return text
    return f"+{text}" if change.delta > 0 else f"-{text}"


def interval_text(point: Point, *, measure: str, level: str = "95") -> str:
    """"95% interval 494 – 553 (± 30)": the released interval and its half-width."""
    if point.value is None or point.lower is None or point.upper is None:
        return ""
    lower = max(point.lower, 0.0) if measure == "count" else point.lower
    half = (point.upper - lower) / 2
    places = _places(measure)
    return (f"{level}% interval {lower:,.{places}f} – {point.upper:,.{places}f} "
            f"(± {half:,.{places}f})")


def sparkline(points: tuple[Point, ...], *, measure: str) -> go.Figure:
    """A small line of the months with their interval band; a month not released is a gap."""
    x = [p.month for p in points]
    places = _places(measure)
    clamp = (lambda v: None if v is None else max(v, 0.0)) if measure == "count" else (
        lambda v: v)
    upper = [clamp(p.upper) if p.value is not None else None for p in points]
    lower = [clamp(p.lower) if p.value is not None else None for p in points]
    values = [clamp(p.value) for p in points]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=x, y=upper, mode="lines", line={"width": 0},
                                hoverinfo="skip", showlegend=False, connectgaps=False))
    figure.add_trace(go.Scatter(x=x, y=lower, mode="lines", line={"width": 0},
                                fill="tonexty", fillcolor=_BAND, hoverinfo="skip",
                                showlegend=False, connectgaps=False))
    figure.add_trace(go.Scatter(
        x=x, y=values, mode="lines+markers", line={"color": _LINE, "width": 2},
        marker={"size": [0] * (len(x) - 1) + [7], "color": _LINE}, showlegend=False,
        connectgaps=False, name="",
        hovertemplate=f"%{{x|%b %Y}}: %{{y:,.{places}f}}<extra></extra>"))
    figure.update_layout(height=72, margin={"t": 4, "b": 4, "l": 0, "r": 0},
                         xaxis={"visible": False}, yaxis={"visible": False},
                         hovermode="x", plot_bgcolor="rgba(0,0,0,0)",
                         paper_bgcolor="rgba(0,0,0,0)")
    return figure


@dataclass(frozen=True)
class Tile:
    """A headline metric of the tenant, from a stored or published release."""

    title: str                 # the metric's title
    product: str               # the product's title
    measure: str               # count | sum | mean
    points: tuple[Point, ...]  # oldest first; the last is the latest complete month released
    source: str                # where it comes from, in plain words
    level: str                 # the interval's level, e.g. "95" or "95.8"

    @property
    def latest(self) -> Point:
        return self.points[-1]

    @property
    def previous(self) -> Point | None:
        return self.points[-2] if len(self.points) > 1 else None

    @property
    def change(self) -> Change | None:
        return None if self.previous is None else change_between(self.latest, self.previous)


@dataclass(frozen=True)
class Unreleased:
    """A headline metric with nothing stored or published yet: what releasing it would cost."""

    title: str
    product: str
    cost: Epsilon
    remaining: Epsilon


def _tile(release: Release, *, title: str, product: str, source: str) -> Tile:
    return Tile(title=title, product=product, measure=release.measure,
                points=tenant_series(release), source=source,
                level=interval_percent(release))


# --- gathering tiles: stored or published releases only -------------------------------------


def _tenant_wide(releases: list[Release]) -> dict[tuple[str, str], Release]:
    """Published monthly series without filters (so their tenant cell is the tenant's total),
    by (product, metric); the first of several groupings wins."""
    out: dict[tuple[str, str], Release] = {}
    for release in releases:
        query = release.query
        if not query.filters and query.period == "month":
            out.setdefault((release.product, query.metric), release)
    return out


def published_tiles(gate: Gate, principal: Principal) -> list[Tile]:
    """One tile per published tenant-wide series, in catalog order. Spends nothing."""
    published = _tenant_wide(gate.published(principal))
    tiles = []
    for product in gate.products(principal):
        for metric in product.metrics:
            release = published.get((product.id, metric.id))
            if release is not None:
                tiles.append(_tile(release, title=metric.title, product=product.title,
                                   source="Published snapshot"))
    return tiles


def headline_tiles(gate: Gate, principal: Principal,
                   clocks: dict[str, DataClock]) -> list[Tile | Unreleased]:
    """The first metric of every metric set, as the Trends page shows it by default.

    From the principal's default view when it is stored (previewed first: released only when
    the preview says it is free), else from the published snapshot; otherwise an Unreleased
    tile with the cost of releasing it. ``clocks`` are the products' data clocks. Spends
    nothing.
    """
    catalog = gate.catalog
    role = catalog.roles[principal.role]
    levels = gate.aggregate_levels(principal)
    level = role.default_level if role.default_level in levels else next(iter(levels), None)
    published = _tenant_wide(gate.published(principal))
    tiles: list[Tile | Unreleased] = []
    for product in gate.products(principal):
        if product.kind != "metric_set" or not product.metrics:
            continue
        metric = product.metrics[0]
        clock = clocks[product.id]
        preview = None
        if level is not None and clock.months():
            query = clock.query(metric=metric.id, level=level, months=MONTHS)
            preview = gate.preview(principal, query)
            if preview.reused:
                release = gate.release(principal, query)  # stored: spends nothing
                tiles.append(_tile(release, title=metric.title, product=product.title,
                                   source=f"Your view on Trends · "
                                          f"{catalog.policy.levels[level].title}"))
                continue
        release = published.get((product.id, metric.id))
        if release is not None:
            tiles.append(_tile(release, title=metric.title, product=product.title,
                               source="Published snapshot"))
        elif preview is not None:
            tiles.append(Unreleased(title=metric.title, product=product.title,
                                    cost=preview.epsilon, remaining=preview.remaining))
    return tiles


# --- rendering tiles ---------------------------------------------------------------------------


def _page(page_id: str) -> st.Page:
    """The navigation's page ``page_id``: a link to it works inside the app's navigation and
    when the page runs on its own (tests, benchmarks), where nothing is registered."""
    file, title, icon = PAGES[page_id]
    return st.Page(str(_PAGES_DIR / file), title=title, icon=icon, url_path=page_id)


def page_link(page_id: str, *, label: str, icon: str | None = None) -> None:
    st.page_link(_page(page_id), label=label, icon=icon)


def _show_tile(tile: Tile) -> None:
    latest, change = tile.latest, tile.change
    month = f"{latest.month:%B %Y}"
    if latest.value is None:
        st.metric(tile.title, "—", help=f"{tile.product}. Too few events in {month} to show.")
        st.caption(f"{month}: too few to show · {tile.product}")
    else:
        description = None
        if change is not None and tile.previous is not None:
            description = (f"vs {tile.previous.month:%b} · "
                           + ("beyond noise" if change.beyond_noise else "within noise"))
        st.metric(
            tile.title, format_value(latest.value, measure=tile.measure),
            delta=None if change is None else format_change(change, measure=tile.measure),
            delta_color="blue" if change is not None and change.beyond_noise else "gray",
            delta_description=description,
            help=(f"{tile.product}, {month}, against {tile.previous.month:%B %Y}. A change "
                  f"is beyond the noise when it is more than 1.96 times the standard deviation "
                  f"of the two months' privacy noise together; a change within the noise may "
                  f"be chance." if tile.previous is not None else f"{tile.product}, {month}."))
        st.caption(f"{month} · {interval_text(latest, measure=tile.measure, level=tile.level)}"
                   f"  \n{tile.product} · {tile.source}")
    if sum(p.value is not None for p in tile.points) > 1:
        st.plotly_chart(for_theme(sparkline(tile.points, measure=tile.measure),
                                  dark=st.context.theme.type == "dark"), width="stretch",
                        config={"displayModeBar": False, "staticPlot": True},
                        key=f"spark-{tile.product}-{tile.title}")


def _show_unreleased(tile: Unreleased) -> None:
    st.metric(tile.title, "—", help=f"{tile.product}: nothing released for your role yet.")
    st.caption(f"{tile.product} · not released yet. Releasing it spends ε {tile.cost.value:g} "
               f"of the {tile.remaining.value:g} you have left this month; after that it is "
               f"free here and for your colleagues.")
    page_link("trends", label=f"Release it on Trends (ε {tile.cost.value:g})",
              icon=":material/trending_up:")


def show_tiles(tiles: list[Tile | Unreleased], *, per_row: int = 3) -> None:
    """Tiles in rows of ``per_row`` bordered cards."""
    for start in range(0, len(tiles), per_row):
        columns = st.columns(per_row)
        for column, tile in zip(columns, tiles[start:start + per_row]):
            with column, st.container(border=True):
                if isinstance(tile, Tile):
                    _show_tile(tile)
                else:
                    _show_unreleased(tile)


def show_data_as_of(clocks: dict[str, DataClock], *, titles: dict[str, str]) -> None:
    """One "Data as of …" line for the tenant, and one note naming the products whose data
    is late against its freshness SLO."""
    known = [c for c in clocks.values() if c.as_of is not None]
    if not known:
        st.caption(":material/event: No data yet.")
        return
    st.caption(f":material/event: {max(known, key=lambda c: c.as_of).describe()}")
    late = [titles[product] for product, clock in clocks.items() if clock.stale]
    if late:
        st.warning(f"Some data may be out of date: {len(late)} of {len(clocks)} data products "
                   f"are behind their freshness target ({', '.join(late)}).",
                   icon=":material/schedule:")
