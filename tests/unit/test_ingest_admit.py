"""Property: admitting a chunk decides every event exactly as deciding them one by one does.

``_admit`` accepts most events of a chunk without a per-event decision and decides only the
events that could be refused (and every event sharing an id, a subject or a group with them)
one by one. Hypothesis builds chunks full of such entanglements — repeated ids, ids already
stored, subjects without consent or with consent granted in the middle of their events,
subject-days over the bound, subject-months over a monthly bound — and compares the outcome
with the one-by-one decision the pipeline always made, written out here: same status, reason
and quarantine copy for every row, in the same order, and the same events accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from data.ingest._checking import CheckedChunk, _prepared
from data.ingest._admission import (
    ACCEPTED,
    NO_CONSENT,
    OVER_BOUND,
    OVER_MONTH_BOUND,
    RowResult,
    _admit,
    _deidentified_copy,
    _first_accepted,
    _Outcome,
)
from data.ingest._rules import Rejection

VERTICAL = "health"
DAYS = ("2025-03-04", "2025-03-05")
#: Days of two months, for the monthly bound.
MONTH_DAYS = ("2025-03-04", "2025-03-05", "2025-03-31", "2025-04-01")
TYPES = ("vaccination", "visit")


def _epoch(day: str, hour: int) -> float:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00").replace(tzinfo=UTC).timestamp()


@st.composite
def cases(draw, days=DAYS):
    """A chunk's valid events in source order, and what the store already holds."""
    n = draw(st.integers(1, 40))
    subjects = [f"{k:032x}" for k in range(draw(st.integers(1, 4)))]
    position = 0
    events, positions, ats = [], [], []
    for _ in range(n):
        position += draw(st.integers(1, 3))  # gaps: rows the rules refused
        key = f"{draw(st.integers(0, n)):032x}"
        subject = draw(st.sampled_from(subjects))
        day = draw(st.sampled_from(days))
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
            granted[subject] = _epoch(draw(st.sampled_from(days)), draw(st.integers(0, 3)))
    counts = {(subject, day, event_type): draw(st.integers(0, 3))
              for subject in subjects for day in days for event_type in TYPES
              if draw(st.booleans())}
    bound = draw(st.integers(1, 3))
    return events, positions, ats, stored, granted, counts, bound


@st.composite
def monthly_cases(draw):
    """As ``cases`` over days of two months, with a monthly bound (at least the daily one) and
    the stored events per subject-month (at least those of its stored subject-days)."""
    events, positions, ats, stored, granted, counts, bound = draw(cases(days=MONTH_DAYS))
    month_bound = draw(st.integers(bound, bound + 3))
    month_counts: dict[tuple[str, str, str], int] = {}
    for (subject, day, event_type), n in counts.items():
        key = (subject, day[:8] + "01", event_type)
        month_counts[key] = month_counts.get(key, 0) + n
    for key in list(month_counts):
        month_counts[key] += draw(st.integers(0, 2))  # stored on other days of the month
    return events, positions, ats, stored, granted, counts, bound, month_counts, month_bound


def one_by_one(events, positions, ats, *, stored, granted, counts, bound, month_counts=None,
               month_bound=None):
    """The pipeline's decision as it always was: every event in source order (and, with a
    monthly bound, each admitted event counted against its subject-month too)."""
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
        month_key = (row[4], row[7], row[3])
        if used >= bound:
            outcome.bounded(position, Rejection(OVER_BOUND, (
                f"the subject already has {bound} {row[3]} event(s) on {row[6]} "
                f"(at most {bound} per subject per day)")), _deidentified_copy(row))
        elif month_bound is not None and month_counts.get(month_key, 0) >= month_bound:
            outcome.bounded(position, Rejection(OVER_MONTH_BOUND, (
                f"the subject already has {month_bound} {row[3]} event(s) in {row[7][:7]} "
                f"(at most {month_bound} per subject per month)")), _deidentified_copy(row))
        else:
            counts[key] = used + 1
            if month_bound is not None:
                month_counts[month_key] = month_counts.get(month_key, 0) + 1
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


@settings(max_examples=400, deadline=None)
@given(monthly_cases())
def test_admitting_a_chunk_under_a_monthly_bound_decides_every_event_as_one_by_one_does(case):
    """With a person-month bound beside the daily one: same result for every row, same
    quarantine (over the daily or the monthly bound, in that order of checks), same events."""
    events, positions, ats, stored, granted, counts, bound, month_counts, month_bound = case
    expected = one_by_one(events, positions, ats, stored=stored, granted=granted,
                          counts=dict(counts), bound=bound, month_counts=dict(month_counts),
                          month_bound=month_bound)
    chunk = _prepared(CheckedChunk(rows=len(events), last=positions[-1], events=list(events),
                                   positions=list(positions), ats=list(ats)), None, monthly=True)
    outcome = _Outcome([])
    _admit(chunk, outcome, stored=stored, granted=granted, counts=dict(counts), bound=bound,
           vertical=VERTICAL, month_counts=dict(month_counts), month_bound=month_bound)
    outcome.settle()
    expected.settle()
    assert sorted(outcome.results, key=lambda r: r.position) == sorted(
        expected.results, key=lambda r: r.position)
    assert outcome.quarantine == expected.quarantine
    assert (outcome.counts, outcome.reasons) == (expected.counts, expected.reasons)
    assert outcome.accepted == expected.accepted


def test_the_monthly_bound_holds_across_days_the_daily_bound_allows():
    """Bound 2 a day and 3 a month: of four events on four days of one month (one stored
    before), two are admitted and the next two are bounded as over the monthly bound."""
    subject = f"{1:032x}"
    days = ("2025-03-02", "2025-03-09", "2025-03-16", "2025-03-23")
    events = [(f"{k:032x}", "kigali-east", "health.vaccinations", "vaccination", subject,
               f"{day} 08:00:00.000000", day, "2025-03-01", "-", "KGL-NYR", "0-5", "female",
               "polio", None) for k, day in enumerate(days)]
    chunk = _prepared(CheckedChunk(rows=4, last=4, events=list(events), positions=[1, 2, 3, 4],
                                   ats=[_epoch(day, 8) for day in days]), None, monthly=True)
    outcome = _Outcome([])
    _admit(chunk, outcome, stored=set(), granted={subject: _epoch("2024-01-01", 0)},
           counts={}, bound=2, vertical=VERTICAL,
           month_counts={(subject, "2025-03-01", "vaccination"): 1}, month_bound=3)
    outcome.settle()
    assert [(r.position, r.status) for r in sorted(outcome.results, key=lambda r: r.position)
            ] == [(1, "accepted"), (2, "accepted"), (3, "bounded"), (4, "bounded")]
    assert [reason for _, reason, _ in outcome.quarantine] == [
        "over monthly contribution bound: the subject already has 3 vaccination event(s) in "
        "2025-03 (at most 3 per subject per month)"] * 2
