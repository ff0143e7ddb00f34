"""Smuggled PII through the real ingestion paths and stores (issue 15, item 4): the file path
and the Python batch path (as the collector calls it) refuse every disguised row, store none
of it, and quarantine only hashes; the embedded store is private to its owner."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from data.bootstrap import init_store
from data.engine import open_store
from data.ingest import ingest_file, ingest_rows
from data.ingest._sources import loads_json
from data.models import IngestBatch
from tests.system.ingest_support import PRODUCT, SECRET, TENANT, event_count, grant, quarantined
from tests.unit.test_pii_smuggling import CLEAN, CORPUS, REFUSALS, encodings

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def numbered(line: str, n: int) -> str:
    """The line with its own event and subject, so that no row is a duplicate or bounded."""
    return line.replace('"event_id": "ev-1", "subject_id": "person-1"',
                        f'"event_id": "ev-{n}", "subject_id": "person-{n}"')


def mixed_lines() -> list[str]:
    """Clean rows between the smuggling ones: positions 1, 3, 5… are clean when available."""
    lines = []
    clean = iter(CLEAN)
    for case in CORPUS:
        lines.append(next(clean, CLEAN[0]))
        lines.append(case.line)
    return [numbered(line, n) for n, line in enumerate(lines, 1)]


def assert_refused_and_clean(store, report, lines: list[str]) -> None:
    smuggled = {n: case for n, case in enumerate(CORPUS, 1)}
    assert (report.accepted, report.rejected) == (len(CORPUS), len(CORPUS))
    assert set(report.reasons) <= REFUSALS
    assert event_count(store) == len(CORPUS)
    rows = quarantined(store)
    assert [row.position for row in rows] == [2 * n for n in smuggled]
    for row in rows:
        case = smuggled[row.position // 2]
        assert row.reason.split(":")[0] in REFUSALS, (case.name, row.reason)
        kept = f"{row.reason}\n{row.raw}\n{json.dumps(json.loads(row.raw), ensure_ascii=False)}"
        for needle in case.needles:
            for form in encodings(needle):
                assert form not in kept, f"{case.name}: {form!r} in {kept}"


def test_the_file_path_refuses_every_smuggled_row(store, catalog, tmp_path):
    """JSONL through ``ingest_file``: each disguise quarantined, each clean row stored."""
    lines = mixed_lines()
    grant(store, catalog, *(f"person-{n}" for n in range(1, len(lines) + 1)))
    path = tmp_path / "smuggled.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET,
                         now=NOW)
    assert_refused_and_clean(store, report, lines)


def test_the_batch_path_refuses_every_smuggled_row(store, catalog):
    """A collector body parsed as the API parses it, then ``ingest_rows``: the same refusals."""
    lines = mixed_lines()
    grant(store, catalog, *(f"person-{n}" for n in range(1, len(lines) + 1)))
    body = loads_json(f'{{"events": [{", ".join(lines)}]}}'.encode())
    report = ingest_rows(store, catalog, body["events"], tenant=TENANT, product=PRODUCT,
                         secret=SECRET, source="api:test", now=NOW, with_results=True)
    assert_refused_and_clean(store, report, lines)
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(IngestBatch)) == 1


def test_a_csv_metadata_cell_that_names_a_key_twice_is_refused(store, catalog, tmp_path):
    """The CSV path parses its metadata column with the same duplicate-key check."""
    grant(store, catalog, "person-1")
    path = tmp_path / "rows.csv"
    path.write_text(
        "event_id,subject_id,event_type,timestamp,category,district,metadata\n"
        'ev-1,person-1,vaccination,2025-03-04T10:07:30Z,polio,KGL-GAS,'
        '"{""device"": ""0788123456"", ""device"": ""tablet-7""}"\n', encoding="utf-8")
    report = ingest_file(store, catalog, path, tenant=TENANT, product=PRODUCT, secret=SECRET,
                         now=NOW)
    assert (report.accepted, dict(report.reasons)) == (0, {"duplicate key": 1})
    assert "0788123456" not in quarantined(store)[0].raw


def test_the_embedded_store_is_private_to_its_owner(settings_for, catalog, tmp_path):
    """A new SQLite store file is created 0600 (and its WAL files alike), var/ 0700."""
    settings = settings_for("sqlite")
    store = open_store(settings)
    try:
        init_store(store, catalog, demo_accounts=False)
        database = Path(store.engine.url.database)
        assert database.exists()
        files = [database, *database.parent.glob(database.name + "-*")]
        assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in files} == {
            path.name: 0o600 for path in files}
        assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    finally:
        store.dispose()
