"""Crash test (SPEC B2): `veil ingest` killed with SIGKILL mid-file, re-run, exactly once.

The real CLI runs as a subprocess on the test store; the test waits until some chunks are
committed, kills it without warning, runs the same command again, and checks every event is
stored once, every bad row quarantined once, and the batch report covers the whole file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from data.config import PROJECT_ROOT
from data.ingest import Event, Rules
from data.models import HealthEvent, IngestBatch, QuarantinedRow, SubjectConsent
from data.pseudonym import pseudonym
from ingest_support import GRANTED_AT, LAT, LNG, PRODUCT, SECRET, TENANT

EVENTS = 40_000
SUBJECTS = 2_000
CHUNK = 500


def _write_file(path: Path) -> list[int]:
    """EVENTS lines; returns the line numbers that must be quarantined."""
    bad = []
    with path.open("w") as handle:
        for i in range(EVENTS):
            line = i + 1
            # a subject's k-th event falls in the k-th month from January 2024: one event per
            # person-month, within any monthly bound the catalog declares
            k = i // SUBJECTS
            day = 1 + k % 28
            row = {"event_id": f"ev-{i}", "subject_id": f"person-{i % SUBJECTS}",
                   "event_type": "vaccination",
                   "timestamp": f"{2024 + k // 12}-{1 + k % 12:02d}-{day:02d}T09:30:00Z",
                   "age": i % 90, "category": "polio", "lat": LAT, "lng": LNG}
            if i % 997 == 5:
                text = '{"event_id": "broken'
                bad.append(line)
            elif i % 991 == 7:
                row["category"] = "+250 788 123 456"
                text = json.dumps(row)
                bad.append(line)
            elif i % 983 == 11:
                row["event_id"] = f"ev-{i - 1}"  # a duplicate: counted, not quarantined
                text = json.dumps(row)
            else:
                text = json.dumps(row)
            handle.write(text + "\n")
    return bad


def _expected_keys(catalog, path: Path) -> set[str]:
    rules = Rules(catalog, tenant=TENANT, product=PRODUCT, secret=SECRET)
    keys = set()
    for line in path.read_text().splitlines():
        try:
            result = rules.check(json.loads(line))
        except ValueError:
            continue
        if isinstance(result, Event):
            keys.add(result.row[0])
    return keys


def _command(path: Path) -> list[str]:
    return [sys.executable, "-m", "dashboard.cli", "ingest", str(path), "--tenant", TENANT,
            "--product", PRODUCT, "--chunk-rows", str(CHUNK), "--quiet"]


@pytest.mark.slow
def test_an_ingest_killed_mid_file_and_rerun_stores_each_event_exactly_once(store, catalog,
                                                                            tmp_path):
    """SIGKILL after some chunks; the re-run resumes; each event once, each bad row once."""
    with store.write.begin() as session:
        session.execute(insert(SubjectConsent), [
            {"tenant_id": TENANT, "pseudonym": pseudonym(SECRET, f"person-{k}"),
             "vertical": "health", "status": "granted",
             "changed_at": GRANTED_AT.replace(tzinfo=None)} for k in range(SUBJECTS)])
    path = tmp_path / "events.jsonl"
    bad_lines = _write_file(path)
    expected = _expected_keys(catalog, path)
    env = {**os.environ, "VEIL_DATABASE_URL": store.engine.url.render_as_string(
        hide_password=False), "VEIL_DEMO_MODE": "1", "VEIL_SECRET": SECRET,
        "VEIL_VAR_DIR": str(tmp_path / "var")}

    process = subprocess.Popen(_command(path), cwd=PROJECT_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    position = 0
    while position < 5 * CHUNK:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the ingest made no progress"
        time.sleep(0.02)
        with store.read() as session:
            position = session.scalar(select(func.max(IngestBatch.position))) or 0
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL

    with store.read() as session:
        stored_after_kill = session.scalar(select(func.count()).select_from(HealthEvent))
        batch = session.scalars(select(IngestBatch)).one()
    assert batch.status == "running"  # killed: nothing recorded the end
    assert 0 < stored_after_kill < len(expected)
    assert batch.position < EVENTS

    rerun = subprocess.run(_command(path), cwd=PROJECT_ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed after line" in rerun.stdout

    with store.read() as session:
        keys = list(session.scalars(select(HealthEvent.event_id)))
        positions = list(session.scalars(select(QuarantinedRow.position)))
        batch = session.scalars(select(IngestBatch)).one()
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    assert sorted(positions) == bad_lines  # every bad row quarantined exactly once
    assert (batch.status, batch.rows, batch.accepted, batch.rejected) == (
        "succeeded", EVENTS, len(expected), len(bad_lines))
    assert batch.duplicate == EVENTS - len(expected) - len(bad_lines)
