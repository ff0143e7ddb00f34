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

from hypothesis import given, settings

from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.ingest import Event, Rejection, Rules
from data.ingest._rules import EVENT_COLUMNS
from tests.ingest_strategies import rows

SECRET = "property-test-secret-0123456789"
RULES = Rules(load_catalog(PROJECT_ROOT / "catalog"), tenant="kigali-east",
              product="health.vaccinations", secret=SECRET,
              now=datetime(2026, 11, 1, tzinfo=UTC))

# Independent of data.ingest's detectors on purpose: what a reviewer would call PII.
PATTERNS = [
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    re.compile(r"(?<![0-9A-Za-z])\+?\d(?:[ .-]?\d){8,}(?![0-9A-Za-z])"),
]

TIME_COLUMNS = {"ts", "day", "month"}


def _pii(value: str) -> bool:
    return any(pattern.search(value) for pattern in PATTERNS)


def _times(timestamp: str) -> dict[str, str]:
    """ts, day and month as stored for an accepted row's timestamp: UTC, floored to 15 min."""
    moment = datetime.fromisoformat(timestamp).astimezone(UTC)
    moment = moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)
    return {"ts": moment.strftime("%Y-%m-%d %H:%M:%S.%f"), "day": moment.date().isoformat(),
            "month": moment.date().replace(day=1).isoformat()}


@settings(max_examples=400, deadline=None)
@given(rows())
def test_arbitrary_json_never_crashes_and_never_yields_pii(case):
    """Every row gets an answer; accepted rows carry no PII; quarantine copies no needle."""
    row, planted = case
    result = RULES.check(row)
    assert isinstance(result, (Event, Rejection))
    if isinstance(result, Event):
        times = _times(row["timestamp"])
        for column, value in zip(EVENT_COLUMNS, result.row):
            if column in TIME_COLUMNS:
                # Made by us from the parsed time, not input. (A "+05:45" offset can move
                # 2025-01-01 into 2024 in UTC: the strategies plant such a timestamp.)
                assert value == times[column]
            elif isinstance(value, str):
                assert len(value) <= 32 and not _pii(value), value
                assert all(needle not in value for needle in planted)
            else:
                assert value is None or isinstance(value, float) and abs(value) <= 1e6
                assert value is None or sum(ch.isdigit() for ch in f"{value:f}".rstrip("0")) <= 8
    else:
        copy = RULES.quarantine_copy(row)
        copy.encode("ascii")
        assert all(needle not in copy for needle in planted)
        assert all(needle not in result.reason for needle in planted)
        assert not _pii(result.reason)
        json.loads(copy)
