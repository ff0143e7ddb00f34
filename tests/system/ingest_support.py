"""Helpers shared by the ingestion system tests (not a test module)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import func, select

from data.catalog import Catalog
from data.consent import grant_consent
from data.ingest import FIELDS
from data.engine import Store
from data.models import VERTICAL_EVENT_MODELS, QuarantinedRow
from data.pseudonym import pseudonym

SECRET = "ingest-test-secret-0123456789"
TENANT = "kigali-east"
PRODUCT = "health.vaccinations"
GRANTED_AT = datetime(2024, 1, 1, tzinfo=UTC)
#: A point in Kigali (Nyarugenge district's centroid), inside kigali-east's area.
LAT, LNG = -1.9536, 30.0606


def event(n: int | str, subject: str = "person-1", **fields: Any) -> dict[str, Any]:
    """A valid vaccination event; ``fields`` override or add fields."""
    row: dict[str, Any] = {
        "event_id": f"ev-{n}", "subject_id": subject, "event_type": "vaccination",
        "timestamp": "2025-03-04T10:07:30+02:00", "age": 4, "gender": "female",
        "category": "polio", "lat": LAT, "lng": LNG,
    }
    row.update(fields)
    return {key: value for key, value in row.items() if value is not ...}


def grant(store: Store, catalog: Catalog, *subjects: str, vertical: str = "health",
          tenant: str = TENANT, at: datetime = GRANTED_AT) -> None:
    for subject in subjects:
        grant_consent(store, catalog, tenant=tenant, pseudonym=pseudonym(SECRET, subject),
                      vertical=vertical, at=at)


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    with path.open("w") as handle:
        for row in rows:
            handle.write(row if isinstance(row, str) else json.dumps(row))
            handle.write("\n")
    return path


def stored_events(store: Store, vertical: str = "health") -> list:
    model = VERTICAL_EVENT_MODELS[vertical]
    with store.read() as session:
        return list(session.scalars(select(model).order_by(model.ts, model.event_id)))


def event_count(store: Store, vertical: str = "health") -> int:
    model = VERTICAL_EVENT_MODELS[vertical]
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(model))


def quarantined(store: Store) -> list[QuarantinedRow]:
    with store.read() as session:
        return list(session.scalars(select(QuarantinedRow).order_by(QuarantinedRow.position,
                                                                    QuarantinedRow.id)))


# --- hypothesis: arbitrary JSON rows with planted PII (a copy of the unit test's) ---------

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
