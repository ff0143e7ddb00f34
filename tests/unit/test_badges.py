"""The spend button: disabled, with the shortfall, whenever a budget cannot pay."""

from __future__ import annotations

from datetime import date

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.components.badges import short_of_budget
from privacy import BudgetStatus, Epsilon


def _budget(*, cap: float, spent: float, product: str = "health.visits") -> BudgetStatus:
    return BudgetStatus(product=product, window_start=date(2026, 12, 1),
                        window_end=date(2026, 12, 31), cap=Epsilon(cap), spent=Epsilon(spent))


def _page(costs, budgets):
    import streamlit as st

    from dashboard.components.badges import spend_button

    clicked = spend_button("Show trend (costs ε 1)", costs=costs, budgets=budgets, key="spend")
    st.text(f"clicked: {clicked}")


def _run(costs, budgets) -> AppTest:
    at = AppTest.from_function(_page, kwargs={"costs": costs, "budgets": budgets},
                               default_timeout=30)
    at.run()
    assert not at.exception
    return at


def _shown_text(at: AppTest) -> str:
    return " ".join([c.value for c in at.caption] + [at.button[0].help or ""])


def test_button_is_disabled_and_says_how_short_when_the_budget_cannot_pay():
    """Remaining ε 0.5 < cost 1: disabled, "short by ε 0.5"."""
    at = _run([1.0], [_budget(cap=2.0, spent=1.5)])
    assert at.button[0].disabled is True
    assert "short by ε 0.5" in _shown_text(at)
    assert at.text[0].value == "clicked: False"


def test_button_is_enabled_when_exactly_enough_remains_and_reports_a_click():
    """Remaining ε 1 = cost 1: enabled, no shortfall, and a click returns True."""
    at = _run([1.0], [_budget(cap=2.0, spent=1.0)])
    assert at.button[0].disabled is False
    assert "short by" not in _shown_text(at)
    at.button[0].click().run()
    assert at.text[0].value == "clicked: True"


def test_per_product_costs_name_the_product_that_cannot_pay():
    """A two-product comparison: only the short product is named, with its own shortfall."""
    budgets = [_budget(cap=1.0, spent=0.0, product="education.mastery"),
               _budget(cap=1.0, spent=0.2, product="social.grants")]
    at = _run([0.5, 1.0], budgets)
    assert at.button[0].disabled is True
    text = _shown_text(at)
    assert "social.grants: short by ε 0.2" in text and "education.mastery" not in text


def test_rounding_of_spent_epsilon_does_not_block_an_affordable_spend():
    """Seven spends of 0.1 leave ε 0.3 of 1 up to rounding: a 0.3 spend still fits, as at
    the gate."""
    spent = sum([0.1] * 7)
    assert short_of_budget(costs=[0.3], budgets=[_budget(cap=1.0, spent=spent)]) == []


def test_one_cost_per_budget_is_required_when_costs_are_listed():
    """Mismatched costs and budgets are a programming error."""
    with pytest.raises(ValueError, match="one cost per budget: got 1 costs for 2 budgets"):
        short_of_budget(costs=[1.0], budgets=[_budget(cap=1, spent=0), _budget(cap=1, spent=0)])


def _meter(status, preview):
    from dashboard.components.badges import budget_meter

    budget_meter(status, preview)


def test_the_budget_meter_states_delta_where_gaussian_releases_spent_it():
    """δ left and a fresh view's δ appear beside ε; a pure-ε budget shows ε only."""
    from privacy import Delta, Preview

    gaussian = BudgetStatus(product="education.attendance", window_start=date(2026, 12, 1),
                            window_end=date(2026, 12, 31), cap=Epsilon(10.0),
                            spent=Epsilon(0.59), delta_cap=Delta(1e-6), delta_spent=Delta(1e-7))
    preview = Preview(epsilon=Epsilon(0.59), reused=False, mechanism="m", noise_scale=1.0,
                      interval_half_width=1.0, remaining=Epsilon(9.41), cap=Epsilon(10.0),
                      delta=Delta(1e-7), remaining_delta=Delta(9e-7))
    at = AppTest.from_function(_meter, kwargs={"status": gaussian, "preview": preview},
                               default_timeout=30).run()
    label = at.get("progress")[0].proto.text
    assert "δ 9.0e-07 of 1.0e-06 left" in label and "costs ε 0.59 at δ 1e-07" in label
    plain = _budget(cap=2.0, spent=1.0)
    at = AppTest.from_function(_meter, kwargs={"status": plain, "preview": None},
                               default_timeout=30).run()
    assert "δ" not in at.get("progress")[0].proto.text


def test_the_badge_states_the_cumulative_guarantee_of_the_data_in_plain_words():
    """Issue 16: the most-used month of the release's data, what everything released about it
    has spent, and its lifetime cap, in the privacy unit's words."""
    from datetime import datetime

    from dashboard.components.badges import lifetime_text
    from privacy import PeriodStatus, Query, Release

    def release(lifetime):
        return Release(
            id="r", tenant="T", product="health.vaccinations", query=Query(
                product="health.vaccinations", metric="doses", level="dp_medium",
                start=date(2026, 2, 1), end=date(2026, 3, 1)),
            cells=(), epsilon=Epsilon(1.0), charged=Epsilon(1.0), reused=False, mechanism="m",
            k=5, confidence=0.95, privacy_unit="one person's vaccinations on any one day",
            policy_version="v", data_version=1, digest="d", created_at=datetime(2026, 4, 2),
            lifetime=lifetime)

    both = (PeriodStatus(period=date(2026, 2, 1), cap=Epsilon(20.0), spent=Epsilon(1.5)),
            PeriodStatus(period=date(2026, 3, 1), cap=Epsilon(20.0), spent=Epsilon(2.4)))
    assert lifetime_text(release(both)) == (
        "Everything ever released about any of these 2 months (the most used: March 2026), "
        "by anyone, protects one person's vaccinations on any one day at ε ≤ 2.4 of that "
        "month's lifetime 20.")
    assert lifetime_text(release(both[:1])).startswith(
        "Everything ever released about February 2026, by anyone")
    assert lifetime_text(release(())) == ""
