"""The export worker and its leases: claims a queued job with a conditional UPDATE, holds it by
a lease every progress update renews, builds the file (aggregates through ``gate.release``,
ε charged once across retries; records streamed through the role's field treatments), writes
it under a temporary name, renames and hashes it, and marks the job done in one conditional
transaction. A job whose worker died is claimed again once its lease ran out, at most
``max_attempts`` times, then failed; expired files are deleted (their records stay).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, func, or_, select, update

from data.errors import AccessDenied, InvalidInput, VeilError
from data.models import Export, ExportApproval
from data.models import Release as ReleaseRow

from privacy.core import Principal, Query, RecordQuery, audit_in, stream_records
from privacy.exports._base import _ExportsBase
from privacy.exports._values import FORMATS
from privacy.exports._writers import _aggregate_schema, _record_schema, _writer

__all__ = ["_Worker"]

_log = logging.getLogger("veil.exports")


class _LeaseLost(Exception):
    """Another worker took the job over (our lease ran out): stop without touching it."""


@dataclass(frozen=True)
class _Job:
    id: str
    tenant: str
    requester: str
    role: str
    product: str
    kind: str
    query: dict
    scope: tuple[str, ...]
    format: str
    umbrella: bool
    attempt: int
    worker: str
    started_at: datetime
    releases: tuple[dict, ...]


@dataclass(frozen=True)
class _Built:
    rows: int
    epsilon: float
    masking: dict[str, str]
    releases: list[dict]


@dataclass(frozen=True)
class _WorkerInfo:
    id: str
    directory: Path
    lease: timedelta
    chunk_rows: int


_GEO = ("state", "district", "h3_cell")


class _Worker(_ExportsBase):
    def run_worker(self, *, directory: Path, worker_id: str | None = None, once: bool = False,
                   stop: threading.Event | None = None, poll_seconds: float = 1.0,
                   lease_seconds: float | None = None, chunk_rows: int = 50_000) -> int:
        """Process export jobs; return how many were processed.

        ``once``: process what is queued now (and jobs whose lease ran out), then return, and
        let errors propagate. Otherwise poll every ``poll_seconds`` until ``stop`` is set,
        logging errors and carrying on, and delete files whose links expired about once a
        minute.
        """
        if chunk_rows < 1:
            raise InvalidInput(f"chunk_rows must be >= 1, got {chunk_rows}")
        lease = lease_seconds if lease_seconds is not None else self._policy.lease_seconds
        if not 0 < lease <= 3600:
            raise InvalidInput(f"lease_seconds must be in (0, 3600], got {lease}")
        worker = _WorkerInfo(
            id=(worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")[:64],
            directory=Path(directory), lease=timedelta(seconds=lease), chunk_rows=chunk_rows)
        worker.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        processed, purged_at = 0, 0.0
        while stop is None or not stop.is_set():
            try:
                job = self._claim(worker)
                if job is not None:
                    self._run(worker, job)
                    processed += 1
                    continue
                if once or time.monotonic() - purged_at > 60:
                    self.purge_expired()
                    purged_at = time.monotonic()
            except Exception:
                if once:
                    raise
                _log.exception("export worker %s: unexpected error; carrying on", worker.id)
            if once:
                return processed
            if stop is not None:
                stop.wait(poll_seconds)
            else:
                time.sleep(poll_seconds)
        return processed

    def purge_expired(self) -> int:
        """Delete the files of exports whose links expired; the records stay. Returns count."""
        now = self._now()
        with self._store.read() as session:
            rows = session.execute(select(Export.id, Export.file_path).where(
                Export.status == "done", Export.purged_at.is_(None),
                Export.link_expires_at <= now)).all()
        for export_id, path in rows:
            if path:
                Path(path).unlink(missing_ok=True)
            with self._store.write.begin() as session:
                session.execute(update(Export).where(Export.id == export_id,
                                                     Export.purged_at.is_(None))
                                .values(purged_at=now).execution_options(
                                    synchronize_session=False))
        return len(rows)

    def _claim(self, worker: _WorkerInfo) -> _Job | None:
        """Take the oldest runnable job with a conditional UPDATE, or fail abandoned ones."""
        now = self._now()
        expired = and_(Export.status == "running", Export.lease_until < now)
        runnable = or_(Export.status == "queued", expired)
        for _ in range(5):  # another worker may win a candidate; try the next one
            # A read first: an idle worker never takes SQLite's write lock.
            with self._store.read() as session:
                candidate = session.execute(
                    select(Export.id, Export.status, Export.attempts).where(runnable)
                    .order_by(Export.created_at, Export.id).limit(1)).first()
            if candidate is None:
                return None
            export_id, status, attempts = candidate
            if status == "running" and attempts >= self._policy.max_attempts:
                self._abandon(export_id, attempts, now)
                continue
            with self._store.write.begin() as session:
                claimed = session.execute(
                    update(Export).where(Export.id == export_id, runnable)
                    .values(status="running", worker=worker.id, lease_until=now + worker.lease,
                            attempts=Export.attempts + 1, progress=0.0,
                            started_at=func.coalesce(Export.started_at, now))
                    .execution_options(synchronize_session=False)).rowcount == 1
                if not claimed:
                    continue
                row = session.get(Export, export_id)
                session.refresh(row)
                if status == "running":
                    audit_in(session, principal=row.requester, tenant=row.tenant_id,
                             role=row.role, action="export_retry", target=row.id,
                             outcome="error",
                             detail={"reason": "the worker running it stopped (lease expired)",
                                     "attempt": row.attempts - 1})
                audit_in(session, principal=row.requester, tenant=row.tenant_id, role=row.role,
                         action="export_start", target=row.id, outcome="allowed",
                         detail={"attempt": row.attempts, "worker": worker.id})
                return _Job(id=row.id, tenant=row.tenant_id, requester=row.requester,
                            role=row.role, product=row.product_id, kind=row.kind,
                            query=dict(row.query), scope=tuple(row.scope), format=row.format,
                            umbrella=row.umbrella, attempt=row.attempts, worker=worker.id,
                            started_at=row.started_at or now,
                            releases=tuple(row.releases or ()))
        return None

    def _abandon(self, export_id: str, attempts: int, now: datetime) -> None:
        reason = (f"the export worker stopped {attempts} times while building this export "
                  f"(at most {self._policy.max_attempts} attempts); request it again")
        with self._store.write.begin() as session:
            done = session.execute(
                update(Export).where(Export.id == export_id, Export.status == "running",
                                     Export.lease_until < now)
                .values(status="failed", error=reason, finished_at=now, lease_until=None)
                .execution_options(synchronize_session=False)).rowcount == 1
            if done:
                row = session.get(Export, export_id)
                audit_in(session, principal=row.requester, tenant=row.tenant_id, role=row.role,
                         action="export_fail", target=export_id, outcome="error",
                         detail={"reason": reason, "attempts": attempts})

    def _run(self, worker: _WorkerInfo, job: _Job) -> None:
        extension = FORMATS[job.format][1]
        # Nothing of this job has been delivered (it is running): files of earlier attempts,
        # complete or not, go.
        for stale in worker.directory.glob(f"{job.id}-a*"):
            stale.unlink(missing_ok=True)
        part = worker.directory / f"{job.id}-a{job.attempt}.{extension}.part"
        final = worker.directory / f"{job.id}-a{job.attempt}.{extension}"
        try:
            if job.umbrella:
                self._check_approved(job)
            builder = self._build_aggregate if job.kind == "aggregate" else self._build_records
            built = builder(worker, job, part)
            digest, size = _sha256_file(part)
            os.replace(part, final)  # atomic: the final name only ever holds a whole file
            _fsync_directory(worker.directory)
            self._finish(job, final, built, digest=digest, size=size)
        except _LeaseLost:
            final.unlink(missing_ok=True)
            _log.warning("export %s: worker %s lost its lease; another worker has the job",
                         job.id, worker.id)
        except VeilError as exc:
            final.unlink(missing_ok=True)
            self._fail(job, str(exc))
        except Exception as exc:
            final.unlink(missing_ok=True)
            _log.exception("export %s: attempt %d failed", job.id, job.attempt)
            if job.attempt >= self._policy.max_attempts:
                self._fail(job, f"the export failed {job.attempt} times, last with "
                                f"{type(exc).__name__}: {exc}; request it again")
            else:
                self._requeue(job, exc)
        finally:
            part.unlink(missing_ok=True)

    def _check_approved(self, job: _Job) -> None:
        """Defence in depth: an umbrella job never runs without its approvals, whatever its
        status column says."""
        with self._store.read() as session:
            approvers = set(session.scalars(select(ExportApproval.approver).where(
                ExportApproval.export_id == job.id, ExportApproval.decision == "approved",
                ExportApproval.role == self._policy.approver_role,
                ExportApproval.approver != job.requester)))
        if len(approvers) < self._policy.approvals:
            raise AccessDenied(f"umbrella export {job.id[:8]} has {len(approvers)} valid "
                               f"approval(s) of the {self._policy.approvals} it needs; "
                               f"it was not run")

    def _beat(self, job: _Job, worker: _WorkerInfo, *, progress: float,
              releases: list[dict] | None = None) -> None:
        """Record progress and renew the lease; raise _LeaseLost if the job is not ours."""
        values = {"progress": min(max(progress, 0.0), 1.0),
                  "lease_until": self._now() + worker.lease}
        if releases is not None:
            values["releases"] = releases
        with self._store.write.begin() as session:
            mine = session.execute(
                update(Export).where(*self._ours(job)).values(**values)
                .execution_options(synchronize_session=False)).rowcount == 1
        if not mine:
            raise _LeaseLost(job.id)

    def _ours(self, job: _Job) -> tuple:
        return (Export.id == job.id, Export.status == "running", Export.worker == job.worker,
                Export.attempts == job.attempt)

    def _finish(self, job: _Job, final: Path, built: _Built, *, digest: str, size: int) -> None:
        now = self._now()
        with self._store.write.begin() as session:
            mine = session.execute(
                update(Export).where(*self._ours(job)).values(
                    status="done", progress=1.0, row_count=built.rows, digest=digest,
                    size_bytes=size, file_path=str(final), finished_at=now,
                    link_expires_at=now + timedelta(hours=self._policy.link_hours),
                    epsilon=built.epsilon, masking=built.masking, releases=built.releases,
                    policy_version=self._catalog.version, lease_until=None, error=None)
                .execution_options(synchronize_session=False)).rowcount == 1
            if not mine:
                raise _LeaseLost(job.id)
            audit_in(session, principal=job.requester, tenant=job.tenant, role=job.role,
                     action="export_finish", target=job.id, outcome="allowed",
                     detail={"rows": built.rows, "digest": digest, "bytes": size,
                             "epsilon": built.epsilon, "attempt": job.attempt,
                             "releases": [r["release"] for r in built.releases]})

    def _fail(self, job: _Job, reason: str) -> None:
        with self._store.write.begin() as session:
            # What was released before the failure stays charged and on record.
            releases = session.scalar(select(Export.releases).where(*self._ours(job)))
            epsilon = sum(r["epsilon"] for r in releases or ())
            mine = session.execute(
                update(Export).where(*self._ours(job)).values(
                    status="failed", error=reason, finished_at=self._now(), lease_until=None,
                    epsilon=epsilon)
                .execution_options(synchronize_session=False)).rowcount == 1
            if mine:
                audit_in(session, principal=job.requester, tenant=job.tenant, role=job.role,
                         action="export_fail", target=job.id, outcome="error",
                         detail={"reason": reason, "attempt": job.attempt, "epsilon": epsilon})

    def _requeue(self, job: _Job, exc: Exception) -> None:
        reason = f"attempt {job.attempt} failed: {type(exc).__name__}: {exc}"[:1000]
        with self._store.write.begin() as session:
            mine = session.execute(
                update(Export).where(*self._ours(job)).values(
                    status="queued", worker=None, lease_until=None, error=reason)
                .execution_options(synchronize_session=False)).rowcount == 1
            if mine:
                audit_in(session, principal=job.requester, tenant=job.tenant, role=job.role,
                         action="export_retry", target=job.id, outcome="error",
                         detail={"reason": reason, "attempt": job.attempt})

    # --- building the files --------------------------------------------------------------------

    def _build_aggregate(self, worker: _WorkerInfo, job: _Job, part: Path) -> _Built:
        q = job.query
        query = Query(product=q["product"], metric=q["metric"],
                      start=date.fromisoformat(q["start"]), end=date.fromisoformat(q["end"]),
                      level=q["level"], group_by=tuple(q["group_by"]),
                      filters=tuple(tuple(f) for f in q["filters"]))
        product = self._product(query.product)
        role = self._catalog.roles[job.role]
        dimensions = [d for d in query.group_by[1:] if d not in _GEO]
        geo = next((d for d in query.group_by[1:] if d in _GEO), "area")
        columns = ["tenant", "month", geo, *dimensions, "value", "lower", "upper",
                   "noise_scale", "status", "members", "n"]
        recorded = {r["tenant"]: r for r in job.releases}
        releases: list[dict] = []
        rows = 0
        with _writer(job.format, part, _aggregate_schema(columns), job) as writer:
            for i, tenant in enumerate(job.scope):
                actor = self._actor(job.requester, job.role, tenant, umbrella=job.umbrella)
                release = self._gate.release(actor, query)
                releases.append({"tenant": tenant, "release": release.id,
                                 "epsilon": self._charged(job, actor, recorded.get(tenant),
                                                            release)})
                writer.write([(tenant, *c.key, c.value, c.lower, c.upper, c.noise_scale,
                               c.status, ";".join(c.members), c.n) for c in release.cells])
                rows += len(release.cells)
                # Each tenant's release is on record before the next: a retry reuses it and
                # knows what this export paid for it.
                self._beat(job, worker, progress=(i + 1) / len(job.scope) * 0.99,
                           releases=releases)
        masking = self._aggregate_masking(role, product, query)
        return _Built(rows=rows, epsilon=sum(r["epsilon"] for r in releases), masking=masking,
                      releases=releases)

    def _charged(self, job: _Job, actor: Principal, recorded: dict | None, release) -> float:
        """ε this export paid for one tenant's release, across attempts."""
        if recorded is not None and recorded["release"] == release.id:
            return recorded["epsilon"]
        earlier = recorded["epsilon"] if recorded is not None else 0.0
        if not release.reused:
            return earlier + release.charged.value
        # Reused: stored before this export started (free for it), or stored for the same
        # identity by an earlier attempt of this export that stopped before recording it.
        with self._store.read() as session:
            stored = session.execute(select(ReleaseRow.created_at, ReleaseRow.principal).where(
                ReleaseRow.id == release.id)).first()
        ours = (stored is not None and stored.created_at >= job.started_at
                and stored.principal == actor.subject)
        return earlier + (release.epsilon.value if ours else 0.0)

    def _build_records(self, worker: _WorkerInfo, job: _Job, part: Path) -> _Built:
        q = job.query
        query = RecordQuery(product=q["product"], filters=tuple(tuple(f) for f in q["filters"]),
                            search=q["search"])
        actor = self._actor(job.requester, job.role, job.tenant, umbrella=False)
        rows = 0
        with stream_records(self._store, self._catalog, actor, query,
                            secret=self._secret, chunk_rows=worker.chunk_rows) as stream:
            schema = _record_schema(stream.columns, stream.treatments, self._catalog,
                                    query.product)
            with _writer(job.format, part, schema, job) as writer:
                for chunk in stream.chunks:
                    writer.write(chunk)
                    rows += len(chunk)
                    self._beat(job, worker, progress=rows / max(stream.total, 1) * 0.99)
            masking = stream.treatments
        return _Built(rows=rows, epsilon=0.0, masking=masking, releases=[])


def _sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
