"""Release and period keys (``privacy._releases``): a stored period is found again only if
its key is made from the same bytes, however the keys are computed."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest

from data.errors import InvalidInput, VeilBug
from privacy._releases import _MARKER, ReleaseLog
from privacy._values import Query


def _log() -> ReleaseLog:
    return ReleaseLog(SimpleNamespace(version="catalog-v1"), None, lifetime=None,
                      settings_at=None)


def _query(*filters: tuple[str, str], months: int = 12) -> Query:
    return Query.trailing(product="health.vaccinations", metric="doses", level="dp_medium",
                          months=months, today=date(2026, 11, 1), filters=filters)


def test_period_keys_are_the_keys_stored_periods_were_given():
    """Pinned: the keys this release path gave two periods (computed one by one) stay theirs."""
    keys = _log().period_keys("kigali-east", _query(("district", "KGL-GAS"), ("category", "bcg"),
                                                    months=2),
                              7, SimpleNamespace(key_settings={"k": 12, "epsilon": 0.5}))
    assert keys == {
        date(2026, 9, 1): "89686d28ebd87bfaf502ea176efaeacef87b2e7ff1c65229e5335a990e5f44ca",
        date(2026, 10, 1): "78999bcba0157e67277f5d669e5a7fd41be191d594cfc30ef2af6849a33b0bb0"}


@pytest.mark.parametrize("settings", [{}, {"k": 12, "epsilon": 0.5}])
@pytest.mark.parametrize("filters", [(), (("district", "KGL-GAS"), ("gender", "female"))])
def test_each_period_key_is_its_month_keyed_alone(settings, filters):
    """Every month's key is the key of the query without its window, for that month."""
    log, query = _log(), _query(*filters)
    plan = SimpleNamespace(key_settings=settings)
    atomic = query.canonical()
    del atomic["start"], atomic["end"]
    keys = log.period_keys("kigali-east", query, 3, plan)
    assert list(keys) == list(query.months)
    assert keys == {month: log.key("kigali-east", 3, plan, atomic=atomic,
                                   month=month.isoformat()) for month in query.months}
    assert len(set(keys.values())) == 12


def test_no_query_holds_the_marker_keys_are_built_with():
    """Many keys are made by putting each value where a marker stands in one text; a query
    holding that marker (a control character) is refused before it is keyed."""
    with pytest.raises(InvalidInput, match="control character"):
        _query(("district", _MARKER))


def test_a_marker_found_elsewhere_in_the_text_is_a_bug_not_a_wrong_key():
    with pytest.raises(VeilBug, match="marker"):
        _log().period_keys(_MARKER, _query(), 3, SimpleNamespace(key_settings={}))


def test_source_keys_are_each_filter_subsets_key():
    """The keys derivation reads candidates by: one per subset of the view's filters, each
    the key ``source_key`` gives that subset."""
    log, plan = _log(), SimpleNamespace(key_settings={"k": 12, "epsilon": 0.5})
    subsets = [[], [["district", "KGL-GAS"]], [["district", "KGL-GAS"], ["gender", "male"]]]
    assert log.keys("kigali-east", 5, plan, vary="filters", values=subsets,
                    source="doses") == [
        log.key("kigali-east", 5, plan, source="doses", filters=subset) for subset in subsets]
