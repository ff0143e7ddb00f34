"""Ingestion (SPEC B2): raw events from files, Python batches and collectors → record stores.

Public surface (implementation modules are private)::

    ingest_file(store, catalog, path, tenant=..., product=..., secret=...)   CSV / JSONL, resumable
    ingest_rows(store, catalog, rows, tenant=..., product=..., secret=...)   Python batches
    IngestReport, RowResult                                                  what happened
    Rules, Rejection, age_bucket, floor_to_quarter_hour                      the row rules
    add_source, revoke_source, list_sources, authenticate, SourceInfo        collector tokens
    find_pii, is_pii_key, redacted_copy                                      PII detectors

The HTTP endpoint is ``data.ingest.api.create_app``. Every path runs the same pipeline:
validate → PII defence → de-identify → consent → duplicates → contribution bound → store, with
every refused row quarantined. Nothing here imports Streamlit or builds aggregates.

Private modules, one concern each::

    _sources         reading CSV / JSONL files and their fingerprints
    _pii, _rules     PII detectors; one row → a de-identified event or a rejection
    _checking        chunks of checked rows (in a worker process for a large file)
    _pipeline        the run: entry points, one transaction per chunk, the order of its steps
    _batches         the ingest batch record's lifecycle; IngestReport, RowResult
    _admission       which valid events are stored: duplicates, consent, contribution bounds
    _sql             the chunk's driver SQL per dialect (over the shared ``data.bulk`` loader)
    _consent_cache   consent answers reused between chunks while consent is unchanged
    _count_cache     stored counts per subject-day carried between chunks while nobody else
                     writes the event table
    _tuning          the store's settings and statistics during a bulk run
    _tokens          collector sources and their tokens
"""

from data.ingest._pii import find_pii, is_pii_key, redacted_copy
from data.ingest._pipeline import (
    DEFAULT_CHUNK_ROWS,
    IngestReport,
    RowResult,
    ingest_file,
    ingest_rows,
)
from data.ingest._rules import (
    AGE_BUCKETS,
    DISTRICT_ONLY_CELL,
    FIELDS,
    Event,
    Rejection,
    Rules,
    age_bucket,
    floor_to_quarter_hour,
)
from data.ingest._tokens import (
    SourceInfo,
    add_source,
    authenticate,
    list_sources,
    revoke_source,
)

__all__ = [
    "AGE_BUCKETS",
    "DEFAULT_CHUNK_ROWS",
    "DISTRICT_ONLY_CELL",
    "Event",
    "FIELDS",
    "IngestReport",
    "Rejection",
    "RowResult",
    "Rules",
    "SourceInfo",
    "add_source",
    "age_bucket",
    "authenticate",
    "find_pii",
    "floor_to_quarter_hour",
    "ingest_file",
    "ingest_rows",
    "is_pii_key",
    "list_sources",
    "redacted_copy",
    "revoke_source",
]
