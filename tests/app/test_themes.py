"""Light and dark themes (issue 17): both are configured so readers can choose, and the colours
Veil sets itself (chart series, the map) have dark-theme counterparts."""

from __future__ import annotations

import tomllib

import plotly.graph_objects as go

from dashboard.components.charts import for_theme
from data.config import PROJECT_ROOT


def test_both_themes_are_configured_and_the_menu_offers_the_choice():
    """[theme.light] and [theme.dark] each set the four colours; a menu item of our own makes
    Streamlit show the menu (with its theme choice) in the minimal toolbar."""
    config = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    for name in ("light", "dark"):
        assert {"primaryColor", "backgroundColor", "secondaryBackgroundColor",
                "textColor"} <= set(config["theme"][name])
    assert "base" not in config["theme"]  # a fixed base would lock the theme
    assert config["client"]["toolbarMode"] == "minimal"
    assert 'menu_items={\n    "About"' in (PROJECT_ROOT / "dashboard" / "app.py").read_text()


def test_a_chart_is_recoloured_for_the_dark_theme_only():
    """Series, bands and markers get their lighter counterparts; the light theme is unchanged."""
    def figure() -> go.Figure:
        return go.Figure([go.Scatter(x=[1, 2], y=[1, 2], line={"color": "#2E6F95"},
                                     marker={"color": "#B23A48"}, fill="toself",
                                     fillcolor="rgba(46, 111, 149, 0.18)")])

    light = for_theme(figure(), dark=False).data[0]
    assert (light.line.color, light.marker.color) == ("#2E6F95", "#B23A48")
    dark = for_theme(figure(), dark=True).data[0]
    assert (dark.line.color, dark.marker.color, dark.fillcolor) == (
        "#7AB8DE", "#E8808C", "rgba(122, 184, 222, 0.25)")
