"""Reading CSV and JSONL files as streams with source positions (no store)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.errors import InvalidInput
from data.ingest._sources import FileSource, Malformed


def test_jsonl_rows_carry_their_line_numbers_and_bad_lines_become_markers(tmp_path):
    """Line 2 is not JSON: it is marked malformed, lines 1 and 4 parse; blank lines skip."""
    path = tmp_path / "e.jsonl"
    path.write_text('{"a": 1}\n{"a": 2,\n\n{"a": 3}\n')
    rows = list(FileSource(path).rows())
    assert [position for position, _ in rows] == [1, 2, 4]
    assert rows[0][1] == {"a": 1} and rows[2][1] == {"a": 3}
    assert isinstance(rows[1][1], Malformed) and "not valid JSON" in rows[1][1].detail


def test_a_malformed_marker_never_holds_the_line(tmp_path):
    """What was wrong and the size, never the text (it may hold personal data)."""
    path = tmp_path / "e.jsonl"
    path.write_text('{"phone": "0788123456"\n')
    [(_, marker)] = list(FileSource(path).rows())
    assert "0788123456" not in repr(marker)


def test_jsonl_resumes_after_a_position(tmp_path):
    """rows(after=n) yields only later lines, still numbered by the file."""
    path = tmp_path / "e.jsonl"
    path.write_text("".join(f'{{"n": {i}}}\n' for i in range(1, 6)))
    assert [p for p, _ in FileSource(path).rows(after=3)] == [4, 5]


def test_csv_positions_are_the_line_a_record_starts_on(tmp_path):
    """The header is line 1; a quoted field spanning two lines keeps the next record honest."""
    path = tmp_path / "e.csv"
    path.write_text('event_id,category,metadata\n'
                    'a,polio,"{""device"": ""tablet""}"\n'
                    'b,"dt\np",\n'
                    'c,dtp\n'
                    'd,bcg,\n')
    rows = list(FileSource(path).rows())
    assert [p for p, _ in rows] == [2, 3, 5, 6]
    assert rows[0][1] == {"event_id": "a", "category": "polio", "metadata": {"device": "tablet"}}
    assert rows[1][1] == {"event_id": "b", "category": "dt\np"}
    assert isinstance(rows[2][1], Malformed) and "expected 3 fields, got 2" in rows[2][1].detail
    assert rows[3][1] == {"event_id": "d", "category": "bcg"}


def test_csv_resumes_after_a_position(tmp_path):
    """Resuming skips records that start at or before the position."""
    path = tmp_path / "e.csv"
    path.write_text("event_id\na\nb\nc\n")
    assert [row["event_id"] for _, row in FileSource(path).rows(after=3)] == ["c"]


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    """Duplicate columns would make a row ambiguous."""
    path = tmp_path / "e.csv"
    path.write_text("event_id,event_id\na,b\n")
    with pytest.raises(InvalidInput, match="line 1.*twice"):
        list(FileSource(path).rows())


def test_the_format_comes_from_the_name_or_must_be_given(tmp_path):
    """.csv and .jsonl are known; anything else needs --format."""
    path = tmp_path / "events.txt"
    path.write_text("")
    with pytest.raises(InvalidInput, match="--format csv or --format jsonl"):
        FileSource(path)
    assert FileSource(path, format="jsonl").format == "jsonl"
    with pytest.raises(InvalidInput, match="no such file"):
        FileSource(tmp_path / "missing.csv")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_JSON, min_size=1, max_size=5))
def test_the_fast_decoder_reads_every_line_as_json_does(tmp_path, values):
    """JSONL lines are decoded by msgspec with json as the fallback: any JSON reads as
    json.loads reads it (big integers, escapes, any text, escaped or not)."""
    path = tmp_path / "e.jsonl"
    lines = [json.dumps(value, ensure_ascii=ascii) for value, ascii in
             zip(values, [True, False] * len(values))]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    rows = [row for _, row in FileSource(path).rows()]
    assert rows == [json.loads(line) for line in lines]


def test_what_only_json_accepts_still_reads_and_what_neither_does_names_its_column(tmp_path):
    """NaN, 1e400 and an escaped lone surrogate are refused by the fast decoder and read by
    json as before; a broken line is still described by json's message."""
    path = tmp_path / "e.jsonl"
    path.write_text('{"a": NaN}\n{"a": 1e400}\n{"a": "\\ud800"}\n{"a": 1,}\n')
    rows = [row for _, row in FileSource(path).rows()]
    assert math.isnan(rows[0]["a"]) and rows[1] == {"a": math.inf} and rows[2] == {"a": "\ud800"}
    assert isinstance(rows[3], Malformed) and rows[3].detail.startswith("not valid JSON (")
    assert "column" in rows[3].detail
