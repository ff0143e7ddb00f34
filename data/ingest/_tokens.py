"""Collector sources and their bearer tokens (for ``POST /api/v1/events``).

Owns issuing, listing, revoking and checking per-source tokens. A token is 256 random bits shown
once, when issued; only its SHA-256 is stored, so a copy of the database does not let anyone
post events. A source belongs to one tenant and may post only the products it was issued for.
It never returns or logs a token after issuing it, and never accepts a revoked one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from data.catalog import Catalog
from data.errors import InvalidInput
from data.models import IngestSource

__all__ = ["SourceInfo", "add_source", "authenticate", "list_sources", "revoke_source"]

_PREFIX = "veil_"
_HINT_CHARS = 12
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class SourceInfo:
    """A source as operators see it: never the token, only its first characters."""

    tenant: str
    name: str
    products: tuple[str, ...]
    token_hint: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _info(row: IngestSource) -> SourceInfo:
    return SourceInfo(tenant=row.tenant_id, name=row.name, products=tuple(row.products),
                      token_hint=row.token_hint, created_at=row.created_at,
                      revoked_at=row.revoked_at, last_used_at=row.last_used_at)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def add_source(session: Session, catalog: Catalog, *, tenant: str, name: str,
               products: tuple[str, ...] | list[str]) -> tuple[SourceInfo, str]:
    """Issue a token for a new source; returns the source and the token (shown only now)."""
    known = [t.id for t in catalog.tenants]
    if tenant not in known:
        raise InvalidInput(f"unknown tenant {tenant!r}; known: {', '.join(known)}")
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"source name must be 1-64 lower-case letters, digits, '.', '_' or "
                           f"'-', starting with a letter or digit; got {name!r}")
    if not products:
        raise InvalidInput("a source needs at least one product it may post (--product)")
    event_products = {p.id for p in catalog.products if p.kind == "metric_set"}
    for product in products:
        if product not in event_products:
            raise InvalidInput(f"{product!r} is not an event product; choose from: "
                               f"{', '.join(sorted(event_products))}")
    existing = session.scalar(select(IngestSource).where(IngestSource.tenant_id == tenant,
                                                         IngestSource.name == name))
    if existing is not None:
        state = "revoked" if existing.revoked_at else "active"
        raise InvalidInput(f"tenant {tenant} already has a source named {name!r} ({state}); "
                           f"names are never reused, choose another")
    token = _PREFIX + secrets.token_urlsafe(32)
    row = IngestSource(tenant_id=tenant, name=name, products=sorted(set(products)),
                       token_hash=_digest(token), token_hint=token[:_HINT_CHARS],
                       created_at=_utcnow())
    session.add(row)
    session.flush()
    return _info(row), token


def revoke_source(session: Session, *, tenant: str, name: str) -> SourceInfo:
    """Revoke a source's token at once; its history stays. Revoking twice is refused."""
    row = session.scalar(select(IngestSource).where(IngestSource.tenant_id == tenant,
                                                    IngestSource.name == name))
    if row is None:
        raise InvalidInput(f"tenant {tenant} has no source named {name!r}")
    if row.revoked_at is not None:
        raise InvalidInput(f"source {name!r} of tenant {tenant} was already revoked at "
                           f"{row.revoked_at:%Y-%m-%d %H:%M} UTC")
    row.revoked_at = _utcnow()
    session.flush()
    return _info(row)


def list_sources(session: Session, *, tenant: str | None = None) -> list[SourceInfo]:
    query = select(IngestSource).order_by(IngestSource.tenant_id, IngestSource.name)
    if tenant is not None:
        query = query.where(IngestSource.tenant_id == tenant)
    return [_info(row) for row in session.scalars(query)]


def authenticate(session: Session, token: str) -> SourceInfo | None:
    """The active source a token belongs to, or None (unknown, malformed or revoked)."""
    if not token.startswith(_PREFIX) or len(token) > 128:
        return None
    row = session.scalar(select(IngestSource).where(IngestSource.token_hash == _digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    # The lookup is by hash, so this comparison only guards against a hash-index surprise.
    if not secrets.compare_digest(row.token_hash, _digest(token)):
        return None
    return _info(row)


def mark_used(session: Session, *, tenant: str, name: str) -> None:
    session.execute(update(IngestSource)
                    .where(IngestSource.tenant_id == tenant, IngestSource.name == name)
                    .values(last_used_at=_utcnow()))
