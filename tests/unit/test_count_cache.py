"""The count cache's bookkeeping (``data.ingest._count_cache``), without a store: which of a
chunk's keys it must read, and what it hands admission."""

from __future__ import annotations

import json

from data.ingest._count_cache import _CountCache


def _event(subject: str, day: str, kind: str = "vaccination") -> tuple:
    return ("key", "t", "p", kind, subject, f"{day} 09:00:00.000000", day, day[:8] + "01")


def test_subjects_are_read_by_key_over_the_span_or_not_at_all():
    """"a" was read over March 1–10 (covers the chunk), "b" over March 5–6 (covers one of its
    days), "c" was met before without a span, "d" never: "d" is read by its keys, "c" over the
    chunk's span, "b"'s uncovered day on its own."""
    cache = _CountCache("health_events", monthly=False)
    cache.spans.update(a=("2025-03-01", "2025-03-10"), b=("2025-03-05", "2025-03-06"))
    cache.met.add("c")
    events = [_event("a", "2025-03-02"), _event("a", "2025-03-09"), _event("b", "2025-03-05"),
              _event("b", "2025-03-09"), _event("c", "2025-03-04"), _event("d", "2025-03-03"),
              _event("d", "2025-03-07")]
    keys = json.dumps(sorted({f"{e[4]}|{e[6]}" for e in events}))
    new, by_key, span, firsts = cache.unknown(["a", "b", "c", "d"], events, keys)
    assert new == ["c"] and span == ("2025-03-02", "2025-03-09") and firsts == {"d"}
    assert by_key == ["b|2025-03-09", "d|2025-03-03", "d|2025-03-07"]
    cache.fill({("b", "2025-03-09", "vaccination"): 2}, new=new, span=span, outside=by_key,
               met=firsts)
    # met once now, "d" would be read over the span of the next chunk that holds it
    assert cache.unknown(["a", "b", "c", "d"], events, keys) == (["d"], [], span, set())
    assert cache.spans["c"] == span and cache.reads == 4


def test_a_read_replaces_what_was_known_of_its_days_and_months():
    """A span's read gives whole months as stored now, the run's earlier chunks included: its
    counts replace the cache's, never add to them."""
    cache = _CountCache("health_events", monthly=True)
    cache.fill({("a", "2025-03-02", "vaccination"): 1}, new=[], span=None,
               outside=["a|2025-03-01"], met={"a"})
    assert cache.months[("a", "2025-03-01", "vaccination")] == 1
    cache.fill({("a", "2025-03-02", "vaccination"): 1, ("a", "2025-03-20", "vaccination"): 2},
               new=["a"], span=("2025-03-01", "2025-04-01"), outside=[], met=set())
    assert cache.days[("a", "2025-03-02", "vaccination")] == 1
    assert cache.months[("a", "2025-03-01", "vaccination")] == 3


def test_admission_gets_copies_of_the_chunks_groups_only():
    """Stored counts of the chunk's (subject, day, type) and (subject, month, type) groups, none
    of the others, as copies: admission's additions never reach the cache; the chunk's accepted
    events do, on its commit."""
    cache = _CountCache("health_events", monthly=True)
    cache.fill({("a", "2025-03-02", "vaccination"): 2, ("a", "2025-03-20", "vaccination"): 1,
                ("z", "2025-03-02", "vaccination"): 3},
               new=["a", "z"], span=("2025-03-01", "2025-03-01"), outside=[], met=set())
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
