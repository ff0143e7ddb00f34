"""The map page for a policy maker: values over district and state outlines, district names, a
legend with the value scale, tooltips in place names and a prompt to click for the trend."""

from __future__ import annotations

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import copy_demo

from dashboard.context import PRINCIPAL_KEY, SIGNED_IN_AT_KEY, now
from data.config import PROJECT_ROOT
from privacy import Principal

H3_ID = re.compile(r"\b8[0-9a-f]{14}\b")


@pytest.fixture
def own_store(demo_var, tmp_path, monkeypatch):
    """A private copy of the demo store: the releases made here would otherwise be reused by
    (and so change) the other page tests, which expect to release the map themselves."""
    monkeypatch.setenv("VEIL_VAR_DIR", str(copy_demo(demo_var, tmp_path)))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)


def _open(role: str) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "map.py"), default_timeout=60)
    at.session_state[PRINCIPAL_KEY] = Principal(
        subject=f"{role.replace('_', '.')}@kigali-east.demo", display_name=role, role=role,
        tenant="kigali-east", source="demo")
    at.session_state[SIGNED_IN_AT_KEY] = now()
    return at.run()


def _map(*, areas: str | None = None) -> AppTest:
    """The policy maker's map, released (once per store) and drawn."""
    at = _open("policy_maker")
    if areas:
        [box] = [b for b in at.selectbox if b.label == "Areas"]
        box.select(areas).run()
    for button in [b for b in at.button if "Show map" in b.label]:
        button.click().run()
    assert not at.exception
    return at


def _deck(at: AppTest) -> dict:
    return json.loads(at.get("deck_gl_json_chart")[0].proto.json)


def test_the_policy_makers_map_has_outlines_names_and_a_fitted_view(own_store):
    """Values first, then state and district outlines and the states' and districts' names;
    the view opens on the tenant, not on a fixed zoom."""
    deck = _deck(_map())
    layers = {layer["id"]: layer for layer in deck["layers"]}
    assert list(layers) == ["areas", "state-outlines", "district-outlines", "state-names",
                            "district-names"]
    assert layers["district-outlines"]["@@type"] == "PolygonLayer"
    assert len(layers["district-outlines"]["data"]) >= 10  # Kigali & Eastern's districts
    assert {o["name"] for o in layers["state-outlines"]["data"]} == {"Kigali City",
                                                                      "Eastern Province"}
    assert layers["district-names"]["@@type"] == "TextLayer"
    names = {label["name"] for label in layers["district-names"]["data"]}
    assert {"Gasabo", "Nyagatare", "Kirehe"} <= names
    assert deck["initialViewState"]["zoom"] != 8.2


def test_the_map_has_a_legend_with_the_scale_and_tooltips_in_place_names(own_store):
    """A legend beside the map gives the colour ranges; no tooltip shows an H3 id."""
    at = _map()
    legend = [m.value for m in at.markdown if "veil-map-legend" in m.value]
    assert legend and "district outline" in legend[0] and " – " in legend[0]
    tips = {row["tooltip"] for row in _deck(at)["layers"][0]["data"]}
    assert tips and not any(H3_ID.search(t) for t in tips)
    assert any(re.search(r": [\d,]+ \([\d.]+% interval [\d,]+–[\d,]+\)", t) for t in tips)
    assert any("Click an area to open its trend" in c.value for c in at.caption)
    assert any("An area with no activity" in c.value or "Exact counts" in c.value
               for c in at.caption)  # map_legend, kept


def test_h3_cells_are_offered_to_the_policy_maker_and_named_by_their_district(own_store):
    """The policy maker may choose H3 cells (a researcher may not); each cell's tooltip says
    which district it lies in, never its id."""
    [box] = [b for b in _map().selectbox if b.label == "Areas"]
    assert box.options == ["Districts", "H3 cells (~5 km²)"]
    at = _map(areas="h3_cell")
    tips = {row["tooltip"] for row in _deck(at)["layers"][0]["data"]}
    assert tips and all(t.startswith("H3 cell in ") for t in tips)
    assert not any(H3_ID.search(t) for t in tips)


def test_a_researcher_is_offered_districts_only(own_store):
    """Researchers see cells only as districts: the Areas select offers nothing finer."""
    [box] = [b for b in _open("researcher").selectbox if b.label == "Areas"]
    assert box.options == ["Districts"]
