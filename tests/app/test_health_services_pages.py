"""GovSahay's services (health.services) are shown like every product: their metrics on the
trends page, and a category breakdown only where the metric's event type has categories."""

from __future__ import annotations

import pytest

from tests.app.conftest import open_page


@pytest.fixture
def env(private_demo_env):
    return private_demo_env  # its releases are this module's own


def test_trends_lists_and_releases_a_health_services_metric(env):
    """Triages completed is offered like any metric and its trend is released."""
    at = open_page("trends", "policy_maker", {"metric": "health.services/triages"})
    assert not at.exception
    options = at.selectbox[0].options
    assert "Triages completed — Health services (triage, complaints, tele-consultations, " \
           "wellness)" in options
    assert "NeuroScreen screenings — NeuroScreen screenings" in options
    [b for b in at.button if "Show trend" in b.label][0].click().run()
    assert not at.exception
    assert at.get("plotly_chart")


@pytest.mark.parametrize("metric, by_category", [("triages", True),
                                                 ("teleconsultations", False)])
def test_exports_offer_a_category_breakdown_only_for_a_metric_with_categories(env, metric,
                                                                             by_category):
    """Triage levels can be broken down; tele-consultations have no categories to break down."""
    at = open_page("exports", "policy_maker",
                   {"product": "health.services", "metric": metric})
    assert not at.exception
    breakdown = next(s for s in at.selectbox if s.label == "Break down by")
    assert ("Category" in breakdown.options) is by_category
