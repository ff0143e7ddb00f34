"""Ingest batches: the batch record's lifecycle in the store, and the report it gives.

Owns the ``ingest_batches`` row of a run — created (``running``), resumed after an interrupted
run of the same file, advanced by each committed chunk together with that chunk's counts, and
finished (``succeeded`` or ``failed``, with the error) — and the value objects read back from
it: ``IngestReport`` and each row's ``RowResult``. A batch's position only ever moves forward
from the position the run last saw: two runs of one file cannot both advance it. It never
decides what a row's outcome is (``_admission``) and never stores events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.engine import Store
from data.errors import InvalidInput, StoreError
from data.models import IngestBatch

_MAX_ERROR_CHARS = 2_000

ACCEPTED, DUPLICATE, BOUNDED, REJECTED = "accepted", "duplicate", "bounded", "rejected"


@dataclass(frozen=True, slots=True)
class RowResult:
    """What happened to one row: its source position, status and, unless accepted, why."""

    position: int
    status: str  # accepted | duplicate | bounded | rejected
    reason: str | None = None


@dataclass(frozen=True)
class IngestReport:
    """A batch's report: accepted / duplicate / bounded / rejected (by reason), cumulative over
    resumed runs of the same file."""

    batch_id: str
    tenant: str
    product: str
    source: str
    status: str
    rows: int
    accepted: int
    duplicate: int
    bounded: int
    rejected: int
    reasons: Mapping[str, int]
    seconds: float
    resumed_after: int = 0
    already_ingested: bool = False
    results: tuple[RowResult, ...] = field(default=(), repr=False)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _describe(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__



def _previous_batch(store: Store, *, tenant: str, product: str,
                    fingerprint: str) -> IngestBatch | None:
    try:
        with store.read() as session:
            return session.scalars(
                select(IngestBatch)
                .where(IngestBatch.tenant_id == tenant, IngestBatch.product_id == product,
                       IngestBatch.fingerprint == fingerprint)
                .order_by(IngestBatch.started_at.desc(), IngestBatch.id)
                .limit(1)).first()
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot read earlier ingest batches: {_describe(exc)}") from exc


def _report(batch: IngestBatch, *, seconds: float, already_ingested: bool = False,
            resumed_after: int = 0, results: Sequence[RowResult] = ()) -> IngestReport:
    return IngestReport(
        batch_id=batch.id, tenant=batch.tenant_id, product=batch.product_id,
        source=batch.source, status=batch.status, rows=batch.rows, accepted=batch.accepted,
        duplicate=batch.duplicate, bounded=batch.bounded, rejected=batch.rejected,
        reasons=MappingProxyType(dict(sorted(batch.reasons.items()))), seconds=seconds,
        resumed_after=resumed_after, already_ingested=already_ingested, results=tuple(results))


def _create_batch(store: Store, batch_id: str, *, tenant: str, product: str, source: str,
                  fingerprint: str | None) -> None:
    try:
        with store.write.begin() as session:
            session.add(IngestBatch(
                id=batch_id, tenant_id=tenant, product_id=product, source=source[:512],
                fingerprint=fingerprint, status="running", started_at=_utcnow(),
                position=0, rows=0, accepted=0, duplicate=0, bounded=0, rejected=0,
                reasons={}))
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot start an ingest batch: {_describe(exc)}") from exc


def _restart_batch(store: Store, batch_id: str) -> None:
    try:
        with store.write.begin() as session:
            session.execute(update(IngestBatch).where(IngestBatch.id == batch_id)
                            .values(status="running", finished_at=None, error=None))
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot resume ingest batch {batch_id}: "
                         f"{_describe(exc)}") from exc


def _advance_batch(session: Session, batch_id: str, *, position: int, last: int, rows: int,
                   counts: Mapping[str, int], reasons: Mapping[str, int]) -> None:
    """Move the batch from ``position`` to ``last`` with one chunk's counts, in the chunk's
    transaction (``reasons``: the batch's rejection reasons so far, this chunk's included)."""
    done = session.execute(
        update(IngestBatch)
        .where(IngestBatch.id == batch_id, IngestBatch.position == position)
        .values(position=last, rows=IngestBatch.rows + rows,
                accepted=IngestBatch.accepted + counts[ACCEPTED],
                duplicate=IngestBatch.duplicate + counts[DUPLICATE],
                bounded=IngestBatch.bounded + counts[BOUNDED],
                rejected=IngestBatch.rejected + counts[REJECTED],
                reasons=dict(sorted(reasons.items())))
        .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        raise InvalidInput(
            f"ingest batch {batch_id} was advanced by another process while this one "
            f"ran (is the same file being ingested twice at once?); nothing from this "
            f"chunk was stored. Let the other run finish, then re-run to see its report.")


def _finish_batch(store: Store, batch_id: str, status: str, error: str | None) -> None:
    try:
        with store.write.begin() as session:
            session.execute(update(IngestBatch).where(IngestBatch.id == batch_id).values(
                status=status, finished_at=_utcnow(),
                error=None if error is None else error[:_MAX_ERROR_CHARS]))
    except SQLAlchemyError:
        if status == "succeeded":
            raise
        # Recording a failure must not hide the failure itself; the batch stays "running"
        # and a re-run resumes it all the same.


def _final_report(store: Store, batch_id: str, *, seconds: float, resumed_after: int,
                  results: Sequence[RowResult]) -> IngestReport:
    with store.read() as session:
        batch = session.get(IngestBatch, batch_id)
        assert batch is not None
        return _report(batch, seconds=seconds, resumed_after=resumed_after, results=results)
