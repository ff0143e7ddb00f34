"""Property: admitting a chunk decides every event exactly as deciding them one by one does.

``_admit`` accepts most events of a chunk without a per-event decision and decides only the
events that could be refused (and every event sharing an id, a subject or a group with them)
one by one. Hypothesis builds chunks full of such entanglements — repeated ids, ids already
stored, subjects without consent or with consent granted in the middle of their events,
subject-days over the bound — and compares the outcome with the one-by-one decision the
pipeline always made, written out here: same status, reason and quarantine copy for every row,
in the same order, and the same events accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from data.ingest._checking import CheckedChunk, _prepared
from data.ingest._pipeline import (
    ACCEPTED,
    NO_CONSENT,
    OVER_BOUND,
    RowResult,
    _admit,
    _deidentified_copy,
    _first_accepted,
    _Outcome,
)
from data.ingest._rules import Rejection

VERTICAL = "health"
DAYS = ("2025-03-04", "2025-03-05")
TYPES = ("vaccination", "visit")


def _epoch(day: str, hour: int) -> float:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00").replace(tzinfo=UTC).timestamp()


@st.composite
def cases(draw):
    """A chunk's valid events in source order, and what the store already holds."""
    n = draw(st.integers(1, 40))
    subjects = [f"{k:032x}" for k in range(draw(st.integers(1, 4)))]
    position = 0
    events, positions, ats = [], [], []
    for _ in range(n):
        position += draw(st.integers(1, 3))  # gaps: rows the rules refused
        key = f"{draw(st.integers(0, n)):032x}"
        subject = draw(st.sampled_from(subjects))
        day = draw(st.sampled_from(DAYS))
        hour = draw(st.integers(0, 3))
        event_type = draw(st.sampled_from(TYPES))
        events.append((key, "kigali-east", "health.vaccinations", event_type, subject,
                       f"{day} {hour:02d}:00:00.000000", day, day[:8] + "01", "-", "KGL-NYR",
                       "0-5", "female", "polio", None))
        positions.append(position)
        ats.append(_epoch(day, hour) + draw(st.sampled_from([0.0, 30.0, 899.0])))
    keys = sorted({event[0] for event in events})
    stored = set(draw(st.lists(st.sampled_from(keys), max_size=3)))
    granted = {}
    for subject in subjects:
        choice = draw(st.integers(0, 3))
        if choice == 1:
            granted[subject] = _epoch("2024-01-01", 0)
        elif choice >= 2:  # granted in the middle of the chunk's events, or exactly at one
            granted[subject] = _epoch(draw(st.sampled_from(DAYS)), draw(st.integers(0, 3)))
    counts = {(subject, day, event_type): draw(st.integers(0, 3))
              for subject in subjects for day in DAYS for event_type in TYPES
              if draw(st.booleans())}
    bound = draw(st.integers(1, 3))
    return events, positions, ats, stored, granted, counts, bound


def one_by_one(events, positions, ats, *, stored, granted, counts, bound):
    """The pipeline's decision as it always was: every event in source order."""
    outcome = _Outcome([])
    checked = sorted(zip(positions, events, ats))
    fresh = []
    for position, row, at in checked:
        if row[0] in stored:
            outcome.duplicate(position)
        else:
            fresh.append((position, row, at))
    consenting = []
    for position, row, at in fresh:
        since = granted.get(row[4])
        if since is None or at < since:
            outcome.reject(position, Rejection(NO_CONSENT, (
                f"the subject has no granted consent for {VERTICAL} at the event's time")),
                _deidentified_copy(row))
        else:
            consenting.append((position, row))
    admitted: set[str] = set()
    accepted = []
    for position, row in consenting:
        if row[0] in admitted:
            outcome.duplicate(position)
            continue
        key = (row[4], row[6], row[3])
        used = counts.get(key, 0)
        if used >= bound:
            outcome.bounded(position, Rejection(OVER_BOUND, (
                f"the subject already has {bound} {row[3]} event(s) on {row[6]} "
                f"(at most {bound} per subject per day)")), _deidentified_copy(row))
        else:
            counts[key] = used + 1
            admitted.add(row[0])
            accepted.append(row)
            outcome.results.append(RowResult(position, ACCEPTED))
    outcome.accepted = sorted(accepted, key=lambda row: (row[4], row[5]))  # insert order
    return outcome


@settings(max_examples=400, deadline=None)
@given(cases())
def test_admitting_a_chunk_decides_every_event_as_one_by_one_does(case):
    """Same result for every row, same quarantine in the same order, same events accepted."""
    events, positions, ats, stored, granted, counts, bound = case
    expected = one_by_one(events, positions, ats, stored=stored, granted=granted,
                          counts=dict(counts), bound=bound)
    chunk = _prepared(CheckedChunk(rows=len(events), last=positions[-1], events=list(events),
                                   positions=list(positions), ats=list(ats)), None)
    outcome = _Outcome([])
    _admit(chunk, outcome, stored=stored, granted=granted, counts=dict(counts), bound=bound,
           vertical=VERTICAL)
    outcome.settle()
    expected.settle()
    by_position = sorted(outcome.results, key=lambda r: r.position)
    assert by_position == sorted(expected.results, key=lambda r: r.position)
    assert outcome.quarantine == expected.quarantine
    assert (outcome.counts, outcome.reasons) == (expected.counts, expected.reasons)
    assert outcome.accepted == expected.accepted
    # Each subject's row is made from its first accepted event in the insert order.
    first: dict[str, tuple] = {}
    for row in expected.accepted:
        first.setdefault(row[4], row)
    assert _first_accepted(chunk, outcome.refused, skip=set()) == sorted(first.items())
    skip = set(list(first)[:1])
    assert _first_accepted(chunk, outcome.refused, skip=skip) == sorted(
        item for item in first.items() if item[0] not in skip)
