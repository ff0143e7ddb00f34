"""Job history (SPEC B3, issue 20): materialisation runs and export runs in one list.

Owns reading what background jobs did: the ``job_runs`` table written by materialisation (and
any other job that records itself there) and the export jobs of ``exports`` (a run is an export
that a worker claimed: ``running``, ``done`` or ``failed``; one still waiting, pending approval
or rejected never ran). Read-only, operational metadata only: status, rows written, duration
and error of each run — never a released value. No Streamlit here.

Part of the compliance service (``privacy.compliance.jobs``). Reached by operators through
``veil jobs`` (every tenant, or one) and by compliance officers through
``gate.compliance.job_history`` (their own tenant, authorised and audited there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from data.errors import InvalidInput
from data.models import Export, JobRun

__all__ = ["JOB_KINDS", "JOB_STATUSES", "JobRecord", "check_job_filters", "job_history"]

#: What a run's status is, whatever table it comes from.
JOB_STATUSES = ("running", "succeeded", "failed")
#: The kinds of job listed: export runs, and whatever ``job_runs`` records.
JOB_KINDS = ("materialize", "export", "ingest", "demo", "retention", "snapshot")
#: An export's status as a run: the ones that never ran are not runs.
_EXPORT_RUN_STATUS = {"running": "running", "done": "succeeded", "failed": "failed"}
MAX_LIMIT = 1_000


@dataclass(frozen=True)
class JobRecord:
    """One run of a background job. Times are naive UTC."""

    kind: str                  # materialize | export | ingest | demo | retention | snapshot
    id: str                    # the job_runs id, or the export id
    tenant: str | None
    product: str | None
    status: str                # running | succeeded | failed
    started_at: datetime
    finished_at: datetime | None
    rows: int | None
    duration_s: float | None
    error: str | None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def check_job_filters(*, status: str | None, kind: str | None, since: datetime | None,
                      limit: int) -> None:
    """Refuse a filter that cannot be meant, quoting it (InvalidInput)."""
    if status is not None and status not in JOB_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
    if kind is not None and kind not in JOB_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(JOB_KINDS)}, got {kind!r}")
    if since is not None and not isinstance(since, datetime):
        raise InvalidInput(f"since must be a time (UTC), got {since!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")


def job_history(session: Session, *, tenant: str | None = None, status: str | None = None,
                kind: str | None = None, since: datetime | None = None,
                limit: int = 100) -> tuple[JobRecord, ...]:
    """The newest ``limit`` runs (of ``tenant``, or every tenant when None), newest first.

    ``status`` keeps runs in that state, ``kind`` runs of that job, ``since`` runs started at
    or after that time.
    """
    check_job_filters(status=status, kind=kind, since=since, limit=limit)
    runs: list[JobRecord] = []
    if kind != "export":
        where = []
        if tenant is not None:
            where.append(JobRun.tenant_id == tenant)
        if status is not None:
            where.append(JobRun.status == status)
        if kind is not None:
            where.append(JobRun.job == kind)
        if since is not None:
            where.append(JobRun.started_at >= since)
        for row in session.execute(
                select(JobRun.id, JobRun.job, JobRun.tenant_id, JobRun.product_id,
                       JobRun.status, JobRun.started_at, JobRun.finished_at, JobRun.rows,
                       JobRun.duration_s, JobRun.error)
                .where(*where).order_by(JobRun.started_at.desc(), JobRun.id.desc())
                .limit(limit)):
            runs.append(JobRecord(
                kind=row.job, id=str(row.id), tenant=row.tenant_id, product=row.product_id,
                status=row.status, started_at=row.started_at, finished_at=row.finished_at,
                rows=row.rows, duration_s=row.duration_s, error=row.error))
    if kind in (None, "export"):
        started = func.coalesce(Export.started_at, Export.created_at)
        states = [s for s, run in _EXPORT_RUN_STATUS.items() if status in (None, run)]
        where = [Export.status.in_(states)]
        if tenant is not None:
            where.append(Export.tenant_id == tenant)
        if since is not None:
            where.append(started >= since)
        # Only the columns of the original schema: later migrations may add more.
        for row in session.execute(
                select(Export.id, Export.tenant_id, Export.product_id, Export.status,
                       started.label("started"), Export.finished_at, Export.row_count,
                       Export.error)
                .where(*where).order_by(started.desc(), Export.id).limit(limit)):
            duration = ((row.finished_at - row.started).total_seconds()
                        if row.finished_at is not None else None)
            runs.append(JobRecord(
                kind="export", id=row.id, tenant=row.tenant_id, product=row.product_id,
                status=_EXPORT_RUN_STATUS[row.status], started_at=row.started,
                finished_at=row.finished_at, rows=row.row_count, duration_s=duration,
                # a running export may carry the reason of an earlier, retried attempt
                error=row.error if row.status == "failed" else None))
    runs.sort(key=lambda r: (r.started_at, r.id), reverse=True)
    return tuple(runs[:limit])
