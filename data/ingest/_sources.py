"""Input sources for ingestion: CSV and JSONL files read as a stream, with source positions.

Owns reading a file row by row in bounded memory, numbering rows by their line in the file
(JSONL: the line; CSV: the line where the record starts, the header being line 1), turning a
line that cannot be parsed into a ``Malformed`` marker instead of an exception, and the file's
SHA-256 fingerprint used to resume an interrupted batch. It never validates field contents
(``_rules`` does) and never keeps a malformed line's text: only its size and what was wrong.

JSON objects that name a key twice are never silently merged: every JSON parser here (file lines,
CSV metadata cells, collector bodies through ``loads_json``) turns such an object into
``DuplicateKeys``, which the rules refuse, because a parser keeps only the last value and the
first one would otherwise never be checked.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from data.errors import InvalidInput

__all__ = ["FORMATS", "DuplicateKeys", "FileSource", "Malformed", "fingerprint", "loads_json"]

FORMATS = ("csv", "jsonl")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
#: One row's text; a longer line is refused, not parsed.
MAX_LINE_BYTES = 64 * 1024


class DuplicateKeys(dict):
    """A JSON object that names a key more than once (``repeated``: those keys, in order).

    It holds the last value of each key, as any parser would; the rules refuse it whole, so
    the earlier values, which nothing checked, are never taken for clean."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        seen: set[str] = set()
        self.repeated = tuple(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row = dict(pairs)
    return row if len(row) == len(pairs) else DuplicateKeys(pairs)


def loads_json(text: str | bytes | bytearray) -> Any:
    """JSON text → Python values, with every object that repeats a key as ``DuplicateKeys``.

    For a whole collector body: an envelope that repeats a key raises ValueError (a request is
    refused whole); an event or metadata object that does is handed on, for the rules to
    refuse that one row."""
    value = json.loads(text, object_pairs_hook=_object)
    if type(value) is DuplicateKeys:
        raise ValueError("the body names a key more than once")
    return value


_decode = json.JSONDecoder(object_pairs_hook=_object).decode
#: The fast decoder: C, about four times json's speed on an event line. It is strict where the
#: json module is lenient (NaN, 1e400, lone surrogates), so whatever it refuses is decoded again
#: by json, which then either accepts it or names the problem: a line means the same either way.
_decode_fast = msgspec.json.Decoder().decode
_JSON_SPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class Malformed:
    """A row that could not be parsed: what was wrong, never its content."""

    detail: str
    size: int


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class FileSource:
    """A CSV or JSONL file. ``rows(after=n)`` yields ``(position, row)`` for positions > n."""

    def __init__(self, path: Path | str, *, format: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidInput(f"{self.path}: no such file")
        if format is None:
            format = _SUFFIXES.get(self.path.suffix.lower())
            if format is None:
                raise InvalidInput(f"{self.path}: cannot tell the format from the name; use "
                                   f"--format {' or --format '.join(FORMATS)}")
        if format not in FORMATS:
            raise InvalidInput(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        self.format = format
        self.size = self.path.stat().st_size
        self._handle: BinaryIO | None = None

    @property
    def bytes_read(self) -> int:
        """How far into the file reading has got (for progress; buffered, so approximate)."""
        handle = self._handle
        if handle is None or handle.closed:
            return self.size
        return handle.tell()

    def rows(self, *, after: int = 0) -> Iterator[tuple[int, Any]]:
        with self.path.open("rb") as handle:
            self._handle = handle
            if self.format == "jsonl":
                yield from _jsonl(handle, after)
            else:
                yield from _csv(handle, after, self.path)


def _jsonl(handle: BinaryIO, after: int) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(handle, 1):
        if number <= after or (line[:1].isspace() and not line.strip()):
            continue
        if len(line) > MAX_LINE_BYTES:
            yield number, Malformed(f"line is longer than {MAX_LINE_BYTES} bytes", len(line))
            continue
        try:
            row = _decode_fast(line)
        except (msgspec.DecodeError, ValueError, RecursionError):
            row = _decoded(line)
        else:
            # The fast decoder keeps the last of two equal keys without a word. Every key in the
            # text ends in a quote, optional whitespace and a colon; without the whitespace,
            # counting '":' gives at least the number of keys (a quote inside a string is
            # escaped, so it may add a match, never hide one), and exactly that for ordinary
            # lines: more keys than decoded entries means a repeated key (or a string that
            # holds '":'), and the slower decoder, which sees repeats, decides. About a
            # microsecond a line (bench/ingest.py).
            if (type(row) is dict
                    and line.translate(None, _JSON_SPACE).count(b'":') != _entries(row)):
                row = _decoded(line)
        yield number, row


def _entries(node: Any) -> int:
    """Keys in all the objects of a decoded value."""
    count = 0
    if type(node) is dict:
        count = len(node)
        node = node.values()
    for item in node:
        kind = type(item)
        if kind is dict or kind is list:
            count += _entries(item)
    return count


def _decoded(line: bytes) -> Any:
    """A line the fast decoder refused, decoded by json (or the reason it is not JSON)."""
    try:
        return _decode(line.decode("utf-8"))
    except json.JSONDecodeError as exc:
        return Malformed(f"not valid JSON ({exc.msg} at column {exc.colno})", len(line))
    except UnicodeDecodeError:
        return Malformed("not valid UTF-8", len(line))
    except (ValueError, RecursionError):
        return Malformed("not valid JSON (nested too deeply or out of range)", len(line))


def _csv(handle: BinaryIO, after: int, path: Path) -> Iterator[tuple[int, Any]]:
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="replace", newline="")
    try:
        yield from _csv_rows(csv.reader(text, strict=True), after, path)
    finally:
        text.detach()  # the caller owns (and closes) the binary handle


def _csv_rows(reader: Any, after: int, path: Path) -> Iterator[tuple[int, Any]]:
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InvalidInput(f"{path}: line 1: the CSV header cannot be read ({exc})") from exc
    names = [name.strip() for name in header]
    if not any(names):
        raise InvalidInput(f"{path}: line 1 must be a header naming the columns")
    if len(set(names)) != len(names):
        raise InvalidInput(f"{path}: line 1: the header names a column twice")
    width = len(names)
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if start > after:
                yield start, Malformed(f"not valid CSV ({exc})", 0)
            start = reader.line_num + 1
            continue
        position, start = start, reader.line_num + 1
        if position <= after or not cells or cells == [""] * len(cells) and width > 1:
            continue
        if len(cells) != width:
            yield position, Malformed(f"expected {width} fields, got {len(cells)}",
                                      sum(len(c) for c in cells))
            continue
        row = {name: cell for name, cell in zip(names, cells) if cell != ""}
        metadata = row.get("metadata")
        if metadata is not None:
            try:
                row["metadata"] = _decode(metadata)
            except (ValueError, RecursionError):
                pass  # left as text: the rules refuse it as "metadata must be an object"
        yield position, row
