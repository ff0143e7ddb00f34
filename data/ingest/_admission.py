"""Admission: which of a chunk's valid events are stored — duplicates, consent, contribution bounds.

Owns the decision for each valid event of a chunk, given what the store already holds (read by
``_sql``): duplicate (its id is stored or came earlier), rejected for want of consent, bounded
(over the product's per-subject daily or monthly bound, per event type) or accepted; and the
outcome it leaves for the pipeline to write (``_Outcome``: accepted rows, quarantine copies,
counts). Pure: it never touches the store. It never accepts an event of a subject without a
"granted" consent for the vertical at the event's time, never lets a (subject, day, event type)
group past the daily bound nor a (subject, month, event type) group past a declared monthly
bound, and decides every event exactly as deciding them one by one in source order would
(tests/unit/test_ingest_admit.py).
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter

from data.ingest._batches import ACCEPTED, BOUNDED, DUPLICATE, REJECTED, RowResult
from data.ingest._checking import CheckedChunk
from data.ingest._rules import EVENT_COLUMNS, Rejection

NO_CONSENT = "no consent"
OVER_BOUND = "over contribution bound"
OVER_MONTH_BOUND = "over monthly contribution bound"

_KEY, _SUBJECT, _MONTH = itemgetter(0), itemgetter(4), itemgetter(7)


@dataclass
class _Outcome:
    """One chunk's decisions, gathered before anything is written. ``results`` (per-row
    outcomes) is kept only when the caller asked for them."""

    results: list[RowResult] | None = None
    accepted: list[tuple] = field(default_factory=list)  # stored rows, in insert order
    refused: set[int] = field(default_factory=set)  # indexes of the valid events not accepted
    quarantine: list[tuple[int, str, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)

    def duplicate(self, position: int) -> None:
        self.counts[DUPLICATE] += 1
        if self.results is not None:
            self.results.append(RowResult(position, DUPLICATE, "event id seen before"))

    def bounded(self, position: int, why: Rejection, raw: str) -> None:
        self.counts[BOUNDED] += 1
        self.quarantine.append((position, why.reason, raw))
        if self.results is not None:
            self.results.append(RowResult(position, BOUNDED, why.reason))

    def reject(self, position: int, why: Rejection, raw: str) -> None:
        self.counts[REJECTED] += 1
        self.reasons[why.code] += 1
        self.quarantine.append((position, why.reason, raw))
        if self.results is not None:
            self.results.append(RowResult(position, REJECTED, why.reason))

    def settle(self) -> None:
        """Count the accepted rows (kept as a list while deciding, counted once)."""
        self.counts[ACCEPTED] = len(self.accepted)


def _deidentified_copy(stored: tuple) -> str:
    """The quarantine copy of a valid row that was not admitted: its de-identified form,
    without the subject's pseudonym."""
    row = dict(zip(EVENT_COLUMNS, stored))
    for hidden in ("event_id", "pseudonym", "tenant_id", "product_id"):
        del row[hidden]
    return json.dumps(row, ensure_ascii=True)



def _admit(chunk: CheckedChunk, outcome: _Outcome, *, stored: set[str],
           granted: Mapping[str, float | None], counts: dict[tuple[str, str, str], int],
           bound: int, vertical: str,
           month_counts: dict[tuple[str, str, str], int] | None = None,
           month_bound: int | None = None) -> None:
    """Decide a chunk's valid events: duplicate, no consent, over a bound, or accepted.

    ``stored``: the chunk's event ids already in the store; ``granted``: pseudonym → epoch
    seconds since which consent is granted (absent or None: not granted); ``counts``: stored
    events per (pseudonym, day, event type), for at least every group of a subject with
    consent (absent: none stored); ``month_counts`` the same per (pseudonym, month, event
    type) when the product declares ``month_bound`` (None: no monthly bound).

    The rule is sequential — events are decided one by one in source order (``_decide_each``)
    — but most events cannot be refused whatever comes before them: their id occurs once in
    the chunk and is not stored, their subject's consent predates all of the subject's events
    here, and their (subject, day, event type) group — and (subject, month, event type) group —
    stays within its bound even if every one of its events here were stored. Those are
    accepted as they are. The rest — and with them every event that shares an id, a doubtful
    subject or a group at risk — are decided one by one, which gives every event exactly the
    answer deciding all of them one by one would (tests/unit/test_ingest_admit.py checks this
    against that one-by-one decision). A group at risk has all its events decided one by one,
    so its running count is exact; a group not at risk cannot reach its bound, so the events
    decided one by one for another reason may undercount it without changing any answer.
    """
    events = chunk.events
    doubtful = [subject for subject, first in zip(chunk.subjects, chunk.first_ats)
                if (since := granted.get(subject)) is None or first < since]
    if bound < 1 or (month_bound is not None and month_bound < 1):
        # the catalog requires >= 1; were it 0, every group would be at risk
        careful = set(range(len(events)))
    else:
        careful = set(chunk.repeated)
        if stored:
            careful.update(i for i, key in enumerate(map(_KEY, events)) if key in stored)
        for subject in doubtful:
            careful.update(_rows_of(events, subject))
        for subject, day, event_type in _at_risk(counts, chunk.crowded, bound):
            careful.update(i for i in _rows_of(events, subject)
                           if events[i][6] == day and events[i][3] == event_type)
        if month_bound is not None:
            for subject, month, event_type in _at_risk(month_counts or {},
                                                       chunk.crowded_months, month_bound):
                careful.update(i for i in _rows_of(events, subject)
                               if events[i][7] == month and events[i][3] == event_type)
    refused = (_decide_each(sorted(careful, key=chunk.positions.__getitem__), chunk, outcome,
                            stored=stored, granted=granted, counts=counts, bound=bound,
                            vertical=vertical, month_counts=month_counts,
                            month_bound=month_bound)
               if careful else set())
    outcome.refused = refused
    outcome.accepted = _without(events, refused) if refused else events
    if outcome.results is not None:
        outcome.results.extend(RowResult(position, ACCEPTED)
                               for i, position in enumerate(chunk.positions) if i not in refused)


def _at_risk(counts: dict[tuple[str, str, str], int], crowded: dict[tuple[str, str, str], int],
             bound: int) -> list[tuple[str, str, str]]:
    """The groups that could reach ``bound`` here: stored events plus the chunk's (a group
    absent from ``crowded`` has at most one event in the chunk) above the bound."""
    return [group for group in counts.keys() | crowded.keys()
            if counts.get(group, 0) + crowded.get(group, 1) > bound]


def _decide_each(order: list[int], chunk: CheckedChunk, outcome: _Outcome, *,
                 stored: set[str], granted: Mapping[str, float | None],
                 counts: dict[tuple[str, str, str], int], bound: int, vertical: str,
                 month_counts: dict[tuple[str, str, str], int] | None = None,
                 month_bound: int | None = None) -> set[int]:
    """Decide the events at ``order`` (indexes into ``chunk.events``, in source order) one by
    one; returns the indexes not admitted. Updates ``counts`` (and ``month_counts``) with the
    admitted events. The daily bound is checked first: an event over both is counted as over
    the daily one."""
    events, positions, ats = chunk.events, chunk.positions, chunk.ats
    refused: set[int] = set()
    # Duplicates of stored events; duplicates within the chunk are settled below, so that a
    # repeat of a row that was not admitted is judged like that row, as it would be in a later
    # chunk.
    fresh = []
    for i in order:
        if events[i][0] in stored:
            outcome.duplicate(positions[i])
            refused.add(i)
        else:
            fresh.append(i)
    # Consent: granted for the vertical, and granted no later than the event happened.
    consenting = []
    for i in fresh:
        since = granted.get(events[i][4])
        if since is None or ats[i] < since:
            outcome.reject(positions[i], Rejection(NO_CONSENT, (
                f"the subject has no granted consent for {vertical} at the event's time")),
                _deidentified_copy(events[i]))
            refused.add(i)
        else:
            consenting.append(i)
    # Contribution bounds per subject, UTC day (and month) and event type, counting stored
    # events first.
    admitted: set[str] = set()
    if month_counts is None:
        month_counts = {}
    for i in consenting:
        row = events[i]
        if row[0] in admitted:
            outcome.duplicate(positions[i])
            refused.add(i)
            continue
        key = (row[4], row[6], row[3])
        used = counts.get(key, 0)
        if used >= bound:
            outcome.bounded(positions[i], Rejection(OVER_BOUND, (
                f"the subject already has {bound} {row[3]} event(s) on {row[6]} "
                f"(at most {bound} per subject per day)")), _deidentified_copy(row))
            refused.add(i)
            continue
        if month_bound is not None:
            month_key = (row[4], row[7], row[3])
            used_in_month = month_counts.get(month_key, 0)
            if used_in_month >= month_bound:
                outcome.bounded(positions[i], Rejection(OVER_MONTH_BOUND, (
                    f"the subject already has {month_bound} {row[3]} event(s) in "
                    f"{row[7][:7]} (at most {month_bound} per subject per month)")),
                    _deidentified_copy(row))
                refused.add(i)
                continue
            month_counts[month_key] = used_in_month + 1
        counts[key] = used + 1
        admitted.add(row[0])
    return refused


def _without(items: list, dropped: set[int]) -> list:
    """``items`` without the (few) indexes in ``dropped``, copied slice by slice."""
    kept: list = []
    start = 0
    for i in sorted(dropped):
        kept += items[start:i]
        start = i + 1
    kept += items[start:]
    return kept


def _rows_of(events: list[tuple], subject: str) -> range:
    """Indexes of ``subject``'s events in a chunk's events (sorted by subject)."""
    return range(bisect_left(events, subject, key=_SUBJECT),
                 bisect_right(events, subject, key=_SUBJECT))


def _first_accepted(chunk: CheckedChunk, refused: set[int],
                    skip: set[str]) -> list[tuple[str, tuple]]:
    """(pseudonym, first accepted event) of each subject of the chunk not in ``skip`` that has
    an accepted event, in pseudonym order (``refused``: indexes of the events not accepted)."""
    events = chunk.events
    if not refused:
        return [(subject, events[i]) for subject, i in zip(chunk.subjects, chunk.first_rows)
                if subject not in skip]
    ends = [*chunk.first_rows[1:], len(events)]
    found = []
    for subject, i, end in zip(chunk.subjects, chunk.first_rows, ends):
        if subject in skip:
            continue
        while i < end and i in refused:
            i += 1
        if i < end:
            found.append((subject, events[i]))
    return found
