"""The metric picker the Trends, Map and Insights pages share: the catalog's metrics, by key."""

from __future__ import annotations

from dashboard.components.metrics import metric_options


def test_every_metric_of_every_metric_set_is_offered_by_product_and_metric(catalog):
    """Keys are "product/metric" and name the catalog's own product and metric."""
    options = metric_options(catalog.products)
    assert options["health.vaccinations/doses"] == (
        catalog.product("health.vaccinations"),
        catalog.product("health.vaccinations").metric("doses"))
    assert len(options) == sum(len(p.metrics) for p in catalog.products
                               if p.kind == "metric_set")


def test_maps_and_insights_are_offered_count_metrics_only(catalog):
    """counts_only leaves out sums and means (maps and insights draw counts); distinct-person
    counts are counts."""
    options = metric_options(catalog.products, counts_only=True)
    assert options and all(metric.release_measure == "count" for _p, metric in options.values())
    assert {m.measure for _p, m in options.values()} == {"count", "distinct"}
    assert "education.sessions/weekly_active_learners" in options
    assert set(options) < set(metric_options(catalog.products))  # the catalog has sums and means
