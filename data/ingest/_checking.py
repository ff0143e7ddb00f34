"""Checked chunks: the row rules applied to a stream of rows, in this process or a worker.

Owns turning ``(position, row)`` pairs into ``CheckedChunk``s — the valid events of a chunk in
the order they are inserted, with everything the store's set-based checks need prepared once
(sorted keys, subjects, subject-days, repeated ids), and the rows the rules refused with their
reasons and redacted copies — and, for a large file, doing that in a forked worker process so
that reading, JSON and the rules (about half the CPU of ingestion) run on another core while
this process stores the previous chunk.

It never touches the store and never decides consent, duplicates or bounds (``_admission``
does, inside the pipeline's chunk transaction). The worker only reads the file and runs the same
``Rules``; a chunk means the same thing whichever process built it.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import pickle
import queue
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import compress
from operator import eq, itemgetter, ne
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows, where the worker is not used either (no fork)
    fcntl = None
from data.ingest._rules import Event, Rejection, Rules
from data.ingest._sources import FileSource, Malformed

__all__ = ["CheckedChunk", "check_chunks", "checked_file_chunks"]

#: A file at least this large is checked in a worker process; below it, forking (a few ms)
#: and the hand-over would cost more than the overlap wins.
WORKER_MIN_BYTES = 4 << 20
#: Checked chunks a worker keeps waiting for the pipe besides the one it is sending: the
#: worker runs at most this many chunks plus one ahead of the parent (memory: a few chunks).
_AHEAD = 1

_KEY, _SUBJECT, _TS, _DAY, _MONTH, _TYPE = 0, 4, 5, 6, 7, 3


@dataclass(slots=True)
class CheckedChunk:
    """One chunk of source rows after the rules.

    ``events`` are the valid rows as stored (``EVENT_COLUMNS``), sorted by (pseudonym, time)
    — the insert order, which feeds the (tenant, subject, day) index in key order — with each
    one's source ``positions`` and exact UTC time (``ats``, epoch seconds) in step.
    ``rejected`` holds the rules' refusals in source order. The rest is prepared for the
    store's checks: ``subjects`` (sorted, distinct) with the index of each one's first event in
    ``first_rows`` and its earliest event time in ``first_ats``, ``subject_days`` (the distinct
    "pseudonym|day" keys, sorted, as one JSON array: the store reads them as one parameter),
    ``crowded`` (subject-day-type groups with two or more events here, and how many), and
    ``repeated`` (indexes into ``events`` whose id occurs more than once). For a product that
    declares a person-month bound, ``subject_months`` and ``crowded_months`` are the same for
    calendar months ("pseudonym|YYYY-MM-01"; otherwise left empty: nothing reads them).

    Whatever the storing process only hands to the store is prepared here as the store takes
    it, and nothing it can derive cheaply is sent: a large file is checked in a worker process
    (below), and what the storing process does per event is what limits ingestion.
    """

    rows: int = 0
    last: int = 0
    bytes_read: int = 0
    events: list[tuple] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    ats: list[float] = field(default_factory=list)
    rejected: list[tuple[int, Rejection, str]] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    first_rows: list[int] = field(default_factory=list)
    first_ats: list[float] = field(default_factory=list)
    subject_days: str = "[]"
    crowded: dict[tuple[str, str, str], int] = field(default_factory=dict)
    repeated: list[int] = field(default_factory=list)
    subject_months: str = "[]"
    crowded_months: dict[tuple[str, str, str], int] = field(default_factory=dict)


def check_chunks(rules: Rules, rows: Iterable[tuple[int, Any]], chunk_rows: int,
                 source: FileSource | None = None) -> Iterator[CheckedChunk]:
    """Chunks of ``chunk_rows`` source rows (the last may be shorter), checked by ``rules``."""
    check, quarantine_copy = rules.check, rules.quarantine_copy
    monthly = rules.spec.max_events_per_subject_per_month is not None
    chunk = CheckedChunk()
    events, positions, ats, rejected = chunk.events, chunk.positions, chunk.ats, chunk.rejected
    count = 0
    for position, row in rows:
        count += 1
        if type(row) is Malformed:
            rejected.append((position, Rejection("malformed row", row.detail),
                             json.dumps({"unparseable": f"{row.size} bytes"})))
        else:
            result = check(row)
            if type(result) is Event:
                events.append(result.row)
                positions.append(position)
                ats.append(result.at)
            else:
                rejected.append((position, result, quarantine_copy(row)))
        if count >= chunk_rows:
            chunk.rows, chunk.last = count, position
            yield _prepared(chunk, source, monthly=monthly)
            chunk = CheckedChunk()
            events, positions, ats, rejected = (chunk.events, chunk.positions, chunk.ats,
                                                chunk.rejected)
            count = 0
    if count:
        chunk.rows, chunk.last = count, position
        yield _prepared(chunk, source, monthly=monthly)


def _prepared(chunk: CheckedChunk, source: FileSource | None, *,
              monthly: bool = False) -> CheckedChunk:
    if source is not None:
        chunk.bytes_read = source.bytes_read
    events = chunk.events
    n = len(events)
    if not n:
        return chunk
    # (pseudonym, time) order with ties in source order, sorting on one string per event
    # (much faster than on tuples); NUL sorts before any character of a pseudonym. This runs
    # for every chunk of a large file, so its loops are C's (map, compress, itemgetter).
    sort_keys = list(map("\0".join, zip(map(itemgetter(_SUBJECT), events),
                                          map(itemgetter(_TS), events))))
    order = sorted(range(n), key=sort_keys.__getitem__)
    if n > 1:
        reorder = itemgetter(*order)
        events = chunk.events = list(reorder(events))
        chunk.positions = list(reorder(chunk.positions))
        ats = chunk.ats = list(reorder(chunk.ats))
    else:
        ats = chunk.ats
    keys = list(map(itemgetter(_KEY), events))
    if len(set(keys)) != n:
        seen = Counter(keys)
        chunk.repeated = [i for i, key in enumerate(keys) if seen[key] > 1]
    subjects = list(map(itemgetter(_SUBJECT), events))
    # Events are sorted by subject: each subject's events are one run.
    starts = [0, *compress(range(1, n), map(ne, subjects[1:], subjects))]
    chunk.subjects = list(itemgetter(*starts)(subjects)) if len(starts) > 1 else [subjects[0]]
    chunk.first_rows = starts
    if len(starts) == n:  # one event per subject: its time is the earliest
        chunk.first_ats = list(ats)
    else:
        chunk.first_ats = [ats[start] if end - start == 1 else min(ats[start:end])
                           for start, end in zip(starts, [*starts[1:], n])]
    # Events of one subject-day (and of one subject-month) are neighbours in this order.
    chunk.subject_days, chunk.crowded = _groups(subjects, events, _DAY)
    if monthly:
        chunk.subject_months, chunk.crowded_months = _groups(subjects, events, _MONTH)
    return chunk


def _groups(subjects: list[str], events: list[tuple],
            column: int) -> tuple[str, dict[tuple[str, str, str], int]]:
    """The distinct "pseudonym|<day or month>" keys of the events (``column``: the day's or
    the month's) as one JSON array, and the (subject, day or month, event type) groups with
    two or more events here, with their counts. Equal keys must be neighbours."""
    keys = list(map("|".join, zip(subjects, map(itemgetter(column), events))))
    same = list(compress(range(1, len(keys)), map(eq, keys[1:], keys)))
    if not same:
        return json.dumps(keys), {}
    members = sorted({*same, *(i - 1 for i in same)})
    groups = Counter((subjects[i], events[i][column], events[i][_TYPE]) for i in members)
    return (json.dumps(list(dict.fromkeys(keys))),
            {group: count for group, count in groups.items() if count > 1})


# --- the worker process ----------------------------------------------------------------------


@contextmanager
def checked_file_chunks(source: FileSource, rules: Rules, *, after: int,
                        chunk_rows: int) -> Iterator[Iterator[CheckedChunk]]:
    """The file's chunks after position ``after``: from a worker process when the file is large
    and this process may fork, otherwise checked here as they are read."""
    if source.size < WORKER_MIN_BYTES or not _may_fork():
        yield check_chunks(rules, source.rows(after=after), chunk_rows, source)
        return
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    _widen(writer)
    worker = context.Process(target=_work, args=(reader, writer, source, rules, after,
                                                 chunk_rows),
                             name="veil-ingest-rules", daemon=True)
    worker.start()
    writer.close()
    try:
        yield _received(reader, worker)
    finally:
        # Closing our end makes a worker still sending stop (broken pipe) instead of waiting.
        reader.close()
        worker.join(timeout=10)
        if worker.is_alive():
            worker.kill()
            worker.join()


#: Linux's fcntl command to resize a pipe's buffer (not named by the fcntl module before 3.10
#: on every platform).
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_BYTES = 1 << 20


def _widen(connection: Any) -> None:
    """Give the pipe a 1 MiB buffer instead of 64 KiB: a chunk (about 10 MB pickled) then
    crosses in a tenth of the reads, and the receiving side allocates its buffer for each read
    (measured: the reads were a twentieth of the storing process's time). Best effort: Linux
    only, and an unprivileged process may be held to a smaller limit."""
    if fcntl is None:
        return
    try:
        fcntl.fcntl(connection.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:
        pass


def _may_fork() -> bool:
    # Forking a process that runs other threads can copy a lock some thread holds, and macOS
    # does not support fork with its system frameworks; both check in this process instead.
    return (sys.platform.startswith("linux") and threading.active_count() == 1
            and "fork" in multiprocessing.get_all_start_methods())


def _received(reader: Any, worker: Any) -> Iterator[CheckedChunk]:
    while True:
        try:
            kind, payload = pickle.loads(reader.recv_bytes())
        except EOFError:
            worker.join(timeout=10)
            raise ChildProcessError(
                f"the ingest worker process stopped unexpectedly (exit code "
                f"{worker.exitcode})") from None
        if kind == "chunk":
            yield payload
        elif kind == "error":
            raise payload
        else:
            return


def _work(reader: Any, writer: Any, source: FileSource, rules: Rules, after: int,
          chunk_rows: int) -> None:
    """The worker: check the file chunk by chunk and send each chunk to the parent.

    A sender thread writes to the pipe, which blocks while the parent stores a chunk; the
    checking goes on meanwhile, up to ``_AHEAD`` chunks ahead of the parent, so a chunk that
    takes the worker longer than the parent's store does not leave both waiting in turn. The
    worker never touches the store: the database connections it inherited belong to the
    parent. When the parent goes away (killed, or failed), sending fails and the worker ends
    at once.
    """
    reader.close()
    gc.freeze()  # the inherited heap is never garbage: keep collections off it
    outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=_AHEAD)

    def send_all() -> None:
        try:
            while (message := outbox.get()) is not None:
                writer.send_bytes(message)
        except OSError:  # a broken pipe: the parent has stopped; nobody is left to tell
            os._exit(0)

    sender = threading.Thread(target=send_all, name="veil-ingest-sender", daemon=True)
    sender.start()

    def post(message: tuple) -> None:
        outbox.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    try:
        for chunk in check_chunks(rules, source.rows(after=after), chunk_rows, source):
            post(("chunk", chunk))
        post(("end", None))
    except KeyboardInterrupt:
        os._exit(1)  # interrupted with the parent (one process group): it reports
    except BaseException as exc:  # noqa: BLE001 - the parent re-raises whatever it was
        try:
            pickle.dumps(exc)
        except (pickle.PicklingError, TypeError, AttributeError):
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        post(("error", exc))
    outbox.put(None)
    sender.join()
    writer.close()
