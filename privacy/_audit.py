"""Audit log writes. Append-only: this module only inserts.

``audit`` fails loudly: an action that must be on record is not done without its entry.
``audit_best_effort`` is for recording a failure that is already being raised: when the store
itself is down, its own failure must not mask the one it records.
"""

from __future__ import annotations

import logging
import math
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


#: the longest text an audit entry keeps of any one value (a refusal may quote an input)
_KEEP = 500


def audit_in(session: Session, *, principal: str, tenant: str | None, role: str | None,
             action: str, target: str, outcome: str, detail: dict | None = None) -> None:
    session.add(AuditEntry(at=utcnow(), tenant_id=tenant, principal=storable(principal, 256),
                           role=role, action=action, target=storable(target, 256),
                           outcome=outcome, detail=storable(detail or {})))


def storable(value, keep: int = _KEEP):
    """``value`` as every store takes it in text and JSON: NUL and unpaired surrogates escaped
    (PostgreSQL refuses both), bytes and other objects as their text, every string cut to at
    most ``keep`` characters, saying how long the whole was. No entry is lost to its content."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN or infinity
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {storable(str(k), 64): storable(v, keep) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v, keep) for v in value[:100]]
    text = value if isinstance(value, str) else repr(value)
    size = len(text)
    text = text[:4 * keep].replace("\x00", "\\x00")
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > keep:
        suffix = f"… ({size:,} characters)"
        text = text[:keep - len(suffix)] + suffix
    return text


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
