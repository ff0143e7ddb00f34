"""The count cache's bookkeeping (``data.ingest._count_cache``), without a store: which of a
chunk's keys it must read, and what it hands admission."""

from __future__ import annotations

import json

from data.ingest._count_cache import _CountCache


def _event(subject: str, day: str, kind: str = "vaccination") -> tuple:
    return ("key", "t", "p", kind, subject, f"{day} 09:00:00.000000", day, day[:8] + "01")


def test_subjects_are_new_known_or_known_outside_their_span():
    """"a" was read over March 1–10 (covers the chunk), "b" over March 5–6 (covers one of its
    days), "c" never: "c" is read over the chunk's span, "b"'s uncovered day on its own, once."""
    cache = _CountCache("health_events", monthly=False)
    cache.spans.update(a=("2025-03-01", "2025-03-10"), b=("2025-03-05", "2025-03-06"))
    events = [_event("a", "2025-03-02"), _event("a", "2025-03-09"), _event("b", "2025-03-05"),
              _event("b", "2025-03-09"), _event("c", "2025-03-04")]
    keys = json.dumps(sorted({f"{e[4]}|{e[6]}" for e in events}))
    new, outside, span = cache.unknown(["a", "b", "c"], events, keys)
    assert (new, outside, span) == (["c"], ["b|2025-03-09"], ("2025-03-02", "2025-03-09"))
    cache.fill({("b", "2025-03-09", "vaccination"): 2}, new=new, span=span, outside=outside)
    assert cache.unknown(["a", "b", "c"], events, keys) == ([], [], span)
    assert cache.spans["c"] == span and cache.reads == 2


def test_admission_gets_copies_of_the_chunks_groups_only():
    """Stored counts of the chunk's (subject, day, type) and (subject, month, type) groups, none
    of the others, as copies: admission's additions never reach the cache; the chunk's accepted
    events do, on its commit."""
    cache = _CountCache("health_events", monthly=True)
    cache.fill({("a", "2025-03-02", "vaccination"): 2, ("a", "2025-03-20", "vaccination"): 1,
                ("z", "2025-03-02", "vaccination"): 3},
               new=["a", "z"], span=("2025-03-01", "2025-03-01"), outside=[])
    events = [_event("a", "2025-03-02"), _event("a", "2025-03-03")]
    daily, monthly = cache.counts_for(events)
    assert daily == {("a", "2025-03-02", "vaccination"): 2}
    assert monthly == {("a", "2025-03-01", "vaccination"): 3}
    daily[("a", "2025-03-02", "vaccination")] += 1
    assert cache.days[("a", "2025-03-02", "vaccination")] == 2
    cache.start = None  # no store here (so no state to read): only the counting is tested
    cache.chunk_written(None, events, {1}, inserted=False)  # the second was refused
    assert cache.days[("a", "2025-03-02", "vaccination")] == 3
    assert cache.days[("a", "2025-03-03", "vaccination")] == 0
    assert cache.months[("a", "2025-03-01", "vaccination")] == 4
