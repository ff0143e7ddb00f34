"""Audit log writes. Append-only: this module only inserts.

``audit`` fails loudly: an action that must be on record is not done without its entry.
``audit_best_effort`` is for recording a failure that is already being raised: when the store
itself is down, its own failure must not mask the one it records.
"""

from __future__ import annotations

import logging
import sqlite3

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.bootstrap import utcnow
from data.engine import Store
from data.models import AuditEntry

__all__ = ["STORE_ERRORS", "audit", "audit_best_effort", "audit_in"]

_log = logging.getLogger(__name__)


def _store_errors() -> tuple[type[Exception], ...]:
    errors: tuple[type[Exception], ...] = (SQLAlchemyError, sqlite3.Error)
    try:
        import psycopg
    except ImportError:  # an embedded-only installation has no PostgreSQL driver
        return errors
    return (*errors, psycopg.Error)


#: What a store or its driver raises: SQLAlchemy's wrapped errors and, should one escape
#: unwrapped, the drivers' own. Translated into StoreError at the gate's boundary.
STORE_ERRORS = _store_errors()


def audit_in(session: Session, *, principal: str, tenant: str | None, role: str | None,
             action: str, target: str, outcome: str, detail: dict | None = None) -> None:
    session.add(AuditEntry(at=utcnow(), tenant_id=tenant, principal=principal, role=role,
                           action=action, target=target[:256], outcome=outcome,
                           detail=detail or {}))


def audit(store: Store, **kwargs) -> None:
    with store.write.begin() as session:
        audit_in(session, **kwargs)


def audit_best_effort(store: Store, **kwargs) -> bool:
    """Write an audit entry unless the store fails too; True if it was written."""
    try:
        audit(store, **kwargs)
    except STORE_ERRORS as exc:
        _log.warning("could not audit %s %s (%s): %s", kwargs.get("action"),
                     kwargs.get("outcome"), type(exc).__name__, kwargs.get("detail"))
        return False
    return True
