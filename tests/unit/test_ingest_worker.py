"""Checking a file in a worker process: the same chunks as checking it here, errors included.

The worker is forced for small files by lowering the size from which it is used; each test
also checks that a worker process really ran (it cannot where the test process has threads).
"""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime

import pytest

import data.ingest._checking as checking
from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.errors import InvalidInput
from data.ingest import Rules
from data.ingest._checking import check_chunks, checked_file_chunks
from data.ingest._sources import FileSource

CATALOG = load_catalog(PROJECT_ROOT / "catalog")
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _rules() -> Rules:
    return Rules(CATALOG, tenant="kigali-east", product="health.vaccinations",
                 secret="worker-test-secret-0123456789", now=NOW)


def _row(i: int, **fields) -> dict:
    row = {"event_id": f"ev-{i % 37}", "subject_id": f"person-{i % 5}",
           "event_type": "vaccination", "timestamp": f"2025-03-{1 + i % 9:02d}T0{i % 7}:07:30Z",
           "age": i % 90, "category": "polio", "lat": -1.9536, "lng": 30.0606}
    row.update(fields)
    return row


@pytest.fixture
def in_worker(request, monkeypatch):
    """Every file goes to a worker process; yields a check that one ran."""
    if getattr(request.node, "ran_alone", False):
        return None  # it ran, and passed, in a fresh process (tests/conftest.py)
    monkeypatch.setattr(checking, "WORKER_MIN_BYTES", 0)
    started = []
    original = multiprocessing.context.ForkProcess.start

    def start(self):
        started.append(self.name)
        return original(self)

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", start)
    return started


@pytest.mark.fork_alone
def test_a_worker_yields_the_chunks_checking_here_yields(in_worker, tmp_path):
    """Valid, refused and malformed rows, repeated ids and subjects: equal chunks, in order."""
    lines = [json.dumps(_row(i)) for i in range(120)]
    lines[7] = '{"event_id": "broken'
    lines[30] = json.dumps(_row(30, category="+250 788 123 456"))
    lines[31] = json.dumps(_row(31, metadata={"contact": {"phone": "0788 123 456"}}))
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(lines) + "\n")
    here = list(check_chunks(_rules(), FileSource(path).rows(after=5), 25))
    with checked_file_chunks(FileSource(path), _rules(), after=5, chunk_rows=25) as chunks:
        there = list(chunks)
    assert in_worker == ["veil-ingest-rules"]
    assert [c.rows for c in there] == [25, 25, 25, 25, 15]
    for mine, theirs in zip(here, there, strict=True):
        theirs.bytes_read = 0  # progress only: how far the worker's reader had got
        assert mine == theirs
    assert there[0].rejected[0][0] == 8 and there[0].rejected[0][1].code == "malformed row"
    assert multiprocessing.active_children() == []


@pytest.mark.fork_alone
def test_an_error_reading_the_file_in_the_worker_is_raised_here(in_worker, tmp_path):
    """A CSV header naming a column twice: the same InvalidInput as without a worker."""
    path = tmp_path / "e.csv"
    path.write_text("event_id,event_id\na,b\n")
    with (pytest.raises(InvalidInput, match="names a column twice"),
          checked_file_chunks(FileSource(path), _rules(), after=0, chunk_rows=10) as chunks):
        list(chunks)
    assert in_worker and multiprocessing.active_children() == []


@pytest.mark.fork_alone
def test_a_worker_whose_reader_stops_early_ends(in_worker, tmp_path):
    """The reader leaves after one chunk (a store failure): the worker does not linger."""
    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(5_000)))
    with checked_file_chunks(FileSource(path), _rules(), after=0, chunk_rows=100) as chunks:
        first = next(iter(chunks))
    assert first.rows == 100 and in_worker
    assert multiprocessing.active_children() == []
