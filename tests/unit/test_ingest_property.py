"""Property: arbitrary JSON never crashes the row rules and never yields a PII-looking value.

Hypothesis throws arbitrary JSON at ``Rules.check`` — random values, and valid rows with random
fields overwritten, extra keys and PII needles (emails, phone numbers, national ids) planted in
random places. The rules must answer every row with an Event or a Rejection; an accepted row
must hold no PII-looking value, no string longer than a category and no planted needle; the
quarantine copy of a rejected row must hold no needle either.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.ingest import FIELDS, Event, Rejection, Rules, redacted_copy
from data.ingest._rules import EVENT_COLUMNS

SECRET = "property-test-secret-0123456789"
RULES = Rules(load_catalog(PROJECT_ROOT / "catalog"), tenant="kigali-east",
              product="health.vaccinations", secret=SECRET,
              now=datetime(2026, 11, 1, tzinfo=UTC))

# Independent of data.ingest's detectors on purpose: what a reviewer would call PII.
PATTERNS = [
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    re.compile(r"(?<![0-9A-Za-z])\+?\d(?:[ .-]?\d){8,}(?![0-9A-Za-z])"),
]

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
TIME_COLUMNS = {"ts", "day", "month"}
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


def _pii(value: str) -> bool:
    return any(pattern.search(value) for pattern in PATTERNS)


@settings(max_examples=400, deadline=None)
@given(rows())
def test_arbitrary_json_never_crashes_and_never_yields_pii(case):
    """Every row gets an answer; accepted rows carry no PII; quarantine copies no needle."""
    row, planted = case
    result = RULES.check(row)
    assert isinstance(result, (Event, Rejection))
    if isinstance(result, Event):
        for column, value in zip(EVENT_COLUMNS, result.row):
            if column in TIME_COLUMNS:
                assert value[:4] == "2025"  # made by us from the parsed time, not input
            elif isinstance(value, str):
                assert len(value) <= 32 and not _pii(value), value
                assert all(needle not in value for needle in planted)
            else:
                assert value is None or isinstance(value, float) and abs(value) <= 1e6
                assert value is None or sum(ch.isdigit() for ch in f"{value:f}".rstrip("0")) <= 8
    else:
        copy = redacted_copy(row)
        copy.encode("ascii")
        assert all(needle not in copy for needle in planted)
        assert all(needle not in result.reason for needle in planted)
        assert not _pii(result.reason)
        json.loads(copy)
