"""Export file writers: CSV, or Parquet through pyarrow, each written to a file only its owner
can read, flushed and fsynced on close, discarded on abort; and the column types of a file
(a field shown as stored keeps its stored type, a treated one is text).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from data.catalog import Catalog

from privacy.core import stored_type

if TYPE_CHECKING:
    from privacy.exports._worker import _Job

__all__ = ["_aggregate_schema", "_record_schema", "_writer"]


def _aggregate_schema(columns: list[str]) -> list[tuple[str, str]]:
    numeric = {"value", "lower", "upper", "noise_scale", "n"}
    return [(c, "float" if c in numeric else "string") for c in columns]


def _record_schema(columns: tuple[str, ...], treatments: dict[str, str], catalog: Catalog,
                   product_id: str) -> list[tuple[str, str]]:
    """Column types: a field shown as stored keeps its type; a treated one is text."""
    kinds = {int: "int", float: "float", date: "date", datetime: "timestamp"}
    out = []
    for name in columns:
        kind = "string"
        if treatments[name] == "show":
            kind = kinds.get(stored_type(catalog, product_id, name), "string")
        out.append((name, kind))
    return out


@contextmanager
def _writer(format: str, path: Path, schema: list[tuple[str, str]], job: _Job) -> Iterator:
    writer = (_CsvWriter if format == "csv" else _ParquetWriter)(path, schema, job)
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
    writer.close()


class _CsvWriter:
    def __init__(self, path: Path, schema: list[tuple[str, str]], job: _Job):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._handle = open(fd, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._handle)
        self._csv.writerow([name for name, _ in schema])

    def write(self, rows: list[tuple]) -> None:
        self._csv.writerows(rows)

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def abort(self) -> None:
        self._handle.close()


class _ParquetWriter:
    def __init__(self, path: Path, schema: list[tuple[str, str]], job: _Job):
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"string": pa.string(), "float": pa.float64(), "int": pa.int64(),
                 "date": pa.date32(), "timestamp": pa.timestamp("s")}
        self._pa = pa
        self._schema = pa.schema([(name, types[kind]) for name, kind in schema]).with_metadata(
            {"veil.export": job.id, "veil.product": job.product, "veil.tenant": job.tenant})
        self._path = path
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb"):
            pass
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")

    def write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        columns = list(zip(*rows))
        arrays = [self._pa.array(list(column), type=spec.type)
                  for column, spec in zip(columns, self._schema)]
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self) -> None:
        self._writer.close()
        with self._path.open("rb") as handle:
            os.fsync(handle.fileno())

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # the file is discarded anyway
            pass
