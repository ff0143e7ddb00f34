"""The three logs a compliance officer pages through, scoped to its tenant in SQL: the audit
log, the release log (who, when, what, under which policy, ε, digest — never the cells) and the
export records (what, who, why, which policy, with every reviewer's decision).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from data.models import AuditEntry, Export, ExportApproval
from data.models import Release as ReleaseRow

from privacy.compliance._base import _between, _detail, _Reads
from privacy.compliance._filters import AuditFilter, ExportFilter, LogPage, ReleaseFilter
from privacy.core import Principal

__all__ = ["AuditRecord", "ExportRecord", "ReleaseRecord", "_Logs"]


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    principal: str
    role: str | None
    action: str
    target: str
    outcome: str
    detail: str          # compact JSON


@dataclass(frozen=True)
class ReleaseRecord:
    id: str
    at: datetime
    principal: str
    role: str
    product: str
    metric: str
    level: str
    window: str          # "2026-01 – 2026-10"
    group_by: tuple[str, ...]
    filters: tuple[tuple[str, str], ...]
    policy_version: str
    data_version: int
    mechanism: str
    epsilon: float       # what the release cost when it was computed (0: all periods reused)
    digest: str
    published: bool


@dataclass(frozen=True)
class ExportRecord:
    id: str
    requested_at: datetime
    finished_at: datetime | None
    requester: str
    product: str
    purpose: str
    justification: str | None
    format: str
    umbrella: bool
    status: str
    row_count: int | None
    epsilon: float
    policy_version: str
    digest: str | None
    approvers: tuple[str, ...]
    error: str | None


class _Logs(_Reads):
    def audit_log(self, principal: Principal,
                  filters: AuditFilter = AuditFilter()) -> LogPage[AuditRecord]:
        """A page of the tenant's audit log."""
        with self._view(principal, "audit_log", _detail(filters)) as seen:
            where = [AuditEntry.tenant_id == principal.tenant,
                     *_between(AuditEntry.at, filters.start, filters.end)]
            if filters.action:
                where.append(AuditEntry.action.startswith(filters.action.lower(),
                                                          autoescape=True))
            if filters.outcome:
                where.append(AuditEntry.outcome == filters.outcome)
            if filters.principal:
                where.append(func.lower(AuditEntry.principal).startswith(
                    filters.principal.lower(), autoescape=True))
            columns = (AuditEntry.id, AuditEntry.at, AuditEntry.principal, AuditEntry.role,
                       AuditEntry.action, AuditEntry.target, AuditEntry.outcome,
                       AuditEntry.detail)
            with self._store.read() as session:
                total, rows = _page(session, AuditEntry, columns, where, filters,
                                    order=(AuditEntry.at.desc(), AuditEntry.id.desc()))
            records = tuple(AuditRecord(
                id=r.id, at=r.at, principal=r.principal, role=r.role, action=r.action,
                target=r.target, outcome=r.outcome,
                detail=json.dumps(r.detail or {}, sort_keys=True, separators=(",", ":"),
                                  default=str)) for r in rows)
            seen.update(rows=len(records), total=total)
        return LogPage(rows=records, total=total, page=filters.page, page_size=filters.page_size)

    def release_log(self, principal: Principal,
                    filters: ReleaseFilter = ReleaseFilter()) -> LogPage[ReleaseRecord]:
        """A page of the tenant's release log: who, when, what, under which policy, ε, digest."""
        with self._view(principal, "release_log", _detail(filters)) as seen:
            where = [ReleaseRow.tenant_id == principal.tenant,
                     *_between(ReleaseRow.created_at, filters.start, filters.end)]
            if filters.product:
                where.append(ReleaseRow.product_id == filters.product)
            if filters.principal:
                where.append(func.lower(ReleaseRow.principal).startswith(
                    filters.principal.lower(), autoescape=True))
            if filters.published is not None:
                where.append(ReleaseRow.published == filters.published)
            # Never the cells: the log says what was released, not the values again.
            columns = (ReleaseRow.id, ReleaseRow.created_at, ReleaseRow.principal,
                       ReleaseRow.role, ReleaseRow.product_id, ReleaseRow.query,
                       ReleaseRow.policy_version, ReleaseRow.data_version,
                       ReleaseRow.mechanism, ReleaseRow.epsilon, ReleaseRow.digest,
                       ReleaseRow.published)
            with self._store.read() as session:
                total, rows = _page(session, ReleaseRow, columns, where, filters,
                                    order=(ReleaseRow.created_at.desc(), ReleaseRow.id))
            records = tuple(_release_record(r) for r in rows)
            seen.update(rows=len(records), total=total)
        return LogPage(rows=records, total=total, page=filters.page, page_size=filters.page_size)

    def export_records(self, principal: Principal,
                       filters: ExportFilter = ExportFilter()) -> LogPage[ExportRecord]:
        """A page of the tenant's export records: what, who, why, which policy, approvals."""
        with self._view(principal, "export_records", _detail(filters)) as seen:
            where = [Export.tenant_id == principal.tenant,
                     *_between(Export.created_at, filters.start, filters.end)]
            if filters.status:
                where.append(Export.status == filters.status)
            if filters.requester:
                where.append(func.lower(Export.requester).startswith(
                    filters.requester.lower(), autoescape=True))
            # Only the columns of the original schema: later migrations may add more.
            columns = (Export.id, Export.created_at, Export.finished_at, Export.requester,
                       Export.product_id, Export.purpose, Export.justification, Export.format,
                       Export.umbrella, Export.status, Export.row_count, Export.epsilon,
                       Export.policy_version, Export.digest, Export.error)
            with self._store.read() as session:
                total, rows = _page(session, Export, columns, where, filters,
                                    order=(Export.created_at.desc(), Export.id))
                approvers: dict[str, list[str]] = defaultdict(list)
                if rows:
                    for export_id, approver, decision in session.execute(
                            select(ExportApproval.export_id, ExportApproval.approver,
                                   ExportApproval.decision)
                            .where(ExportApproval.export_id.in_([r.id for r in rows]))
                            .order_by(ExportApproval.at, ExportApproval.id)):
                        # a reviewer's decision is part of the record: a rejection is no approval
                        approvers[export_id].append(f"{approver} ({decision})")
            records = tuple(ExportRecord(
                id=r.id, requested_at=r.created_at, finished_at=r.finished_at,
                requester=r.requester, product=r.product_id, purpose=r.purpose,
                justification=r.justification, format=r.format, umbrella=bool(r.umbrella),
                status=r.status, row_count=r.row_count, epsilon=float(r.epsilon or 0.0),
                policy_version=r.policy_version, digest=r.digest,
                approvers=tuple(approvers.get(r.id, ())), error=r.error) for r in rows)
            seen.update(rows=len(records), total=total)
        return LogPage(rows=records, total=total, page=filters.page, page_size=filters.page_size)


def _release_record(row) -> ReleaseRecord:
    q = row.query or {}
    return ReleaseRecord(
        id=row.id, at=row.created_at, principal=row.principal, role=row.role,
        product=row.product_id, metric=str(q.get("metric", "")), level=str(q.get("level", "")),
        window=f"{str(q.get('start', ''))[:7]} – {str(q.get('end', ''))[:7]}",
        group_by=tuple(q.get("group_by", ())),
        filters=tuple(tuple(f) for f in q.get("filters", ())),
        policy_version=row.policy_version, data_version=row.data_version,
        mechanism=row.mechanism, epsilon=float(row.epsilon), digest=row.digest,
        published=bool(row.published))


def _page(session, model, columns: tuple, where: list, filters, *, order: tuple) -> tuple:
    """Every match of ``where`` counted, and the filter's page of ``columns`` in ``order``."""
    total = session.scalar(select(func.count()).select_from(model).where(*where))
    rows = session.execute(
        select(*columns).where(*where).order_by(*order)
        .limit(filters.page_size).offset((filters.page - 1) * filters.page_size)).all()
    return total, rows
