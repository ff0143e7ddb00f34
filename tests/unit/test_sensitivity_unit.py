"""Sensitivity follows the declared privacy unit: a person's month when the product declares a
monthly bound, else a person's day (privacy/_sensitivity.py is the one place that says so)."""

from __future__ import annotations

import dataclasses

import pytest

from data.errors import ConfigError
from privacy._sensitivity import count_sensitivity, sum_sensitivity


def test_a_declared_monthly_bound_is_the_sensitivity(catalog):
    product = catalog.product("education.mastery")
    metric = product.metric("mastery_score")
    daily = dataclasses.replace(product, max_events_per_subject_per_day=3,
                                max_events_per_subject_per_month=None)
    monthly = dataclasses.replace(daily, max_events_per_subject_per_month=8)
    assert (daily.unit_period, daily.unit_bound) == ("day", 3)
    assert (monthly.unit_period, monthly.unit_bound) == ("month", 8)
    assert count_sensitivity(daily, metric) == 3
    assert count_sensitivity(monthly, metric) == 8
    lo, hi = metric.value_bounds
    assert sum_sensitivity(monthly, metric) == 8 * max(abs(lo), abs(hi))


def test_every_demo_metric_set_declares_a_person_month(catalog):
    """The demo products protect a person's month, with a bound at least the daily one."""
    for product in catalog.products:
        if product.kind != "metric_set":
            continue
        assert product.unit_period == "month", product.id
        assert product.unit_bound >= product.max_events_per_subject_per_day
        assert "month" in product.privacy_unit, product.id


def test_a_monthly_bound_under_the_daily_one_is_refused(tmp_path, catalog):
    import shutil
    from data.catalog import load_catalog
    target = tmp_path / "catalog"
    shutil.copytree(catalog.directory, target)
    path = target / "products.toml"
    text = path.read_text()
    text = text.replace("max_events_per_subject_per_day = 3\n",
                        "max_events_per_subject_per_day = 3\nmax_events_per_subject_per_month = 2\n",
                        1)
    text = text.replace("max_events_per_subject_per_month = 3\n", "", 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match="max_events_per_subject_per_month"):
        load_catalog(target)
