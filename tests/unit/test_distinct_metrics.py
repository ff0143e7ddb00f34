"""Distinct-person metrics (issue 20): how the catalog declares them, the sensitivity derived
from the person-month unit, and the months a lookback release draws on. No store."""

from __future__ import annotations

import dataclasses
import re
import shutil
from datetime import date
from pathlib import Path

import pytest

from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.errors import ConfigError, QueryRefused
from privacy import Principal, Query
from privacy._budget import budget_terms
from privacy._sensitivity import count_sensitivity
from privacy._values import Delta, Epsilon, PrivacyLoss

SOURCE = PROJECT_ROOT / "catalog"
WEEKLY = ('measure = "distinct"\ndistinct_per = "week"\ncategory_domain = "none"\n'
          'event_type = "learning_session"')
STATUS = ('measure = "distinct"\ndistinct_per = "month"\nlookback_months = 1\n'
          'category_domain = "learner_status"\nevent_type = "learning_session"')
WHERE = r"key 'product\[education\.sessions\]\.metric\[{}\]\.{}': "


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(SOURCE, target)
    return target


def test_the_shipped_sessions_product_declares_its_distinct_metrics():
    """weekly_active_learners counts per week without categories, learner_status per month
    with a one-month lookback; the event metrics are plain."""
    product = load_catalog(SOURCE).product("education.sessions")
    shape = {m.id: (m.measure, m.distinct_per, m.lookback_months, m.category_domain,
                    m.release_measure) for m in product.metrics}
    assert shape == {
        "sessions": ("count", None, 0, "school_subject", "count"),
        "session_minutes": ("mean", None, 0, "school_subject", "mean"),
        "weekly_active_learners": ("distinct", "week", 0, "none", "count"),
        "learner_status": ("distinct", "month", 1, "learner_status", "count"),
        "new_learners": ("distinct", "month", 1, "learner_status", "count"),
        "returning_learners": ("distinct", "month", 1, "learner_status", "count"),
        "churned_learners": ("distinct", "month", 1, "learner_status", "count"),
    }
    assert [product.metric(m).category for m in ("new_learners", "returning_learners",
                                                  "churned_learners")] == [
        "new", "returning", "churned"]
    assert (product.unit_period, product.unit_bound, product.published_series) == (
        "month", 20, False)


BAD = [
    (WEEKLY, WEEKLY.replace('distinct_per = "week"\n', ""),
     WHERE.format(2, "distinct_per") + "is required but missing"),
    (WEEKLY, WEEKLY.replace('"week"', '"fortnight"'),
     WHERE.format(2, "distinct_per") + r"must be one of \['month', 'week'\], got 'fortnight'"),
    (WEEKLY, WEEKLY + "\nlookback_months = 1",
     WHERE.format(2, "lookback_months") + "a lookback needs distinct_per = \"month\""),
    (STATUS, STATUS.replace("lookback_months = 1", "lookback_months = 2"),
     WHERE.format(3, "lookback_months") + "must be 0 or 1, got 2"),
    (STATUS, STATUS.replace('"learner_status"', '"school_subject"'),
     WHERE.format(3, "category_domain") + "a metric with a lookback counts persons by status"),
    (WEEKLY, WEEKLY + "\nvalue_bounds = [0.0, 1.0]",
     WHERE.format(2, "value_bounds") + "a distinct metric counts persons; it has no value"),
    ('measure = "count"\nevent_type = "learning_session"',
     'measure = "count"\ndistinct_per = "week"\nevent_type = "learning_session"',
     WHERE.format(0, "distinct_per") + r"applies to measure = \"distinct\" only"),
    ('value_bounds = [0.0, 180.0]', 'value_bounds = [0.0, 180.0]\nlookback_months = 0',
     WHERE.format(1, "lookback_months") + r"applies to measure = \"distinct\" only"),
    ("max_events_per_subject_per_month = 20\n", "",
     WHERE.format(2, "measure") + "a distinct metric counts persons per week or month: its "
                                  "product needs a person-month unit"),
]


@pytest.mark.parametrize("old, new, message", BAD,
                         ids=[re.sub(r"\W+", "-", m.split(": ")[-1])[:40] for *_, m in BAD])
def test_a_bad_distinct_declaration_names_the_file_and_key(catalog_dir, old, new, message):
    """Each faulty declaration stops loading with products.toml, the key and the reason."""
    path = catalog_dir / "products.toml"
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=message) as caught:
        load_catalog(catalog_dir)
    assert str(path) in str(caught.value)


def test_distinct_sensitivity_follows_the_weeks_and_the_lookback(catalog):
    """One person-month: 1 in each of a month's 4 weeks; one status cell in each of months M
    and M+1, moved between two (2 + 2); neither depends on the event bound."""
    product = catalog.product("education.sessions")
    weekly, status = product.metric("weekly_active_learners"), product.metric("learner_status")
    assert count_sensitivity(product, weekly) == 4
    assert count_sensitivity(product, status) == 4
    assert count_sensitivity(product, product.metric("sessions")) == 20
    looser = dataclasses.replace(product, max_events_per_subject_per_month=60)
    assert count_sensitivity(looser, weekly) == count_sensitivity(looser, status) == 4
    monthly = dataclasses.replace(status, lookback_months=0)
    assert count_sensitivity(product, monthly) == 1


def test_a_distinct_metric_needs_a_person_month_unit(catalog):
    """Under a person-day unit a person would count again every day: refused."""
    product = dataclasses.replace(catalog.product("education.sessions"),
                                  max_events_per_subject_per_month=None)
    with pytest.raises(QueryRefused, match="needs a month-long privacy unit"):
        count_sensitivity(product, product.metric("weekly_active_learners"))


def _terms(catalog, computed, *, lookback, period="month", start=date(2026, 1, 1),
           end=date(2026, 3, 1)):
    principal = Principal(subject="maker", display_name="maker", role="policy_maker",
                          tenant="kigali-east", source="demo")
    query = Query(product="education.sessions", metric="learner_status", level="dp_medium",
                  start=start, end=end, period=period)
    loss = PrivacyLoss(Epsilon(1.0), Delta(0.0))
    return budget_terms(principal, query, loss, computed, policy=catalog.policy,
                        lookback_months=lookback)


def test_a_lookback_release_draws_on_the_month_before_each_computed_month(catalog):
    """Computing January and March with a one-month lookback draws on each and the month
    before it, each once: December, January, February (read by March) and March."""
    jan, feb, mar = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)
    assert _terms(catalog, [jan, mar], lookback=1).periods == [
        date(2025, 12, 1), jan, feb, mar]
    assert _terms(catalog, [mar], lookback=1).periods == [feb, mar]
    assert _terms(catalog, [jan, mar], lookback=0).periods == [jan, mar]
    # a window reads all its months in one measurement, and the month before the first
    assert _terms(catalog, [jan], lookback=1, period="window").periods == [
        date(2025, 12, 1), jan, feb, mar]
    nothing = _terms(catalog, [], lookback=1)
    assert (nothing.periods, nothing.epsilon.value) == ([], 0.0)
