"""Consent (SPEC B4): grants and withdrawals per subject and vertical, and their consequences.

Owns the consent history (``consent_events``, append-only), the current state
(``subject_consent``) and what a change sets in motion: the months holding the subject's events
are marked for rebuild in the same transaction, and a withdrawal rebuilds the tenant's cubes of
that vertical at once (``withdraw_consent``), so the subject is excluded from every later
release and the gate's "withdrawal not yet applied" check clears.

Ingestion admits an event only when the subject's consent for the vertical is "granted" and was
granted no later than the event happened; a grant may therefore be dated back (consent signed on
paper before the data is loaded), but a withdrawal is always recorded at the time it is made:
backdating it could hide it from the gate's check. It never stores a raw subject id: callers
pass a pseudonym (``data.pseudonym.pseudonym(secret, raw_id)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.catalog import Catalog
from data.engine import Store
from data.errors import InvalidInput, StoreError
from data.materialize import JobResult, materialize
from data.models import VERTICAL_EVENT_MODELS, ConsentEvent, CubePending, SubjectConsent

__all__ = ["STATUSES", "VERTICALS", "ConsentChange", "grant_consent", "record_consent",
           "withdraw_consent"]

STATUSES = ("granted", "withdrawn")
VERTICALS = tuple(VERTICAL_EVENT_MODELS)
_PSEUDONYM = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class ConsentChange:
    """The outcome of a grant or withdrawal: whether it changed anything, the cube months it
    marked for rebuild per product, and (for a withdrawal) the rebuilds that ran."""

    tenant: str
    pseudonym: str
    vertical: str
    status: str
    at: datetime
    changed: bool
    months: Mapping[str, tuple[date, ...]] = field(default_factory=lambda: MappingProxyType({}))
    rebuilt: tuple[JobResult, ...] = ()


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(f"consent time {moment.isoformat()} has no time zone; give one "
                           f"(e.g. 2025-03-04T09:00:00+02:00)")
    return moment.astimezone(UTC).replace(tzinfo=None)


def record_consent(session: Session, catalog: Catalog, *, tenant: str, pseudonym: str,
                   vertical: str, status: str, at: datetime | None = None) -> ConsentChange:
    """Record a grant or withdrawal inside the caller's transaction.

    A repeat of the current status changes nothing. ``at`` (aware) dates a grant; it must not
    be earlier than the subject's last change for the vertical, nor in the future. Withdrawals
    take no ``at``: they are recorded now.
    """
    known = [t.id for t in catalog.tenants]
    if tenant not in known:
        raise InvalidInput(f"unknown tenant {tenant!r}; known: {', '.join(known)}")
    if vertical not in VERTICALS:
        raise InvalidInput(f"unknown vertical {vertical!r}; choose one of {', '.join(VERTICALS)}")
    if status not in STATUSES:
        raise InvalidInput(f"consent status must be one of {', '.join(STATUSES)}, got "
                           f"{status!r}")
    if not _PSEUDONYM.fullmatch(pseudonym):
        raise InvalidInput("a subject pseudonym is 32 lower-case hex characters; pass the raw "
                           "id through data.pseudonym.pseudonym(secret, raw_id) first")
    now = _utcnow()
    if status == "withdrawn" and at is not None:
        raise InvalidInput("a withdrawal is recorded at the time it is made and cannot be "
                           "dated back; leave out the time")
    when = now if at is None else _naive_utc(at)
    if when > now:
        raise InvalidInput(f"consent time {when:%Y-%m-%d %H:%M} UTC is in the future")
    current = session.scalar(select(SubjectConsent).where(
        SubjectConsent.tenant_id == tenant, SubjectConsent.pseudonym == pseudonym,
        SubjectConsent.vertical == vertical).with_for_update())
    if current is not None and current.status == status:
        return ConsentChange(tenant=tenant, pseudonym=pseudonym, vertical=vertical,
                             status=status, at=current.changed_at, changed=False)
    if current is not None and when < current.changed_at:
        raise InvalidInput(f"consent history is append-only: the last change was at "
                           f"{current.changed_at:%Y-%m-%d %H:%M} UTC, after {when:%Y-%m-%d %H:%M}")
    session.add(ConsentEvent(tenant_id=tenant, pseudonym=pseudonym, vertical=vertical,
                             status=status, at=when))
    if current is None:
        session.add(SubjectConsent(tenant_id=tenant, pseudonym=pseudonym, vertical=vertical,
                                   status=status, changed_at=when))
    else:
        current.status, current.changed_at = status, when
    months = _mark_subject_months(session, catalog, tenant=tenant, pseudonym=pseudonym,
                                  vertical=vertical, now=now)
    session.flush()
    return ConsentChange(tenant=tenant, pseudonym=pseudonym, vertical=vertical, status=status,
                         at=when, changed=True, months=MappingProxyType(months))


def _mark_subject_months(session: Session, catalog: Catalog, *, tenant: str, pseudonym: str,
                         vertical: str, now: datetime) -> dict[str, tuple[date, ...]]:
    """Mark every month holding the subject's events in the vertical's products."""
    model = VERTICAL_EVENT_MODELS[vertical]
    products = [p.id for p in catalog.products
                if p.kind == "metric_set" and p.vertical == vertical]
    marked: dict[str, tuple[date, ...]] = {}
    rows = session.execute(select(model.product_id, model.month).distinct().where(
        model.tenant_id == tenant, model.pseudonym == pseudonym,
        model.product_id.in_(products))).all()
    for product, month in sorted(rows):
        marked.setdefault(product, ())
        marked[product] += (month,)
        session.add(CubePending(tenant_id=tenant, product_id=product, month=month,
                                reason="consent", marked_at=now))
    return marked


def grant_consent(store: Store, catalog: Catalog, *, tenant: str, pseudonym: str,
                  vertical: str, at: datetime | None = None) -> ConsentChange:
    """Grant consent in its own transaction. Cubes pick up a re-grant at the next
    (incremental) materialisation; a grant never needs an urgent rebuild."""
    try:
        with store.write.begin() as session:
            return record_consent(session, catalog, tenant=tenant, pseudonym=pseudonym,
                                  vertical=vertical, status="granted", at=at)
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot record the consent grant: {exc}") from exc


def withdraw_consent(store: Store, catalog: Catalog, *, tenant: str, pseudonym: str,
                     vertical: str) -> ConsentChange:
    """Withdraw consent now and rebuild the tenant's cubes of the vertical before returning.

    Every metric product of the vertical is materialised incrementally (the months holding
    the subject's events are rebuilt without them; the others are confirmed current), so the
    withdrawal is applied to every later release as soon as this returns.
    """
    try:
        with store.write.begin() as session:
            change = record_consent(session, catalog, tenant=tenant, pseudonym=pseudonym,
                                    vertical=vertical, status="withdrawn")
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot record the consent withdrawal: {exc}") from exc
    if not change.changed:
        return change
    rebuilt: list[JobResult] = []
    for product in catalog.products:
        if product.kind == "metric_set" and product.vertical == vertical:
            rebuilt.extend(materialize(store, catalog, tenant=tenant, product=product.id,
                                       incremental=True))
    return ConsentChange(tenant=change.tenant, pseudonym=change.pseudonym,
                         vertical=change.vertical, status=change.status, at=change.at,
                         changed=True, months=change.months, rebuilt=tuple(rebuilt))
