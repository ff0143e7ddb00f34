"""Property on real stores: arbitrary JSON batches never crash ingestion and never store PII.

Hypothesis builds batches of arbitrary JSON and of valid rows with PII needles planted in
random places; after each batch every text the store holds — events, subjects, quarantine
(reason and copy), batch reports — is scanned for the needles and for PII patterns.
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from data.ingest import ingest_rows
from data.models import HealthEvent, IngestBatch, QuarantinedRow, Subject
from ingest_support import PRODUCT, SECRET, TENANT, grant

from tests.ingest_strategies import rows

PATTERNS = [
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    re.compile(r"(?<![0-9A-Za-z])\+?\d(?:[ .-]?\d){8,}(?![0-9A-Za-z])"),
]
TIME_COLUMNS = {"ts", "day", "month"}


def _texts(store) -> list[str]:
    """Every text value the store holds for ingestion, JSON copies split into their parts."""
    out: list[str] = []
    with store.read() as session:
        for event in session.scalars(select(HealthEvent)):
            out.extend(str(getattr(event, c.name)) for c in HealthEvent.__table__.columns
                       if c.name not in TIME_COLUMNS and getattr(event, c.name) is not None)
        for subject in session.scalars(select(Subject)):
            out.extend([subject.pseudonym, subject.district])
        for row in session.scalars(select(QuarantinedRow)):
            out.extend([row.reason, row.source])
            out.extend(_leaves(json.loads(row.raw)))
        for batch in session.scalars(select(IngestBatch)):
            out.extend(batch.reasons)
            if batch.error:
                out.append(batch.error)
    return out


def _leaves(value) -> list[str]:
    """Keys and values of a quarantine copy; the de-identified times we wrote are left out."""
    if isinstance(value, dict):
        return [part for key, item in value.items() if key not in TIME_COLUMNS
                for part in [key, *_leaves(item)]]
    if isinstance(value, list):
        return [part for item in value for part in _leaves(item)]
    return [str(value)]


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(rows(), min_size=1, max_size=8))
def test_arbitrary_batches_never_crash_and_never_store_pii(store, catalog, batch):
    """Each batch is answered row by row; nothing stored matches a needle or a PII pattern."""
    grant(store, catalog, "person-1")  # idempotent: repeats change nothing
    report = ingest_rows(store, catalog, [row for row, _ in batch], tenant=TENANT,
                         product=PRODUCT, secret=SECRET, with_results=True)
    assert len(report.results) == len(batch)
    assert report.accepted + report.duplicate + report.bounded + report.rejected == len(batch)
    planted = [needle for _, needles in batch for needle in needles]
    for text in _texts(store):
        assert not any(pattern.search(text) for pattern in PATTERNS), text
        assert not any(needle in text for needle in planted), text
