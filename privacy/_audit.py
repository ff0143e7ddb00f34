"""Audit log writes. Append-only: this module only inserts."""

from __future__ import annotations

from sqlalchemy.orm import Session

from data.bootstrap import utcnow
from data.engine import Store
from data.models import AuditEntry

__all__ = ["audit", "audit_in"]


def audit_in(session: Session, *, principal: str, tenant: str | None, role: str | None,
             action: str, target: str, outcome: str, detail: dict | None = None) -> None:
    session.add(AuditEntry(at=utcnow(), tenant_id=tenant, principal=principal, role=role,
                           action=action, target=target[:256], outcome=outcome,
                           detail=detail or {}))


def audit(store: Store, **kwargs) -> None:
    with store.write.begin() as session:
        audit_in(session, **kwargs)
