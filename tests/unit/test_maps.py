"""The map's builders: outlines and names from the catalog's geography, a view fitted to the
tenant, a colour scale with its legend, and tooltips in place names, never H3 ids."""

from __future__ import annotations

import re
from datetime import date, datetime

import h3
import pytest

from dashboard.components.geography import (
    MAP_HEIGHT,
    MAP_WIDTH,
    Bounds,
    cell_bounds,
    fitted_view,
    project,
    tenant_geography,
)
from dashboard.components.maps import (
    colour_scale,
    legend_html,
    map_frame,
    map_table,
    release_map,
    selected_district,
    tooltip,
)
from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.geo import geography
from privacy import Cell, Epsilon, Query, Release

CATALOG = load_catalog(PROJECT_ROOT / "catalog")
GEOGRAPHY = geography(CATALOG)
TENANTS = [t.id for t in CATALOG.tenants]
NAMES = ({s.code: s.name for s in CATALOG.states} | {d.code: d.name for d in CATALOG.districts}
         | {"kigali-east": "Kigali & Eastern Programme Office"})
H3_ID = re.compile(r"\b8[0-9a-f]{14}\b")


def _release(geo: str, cells: list[Cell]) -> Release:
    query = Query(product="p", metric="m", level="dp_medium", start=date(2026, 10, 1),
                  end=date(2026, 10, 1), group_by=("month", geo))
    return Release(id="r" * 16, tenant="kigali-east", product="p", query=query,
                   cells=tuple(cells), epsilon=Epsilon(1.0), charged=Epsilon(1.0), reused=False,
                   mechanism="laplace", k=5, confidence=0.95, privacy_unit="person",
                   policy_version="a" * 40, data_version=1, digest="d",
                   created_at=datetime(2026, 11, 5))


def _cell(area: str, value: float | None, status: str = "noisy") -> Cell:
    return Cell(key=("2026-10", area), value=value,
                lower=None if value is None else value - 16,
                upper=None if value is None else value + 16, noise_scale=4.0, status=status)


def _frame(release: Release):
    return map_frame(release, month="2026-10", names=NAMES,
                     cells_of=lambda d: GEOGRAPHY.cells_by_district[d],
                     district_of=GEOGRAPHY.cells.get)


GASABO = GEOGRAPHY.cells_by_district["KGL-GAS"]


@pytest.mark.parametrize("tenant", TENANTS)
def test_the_opening_view_shows_every_cell_of_the_tenant(tenant):
    """Every vertex of every cell of the tenant projects inside the map at the opening view."""
    drawn = tenant_geography(CATALOG, GEOGRAPHY, tenant)
    cells = [c for d in CATALOG.districts_of(tenant) for c in GEOGRAPHY.cells_by_district[d.code]]
    for cell in cells:
        for lat, lng in h3.cell_to_boundary(cell):
            assert drawn.bounds.contains(lat, lng)
            x, y = project(drawn.view, lat, lng)
            assert 0 <= x <= MAP_WIDTH and 0 <= y <= MAP_HEIGHT, (cell, x, y)


def test_the_view_is_zoomed_to_the_extent_not_beyond_it():
    """The tenant fills the map along its longer side: no more than the padding to spare."""
    bounds = Bounds(south=-2.0, west=30.0, north=-1.0, east=30.2)  # tall and narrow
    view = fitted_view(bounds, width=560, height=520, padding=28)
    _, top = project(view, bounds.north, bounds.west, width=560, height=520)
    _, bottom = project(view, bounds.south, bounds.west, width=560, height=520)
    assert top == pytest.approx(28, abs=1) and bottom == pytest.approx(520 - 28, abs=1)


def test_bounds_refuse_to_be_inside_out():
    """A box whose south lies north of its north is a bug, said with the values."""
    with pytest.raises(ValueError, match="south <= north"):
        Bounds(south=-1.0, west=30.0, north=-2.0, east=30.2)


def test_outlines_are_drawn_for_every_district_and_state_of_the_tenant_only():
    """Kigali & Eastern: outlines of its 10 districts and of Kigali City and Eastern Province."""
    drawn = tenant_geography(CATALOG, GEOGRAPHY, "kigali-east")
    districts = {d.code for d in CATALOG.districts_of("kigali-east")}
    assert {o["code"] for o in drawn.district_outlines} == districts
    assert {o["code"] for o in drawn.state_outlines} == {"KGL", "EAS"}
    assert {o["name"] for o in drawn.state_outlines} == {"Kigali City", "Eastern Province"}


def test_a_district_outline_encloses_its_cells():
    """Gasabo's outline is one ring of [lng, lat] points around every one of its cells."""
    [outline] = [o for o in tenant_geography(CATALOG, GEOGRAPHY, "kigali-east").district_outlines
                 if o["code"] == "KGL-GAS"]
    ring = outline["polygon"][0]
    lngs, lats = [p[0] for p in ring], [p[1] for p in ring]
    assert outline["name"] == "Gasabo"
    for cell in GASABO:
        lat, lng = h3.cell_to_latlng(cell)
        assert min(lats) < lat < max(lats) and min(lngs) < lng < max(lngs)
    assert cell_bounds(GASABO) == Bounds(south=min(lats), west=min(lngs), north=max(lats),
                                         east=max(lngs))


@pytest.mark.parametrize("tenant", TENANTS)
def test_labels_name_each_district_at_its_centroid_without_covering_each_other(tenant):
    """One label per district, by name, at the catalog's centroid, and one per state; no two
    labels overlap at the opening view."""
    drawn = tenant_geography(CATALOG, GEOGRAPHY, tenant)
    districts = CATALOG.districts_of(tenant)
    assert [label["name"] for label in drawn.labels] == [d.name for d in districts]
    assert [label["position"] for label in drawn.labels] == [[d.lng, d.lat] for d in districts]
    boxes = []
    for label in drawn.labels + drawn.state_labels:
        x, y = project(drawn.view, label["position"][1], label["position"][0])
        x, y = x + label["offset"][0], y + label["offset"][1]
        half_w, half_h = len(label["name"]) * label["size"] * 0.29 + 4, label["size"] / 2 + 3
        boxes.append((x - half_w, y - half_h, x + half_w, y + half_h))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_a_cell_tooltip_names_its_district_and_gives_the_interval():
    """An H3 cell says which district it lies in, never its id, with value and interval."""
    frame = _frame(_release("h3_cell", [_cell(GASABO[0], 28)]))
    assert frame["tooltip"].tolist() == ["H3 cell in Gasabo: 28 (95% interval 12–44)"]
    assert not H3_ID.search(frame["tooltip"][0]) and frame["district"][0] == "KGL-GAS"


def test_a_rolled_up_cell_says_where_it_is_counted():
    """A small cell takes its district's value and says so, in names."""
    cells = [_cell(GASABO[1], None, status="rolled_up:KGL-GAS"),
             Cell(key=("2026-10", "KGL-GAS"), value=120, lower=90, upper=150, noise_scale=4.0,
                  status="rollup")]
    [text] = _frame(_release("h3_cell", cells))["tooltip"]
    assert text == "H3 cell in Gasabo (rolled up into Gasabo): 120 (95% interval 90–150)"


def test_a_district_is_drawn_by_all_its_cells_under_its_name():
    """In a district map every cell of Gasabo carries Gasabo's value and name."""
    frame = _frame(_release("district", [_cell("KGL-GAS", 300)]))
    assert sorted(frame["hex"]) == sorted(GASABO)
    assert set(frame["tooltip"]) == {"Gasabo: 300 (95% interval 284–316)"}
    assert map_table(frame, geo="district").to_dict("records") == [
        {"Area": "Gasabo", "Value": 300, "95% interval from": 284, "to": 316,
         "Shown as": "noisy"}]


def test_a_suppressed_area_says_so_without_a_number():
    """Suppressed: no value in the tooltip, and the reason."""
    text = tooltip(place="Gasabo", value=None, lower=None, upper=None, status="suppressed",
                   level="95")
    assert text == "Gasabo: suppressed (fewer than k people, even in the whole tenant)"


@pytest.mark.parametrize("top, step", [(0, 1), (4, 1), (28, 10), (96, 20), (101, 25),
                                       (1234, 250), (4800, 1000)])
def test_the_colour_scale_has_five_round_steps_reaching_the_top(top, step):
    """Steps of 1, 2, 2.5 or 5 × 10ⁿ (never under 1 for counts); the last step reaches the top."""
    scale = colour_scale(top)
    assert scale.step == step
    assert [b[1] for b in scale.bins()] == [i * step for i in range(5)]
    assert scale.bins()[-1][2] >= top


def test_the_colour_scale_refuses_a_step_of_zero():
    """A zero step would divide by zero when colouring: refused with the value."""
    from dashboard.components.maps import ColourScale

    with pytest.raises(ValueError, match="step must be > 0, got 0"):
        ColourScale(step=0)


def test_the_legend_shows_the_value_scale_and_the_keys():
    """The legend gives each colour's range, highest first, then amber, grey and outlines."""
    text = re.sub(r"<[^>]+>", "|", legend_html(colour_scale(96), title="Doses, October 2026"))
    parts = [p for p in text.split("|") if p]
    assert parts[:6] == ["Doses, October 2026", "80 – 100", "60 – 80", "40 – 60", "20 – 40",
                         "0 – 20"]
    assert parts[6:] == ["counted in a larger area (its value)", "suppressed: too few",
                         "district outline"]


def test_the_legend_keys_each_states_outline_by_name():
    """With the tenant's geography the legend names each state beside its outline colour."""
    drawn = tenant_geography(CATALOG, GEOGRAPHY, "kigali-east")
    text = re.sub(r"<[^>]+>", "|", legend_html(colour_scale(96), title="t", geography=drawn))
    assert [p for p in text.split("|") if p][-3:] == ["Kigali City", "Eastern Province",
                                                      "district outline"]


def test_the_deck_draws_values_outlines_and_names_at_the_fitted_view():
    """Layers: values (pickable, first), state and district outlines, state and district names."""
    drawn = tenant_geography(CATALOG, GEOGRAPHY, "kigali-east")
    frame = _frame(_release("district", [_cell("KGL-GAS", 300), _cell("EAS-NYA", 40)]))
    deck = release_map(frame, scale=colour_scale(300), geography=drawn)
    assert [layer.id for layer in deck.layers] == [
        "areas", "state-outlines", "district-outlines", "state-names", "district-names"]
    assert [layer.pickable for layer in deck.layers] == [True, False, False, False, False]
    assert deck.initial_view_state.zoom == drawn.view.zoom
    assert deck.map_style.startswith("data:application/json")  # no basemap fetched
    assert "Nyagatare" in {label["name"] for label in deck.layers[4].data}
    assert {label["name"] for label in deck.layers[3].data} == {"KIGALI CITY",
                                                                "EASTERN PROVINCE"}
    assert deck._tooltip["text"] == "{tooltip}"


def test_a_click_selects_the_district_of_the_area():
    """The selection's object carries its district's code; nothing selected gives None."""
    selection = {"indices": {"areas": [3]},
                 "objects": {"areas": [{"hex": GASABO[0], "district": "KGL-GAS"}]}}
    assert selected_district(selection) == "KGL-GAS"
    assert selected_district({"indices": {}, "objects": {}}) is None
    assert selected_district(None) is None
