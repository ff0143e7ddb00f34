"""Hypothesis strategies for the ingestion property tests: arbitrary JSON and rows with PII
needles planted in random places. Shared by the rule-level and the store-level tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from data.ingest import FIELDS

__all__ = ["BASE", "json_values", "needles", "rows"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
needles = st.one_of(
    st.from_regex(r"[a-z]{2,8}\.[a-z]{2,8}@[a-z]{3,8}\.(org|com|rw)", fullmatch=True),
    st.from_regex(r"\+2507[2389][0-9]{7}", fullmatch=True),
    st.from_regex(r"07[2389][0-9] [0-9]{3} [0-9]{3}", fullmatch=True),
    st.from_regex(r"1 (19|20)[0-9]{2} [78] [0-9]{7} [0-9] [0-9]{2}", fullmatch=True),
)
BASE: dict[str, Any] = {
    "event_id": "ev-1", "subject_id": "person-1", "event_type": "vaccination",
    "timestamp": "2025-03-04T10:07:30Z", "age": 4, "gender": "female", "category": "polio",
    "lat": -1.9536, "lng": 30.0606,
}


@st.composite
def rows(draw) -> tuple[Any, list[str]]:
    """A row and the needles planted in it."""
    if draw(st.integers(0, 3)) == 0:
        return draw(json_values), []
    row: dict[str, Any] = dict(BASE)
    for key in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=2)):
        row[key] = draw(json_values | st.sampled_from(["dtp", "male", "", "12", "10215",
                                                       "KGL-GAS", "2025-01-01T00:00:00+05:45"]))
    if draw(st.integers(0, 3)) == 0:  # sometimes extra keys, which are always refused
        row.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=2)))
    planted = draw(st.lists(needles, max_size=2))
    for needle in planted:
        where = draw(st.sampled_from(["category", "gender", "event_type", "metadata",
                                      "nested", "key", "age", "value", "district"]))
        if where == "metadata":
            row["metadata"] = {"info": needle}
        elif where == "nested":
            row["metadata"] = {"a": [{"b": {"c": needle}}]}
        elif where == "key":
            row["metadata"] = {needle: 1}
        else:
            row[where] = needle
    return row, planted
