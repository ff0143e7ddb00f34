"""A product only some roles may use (education.iep) is in no picker or list of the others,
and is offered to the roles it allows; the pages open without error for both."""

from __future__ import annotations

import pytest

from tests.app.conftest import open_page, widget

IEP = "IEP goal progress"


def _labels(at, label: str) -> list[str]:
    return list(widget(at, "selectbox", label).options)


@pytest.mark.parametrize("page, label", [("trends", "Metric"), ("map", "Metric"),
                                         ("insights", "First metric"),
                                         ("insights", "Compared with"),
                                         ("exports", "Data product")])
def test_a_researchers_pickers_do_not_list_the_iep(demo_env, page, label):
    """Trends, map, insights and exports offer a researcher everything but the IEP."""
    at = open_page(page, "researcher")
    assert not at.exception
    options = _labels(at, label)
    assert options and not [o for o in options if IEP in o]


@pytest.mark.parametrize("page, label, metric", [("trends", "Metric", "IEP goal reviews"),
                                                 ("map", "Metric", "IEP goals on track"),
                                                 ("exports", "Data product", IEP)])
def test_a_policy_makers_pickers_list_the_iep(demo_env, page, label, metric):
    """The role the IEP allows finds it in its pickers."""
    at = open_page(page, "policy_maker")
    assert not at.exception
    assert [o for o in _labels(at, label) if o.startswith(metric)]


def test_an_iep_address_opens_a_researchers_trends_on_another_metric(demo_env):
    """A shared link naming the IEP falls back to the default metric, not to an IEP query."""
    at = open_page("trends", "researcher", {"metric": "education.iep/reviews"})
    assert not at.exception and not at.error
    chosen = widget(at, "selectbox", "Metric").value
    assert chosen and not chosen.startswith("education.iep/")


def test_the_bias_check_does_not_offer_the_iep_to_a_compliance_officer(demo_env):
    """Compliance officers audit IEP releases in the logs, not its data."""
    at = open_page("compliance", "compliance_officer", {"section": "Bias check"})
    assert not at.exception
    options = _labels(at, "Outcome")
    assert options and not [o for o in options if IEP in o]


@pytest.mark.parametrize("role", ["researcher", "donor", "compliance_officer"])
def test_home_opens_without_the_iep_for_other_roles(demo_env, role):
    """The overview and budget list of other roles name no IEP product."""
    at = open_page("home", role)
    assert not at.exception and not at.error
    shown = " ".join(str(m.label) for m in at.metric) + " ".join(c.value for c in at.caption)
    assert IEP not in shown


def test_a_policy_maker_releases_the_iep_on_trends_with_its_k(private_demo_env):
    """The IEP's reviews on Trends: released through the gate, no value under its k of 11."""
    at = open_page("trends", "policy_maker", {"metric": "education.iep/reviews"})
    assert widget(at, "selectbox", "Metric").value == "education.iep/reviews"
    [b for b in at.button if "Show trend" in b.label][0].click().run()
    assert not at.exception and not at.error
    values = at.dataframe[0].value["value"].dropna()
    assert len(values) and (values >= 11).all()
