"""Safe exports (SPEC D6): requests with a coded purpose, a background worker, signed links.

Reached as ``gate.exports``. Owns an export from its request to its download::

    request ──► pending ──(two approvals: umbrella only)──► queued ──► running ──► done | failed
                   └──► rejected

- **Request.** A product and a query (an aggregate ``Query`` or a ``RecordQuery``), CSV or
  Parquet, a purpose from the policy's coded list (mandatory) and an optional justification.
  It is checked now as the gate will check it at run time — role, level (aggregates only at a
  noisy level: the gate releases no exact aggregate), fields, window, and the ε budget through
  ``gate.preview`` — and refused early, spending nothing.
- **Worker** (``run_worker``: a thread of the dashboard, or ``veil export-worker``). It claims a
  queued job with a conditional UPDATE and holds it by a lease that every progress update
  renews. Aggregates go through ``gate.release`` (ε charged atomically and the release stored,
  so a retry reuses it at no cost); records through the role's field treatments, streamed in
  chunks, never all in memory. The file is written under a temporary name, renamed, and its
  SHA-256 recorded in the same transaction that marks the job done. A job whose worker died is
  claimed again once its lease has run out — at most ``max_attempts`` times, then failed.
- **Umbrella exports** (every tenant) run only after two distinct approvers with the
  approver role (never the requester) said yes; each tenant's part is released under a
  per-tenant system principal, so each tenant's own budget pays for it.
- **Download** only through a signed link: HMAC-SHA256 over (export id, requester, tenant,
  expiry) keyed by the deployment secret, valid until the link expires, and only for the
  signed-in requester. Expired files are deleted; their records stay.

Every step is audited (``export_request``, ``export_approve``, ``export_reject``,
``export_start``, ``export_retry``, ``export_finish``, ``export_fail``, ``export_download``,
``export_link``). It never writes a value that has not passed the gate, and never serves a file
to anyone but its requester within its link's lifetime.
"""

from __future__ import annotations

import base64
import calendar
import csv
import hashlib
import hmac
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from data.catalog import Catalog, ProductSpec, RoleSpec
from data.engine import Store
from data.errors import (AccessDenied, BudgetExhausted, InvalidInput, QueryRefused, StoreError,
                         VeilBug, VeilError, brief, checked_text)
from data.models import Export, ExportApproval, Registration
from data.models import Release as ReleaseRow

from privacy._audit import audit, audit_in
from privacy._records import RecordQuery, record_treatments, stream_records
from privacy._values import Epsilon, Principal, Query

__all__ = ["DownloadLink", "ExportFile", "ExportRequest", "ExportStatus", "Exports",
           "PendingApproval"]

_log = logging.getLogger("veil.exports")

FORMATS = {"csv": ("text/csv", "csv"), "parquet": ("application/vnd.apache.parquet", "parquet")}
#: An export is still under way in these states; the page keeps refreshing while one is.
ACTIVE = ("pending", "queued", "running")
_MAX_JUSTIFICATION = 2000
_LINK_CONTEXT = b"veil export download link v1"


# --- value objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRequest:
    """What to export, in which format, and why. ``purpose`` is a code from the policy."""

    query: Query | RecordQuery
    purpose: str
    format: str = "csv"
    justification: str = ""
    umbrella: bool = False

    def __post_init__(self):
        if not isinstance(self.query, (Query, RecordQuery)):
            raise InvalidInput(f"an export needs a Query (aggregates) or a RecordQuery "
                               f"(records), got {type(self.query).__name__}")
        if not isinstance(self.purpose, str) or not self.purpose.strip():
            raise InvalidInput("An export needs a purpose: choose one from the coded list of "
                               "purposes (the justification alone is not enough).")
        checked_text("the purpose", self.purpose, limit=64)
        if not isinstance(self.format, str) or self.format not in FORMATS:
            raise InvalidInput(f"export format must be one of {sorted(FORMATS)}, "
                               f"got {brief(self.format)}")
        if not isinstance(self.justification, str):
            raise InvalidInput(f"the justification must be text, got {brief(self.justification)}")
        if len(self.justification) > _MAX_JUSTIFICATION:
            raise InvalidInput(f"the justification is limited to {_MAX_JUSTIFICATION} "
                               f"characters, got {len(self.justification)}")
        if any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in self.justification):
            raise InvalidInput("the justification holds a NUL or an unpaired surrogate")
        if self.umbrella and isinstance(self.query, RecordQuery):
            raise InvalidInput("umbrella (cross-tenant) exports are aggregates only: records "
                               "never leave their tenant")

    @property
    def product(self) -> str:
        return self.query.product


@dataclass(frozen=True)
class ExportStatus:
    """An export as its requester (or the compliance page) sees it."""

    id: str
    tenant: str
    requester: str
    role: str
    product: str
    kind: str                       # aggregate | records
    summary: str                    # the query in words
    format: str
    purpose: str
    purpose_title: str
    justification: str
    umbrella: bool
    scope: tuple[str, ...]          # tenants the file covers
    status: str                     # pending | queued | running | done | failed | rejected
    progress: float                 # 0 … 1
    row_count: int | None
    digest: str | None              # SHA-256 of the delivered file
    size_bytes: int | None
    epsilon: Epsilon                # ε charged for this export (0 for records)
    masking: dict[str, str]         # field → treatment applied
    policy_version: str
    approvals: tuple[str, ...]      # approvers so far (umbrella)
    approvals_needed: int
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    link_expires_at: datetime | None
    purged: bool
    releases: tuple[str, ...] = field(default=())

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def file_name(self) -> str:
        return f"veil-{self.product}-{self.id[:8]}.{FORMATS[self.format][1]}"

    @property
    def mime(self) -> str:
        return FORMATS[self.format][0]


@dataclass(frozen=True)
class PendingApproval:
    """An umbrella export waiting for approvers (shown on the admin page's approvals queue)."""

    id: str
    requester: str
    tenant: str                     # the requester's tenant
    product: str
    query_summary: str
    purpose: str
    purpose_title: str
    justification: str
    scope: tuple[str, ...]
    created_at: datetime
    approvals: tuple[str, ...]      # who approved so far
    needed: int


@dataclass(frozen=True)
class DownloadLink:
    """A signed, time-bound link to an export's file, for its requester only."""

    export_id: str
    token: str
    expires_at: datetime            # naive UTC

    @property
    def path(self) -> str:
        """The app-relative URL: the Exports page verifies the token and offers the file."""
        return f"exports?download={self.token}"


@dataclass(frozen=True)
class ExportFile:
    export_id: str
    file_name: str
    mime: str
    content: bytes
    digest: str


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


# --- the exports part of the gate --------------------------------------------------------------


class Exports:
    def __init__(self, gate, store: Store, catalog: Catalog, *, ledger, secret: str,
                 clock: Callable[[], datetime]):
        self._gate, self._store, self._catalog = gate, store, catalog
        self._ledger, self._clock, self._secret = ledger, clock, secret
        # A key of its own, derived from the deployment secret: a link signature can never be
        # confused with a pseudonym keyed by the same secret.
        self._link_key = hmac.new(secret.encode(), _LINK_CONTEXT, hashlib.sha256).digest()

    @property
    def _policy(self):
        return self._catalog.policy.exports

    def _now(self) -> datetime:
        now = self._clock()
        return now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now

    # --- what a principal may ask for ----------------------------------------------------------

    def purposes(self, principal: Principal) -> dict[str, str]:
        """The coded purposes this principal's role may give: code → title."""
        return {code: p.title for code, p in self._policy.purposes_for(principal.role).items()}

    def products(self, principal: Principal) -> tuple[str, ...]:
        """Products this principal may export: metric sets for roles that may release
        aggregates (a noisy level and a budget: ``gate.aggregate_levels``), the role's
        operational lists (record exports)."""
        role = self._catalog.roles.get(principal.role)
        if role is None or "exports" not in role.pages:
            return ()
        # switched-off levels count: the page then says they are off rather than hiding the
        # role's metric sets
        aggregates = bool(self._gate.aggregate_levels(principal, switched_off=True))
        return tuple(p.id for p in self._catalog.products
                     if (p.kind == "metric_set" and aggregates)
                     or p.id in role.record_products)

    def may_request_umbrella(self, principal: Principal) -> bool:
        return principal.role in self._policy.umbrella_roles

    # --- requests ------------------------------------------------------------------------------

    def request(self, principal: Principal, query: Query | RecordQuery, *, purpose: str,
                format: str = "csv", justification: str = "",
                umbrella: bool = False) -> ExportStatus:
        """Queue an export of ``query`` (or, for an umbrella export, put it up for approval).

        ``purpose`` is a code from the policy's list and is mandatory. Refuses — spending
        nothing, saying why, and auditing the refusal — when the purpose is missing or not
        open to the role, the role may not export this, the query breaks a gate rule, or the
        budget cannot cover it now.
        """
        try:
            request = ExportRequest(query=query, purpose=purpose, format=format,
                                    justification=justification or "", umbrella=umbrella)
            return self._request(principal, request)
        except VeilError as exc:
            audit(self._store, principal=principal.subject, tenant=principal.tenant,
                  role=principal.role, action="export_request",
                  target=str(getattr(query, "product", "unknown")), outcome="refused",
                  detail={"reason": str(exc), "purpose": purpose, "umbrella": umbrella})
            raise

    def _request(self, principal: Principal, request: ExportRequest) -> ExportStatus:
        role = self._role(principal)
        if "exports" not in role.pages:
            raise AccessDenied(f"the {role.title} role cannot request exports")
        self._check_purpose(role, request.purpose)
        product = self._product(request.product)
        query = request.query
        if isinstance(query, Query):
            kind, scope = "aggregate", self._aggregate_scope(principal, role, request)
            stored_query = {"kind": kind, **query.canonical()}
            masking = self._aggregate_masking(role, product, query)
        else:
            kind, scope = "records", (principal.tenant,)
            masking = record_treatments(self._catalog, principal, query)
            stored_query = {"kind": kind, "product": query.product,
                            "filters": sorted([list(f) for f in query.filters]),
                            "search": query.search.strip()}
        now = self._now()
        row = Export(
            id=str(uuid.uuid4()), tenant_id=principal.tenant, requester=principal.subject,
            role=principal.role, product_id=product.id, kind=kind, query=stored_query,
            scope=list(scope), purpose=request.purpose,
            justification=request.justification.strip() or None, format=request.format,
            umbrella=request.umbrella, status="pending" if request.umbrella else "queued",
            progress=0.0, policy_version=self._catalog.version, epsilon=0.0, releases=[],
            masking=masking, attempts=0, created_at=now)
        with self._store.write.begin() as session:
            session.add(row)
            audit_in(session, principal=principal.subject, tenant=principal.tenant,
                     role=principal.role, action="export_request", target=row.id,
                     outcome="allowed",
                     detail={"product": product.id, "kind": kind, "purpose": request.purpose,
                             "format": request.format, "umbrella": request.umbrella,
                             "scope": list(scope), "query": stored_query})
        return self._to_status(row, approvals=())

    def _check_purpose(self, role: RoleSpec, purpose: str) -> None:
        allowed = self._policy.purposes_for(role.id)
        choices = ", ".join(f"{code} ({p.title})" for code, p in allowed.items()) or "none"
        if purpose not in self._policy.purposes:
            raise InvalidInput(f"unknown export purpose {brief(purpose)}; choose one of: {choices}")
        if purpose not in allowed:
            raise InvalidInput(f"the purpose {self._policy.purposes[purpose].title!r} is not "
                               f"open to the {role.title} role; choose one of: {choices}")

    def _aggregate_scope(self, principal: Principal, role: RoleSpec,
                         request: ExportRequest) -> tuple[str, ...]:
        """Check the query for every tenant it covers, and that each budget covers it now."""
        if not self._gate.aggregate_levels(principal, switched_off=True):
            raise AccessDenied(f"the {role.title} role exports operational lists only; "
                               f"aggregates leave Veil only with differential-privacy noise, "
                               f"which needs a noisy privacy level and a budget")
        if request.umbrella:
            if principal.role not in self._policy.umbrella_roles:
                raise AccessDenied(f"the {role.title} role cannot request umbrella "
                                   f"(cross-tenant) exports")
            scope = tuple(t.id for t in self._catalog.tenants)
        else:
            scope = (principal.tenant,)
        for tenant in scope:
            actor = self._actor(principal.subject, role.id, tenant, umbrella=request.umbrella)
            preview = self._gate.preview(actor, request.query)
            short_delta = preview.delta.value > preview.remaining_delta.value * (1 + 1e-9)
            if preview.epsilon.value > preview.remaining.value + 1e-9 or short_delta:
                status = self._gate.budget(actor, product=request.query.product)
                where = request.query.product + (f" (tenant {tenant}'s umbrella budget)"
                                                 if request.umbrella else "")
                raise BudgetExhausted(
                    requested=preview.epsilon.value, remaining=preview.remaining.value,
                    window=f"{status.window_start.isoformat()} – {status.window_end.isoformat()}",
                    product=where, delta_requested=preview.delta.value,
                    delta_remaining=(preview.remaining_delta.value if preview.delta.value
                                     else None))
        return scope

    def _aggregate_masking(self, role: RoleSpec, product: ProductSpec,
                           query: Query) -> dict[str, str]:
        used = list(query.group_by[1:]) + [d for d, _ in query.filters]
        masking = {}
        for dimension in used:
            try:
                spec = product.field(dimension)
            except KeyError:
                continue
            masking[dimension] = role.treatment[spec.classification]
        level = self._catalog.policy.levels[query.level]
        masking["value"] = (f"{level.id}: differential privacy, ε = {level.epsilon:g}; "
                            f"cells under k = {product.k} rolled up or suppressed"
                            if level.noisy else f"{level.id}: k = {product.k} threshold")
        return masking

    # --- what a requester sees -----------------------------------------------------------------

    def mine(self, principal: Principal, *, limit: int = 50) -> list[ExportStatus]:
        """The principal's own exports, newest first."""
        with self._store.read() as session:
            rows = session.scalars(
                select(Export).where(Export.tenant_id == principal.tenant,
                                     Export.requester == principal.subject)
                .order_by(Export.created_at.desc(), Export.id).limit(limit)).all()
            approvals = self._approvals(session, [r.id for r in rows if r.umbrella])
        return [self._to_status(r, approvals=approvals.get(r.id, ())) for r in rows]

    def status(self, principal: Principal, export_id: str) -> ExportStatus:
        """One of the principal's own exports; asking for anyone else's is refused and
        audited (an export id is not a capability)."""
        return self._own(principal, export_id, action="export_status")

    def _own(self, principal: Principal, export_id: str, *, action: str) -> ExportStatus:
        with self._store.read() as session:
            row = (session.get(Export, export_id)
                   if isinstance(export_id, str) and len(export_id) <= 64 else None)
            mine = row is not None and (row.tenant_id, row.requester) == (principal.tenant,
                                                                          principal.subject)
            approvals = self._approvals(session, [row.id]) if mine else {}
        if not mine:
            error = AccessDenied(f"you have no export {brief(export_id)}")
            audit(self._store, principal=principal.subject, tenant=principal.tenant,
                  role=principal.role, action=action, target=brief(export_id),
                  outcome="refused",
                  detail={"reason": str(error),
                          "owner_tenant": row.tenant_id if row is not None else None})
            raise error
        return self._to_status(row, approvals=approvals.get(row.id, ()))

    def link(self, principal: Principal, export_id: str) -> DownloadLink:
        """The signed download link of one of the principal's finished exports."""
        status = self._own(principal, export_id, action="export_link")
        if status.status != "done":
            raise QueryRefused(f"export {export_id[:8]} is {status.status}; a download link "
                               f"exists once it is done")
        if status.purged or status.link_expires_at is None or (
                self._now() >= status.link_expires_at):
            raise QueryRefused(f"the download link of export {export_id[:8]} expired at "
                               f"{status.link_expires_at:%Y-%m-%d %H:%M} UTC and its file was "
                               f"deleted; request the export again")
        expiry = _timestamp(status.link_expires_at)
        signature = self._sign(status.id, status.requester, status.tenant, expiry)
        return DownloadLink(export_id=status.id, token=f"{status.id}.{expiry}.{signature}",
                            expires_at=status.link_expires_at)

    def open_link(self, principal: Principal, token: str) -> ExportStatus:
        """Verify a download link for the signed-in principal; refusals are audited."""
        row = self._verify(principal, token, action="export_link")
        return self._to_status(row, approvals=())

    def download(self, principal: Principal, token: str) -> ExportFile:
        """The file behind a verified link, checked against its recorded digest; audited."""
        row = self._verify(principal, token, action="export_download")
        path = Path(row.file_path)
        try:
            content = path.read_bytes()
        except OSError as exc:
            self._refuse_download(principal, row.id, "file unreadable", str(exc))
            raise StoreError(f"the file of export {row.id[:8]} cannot be read on the server; "
                             f"request the export again") from exc
        digest = hashlib.sha256(content).hexdigest()
        if not hmac.compare_digest(digest, row.digest or ""):
            self._refuse_download(principal, row.id, "digest mismatch", digest)
            raise StoreError(f"the file of export {row.id[:8]} does not match its recorded "
                             f"digest, so it was not served; request the export again")
        audit(self._store, principal=principal.subject, tenant=principal.tenant,
              role=principal.role, action="export_download", target=row.id, outcome="allowed",
              detail={"digest": digest, "bytes": len(content), "rows": row.row_count})
        status = self._to_status(row, approvals=())
        return ExportFile(export_id=row.id, mime=status.mime, content=content, digest=digest,
                          file_name=status.file_name)

    def _refuse_download(self, principal: Principal, export_id: str, reason: str,
                         detail: str) -> None:
        audit(self._store, principal=principal.subject, tenant=principal.tenant,
              role=principal.role, action="export_download", target=export_id,
              outcome="refused", detail={"reason": reason, "detail": detail[:200]})

    def _sign(self, export_id: str, requester: str, tenant: str, expiry: int) -> str:
        message = "\n".join((export_id, requester, tenant, str(expiry))).encode()
        mac = hmac.new(self._link_key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _verify(self, principal: Principal, token: str, *, action: str) -> Export:
        invalid = AccessDenied("This download link is not valid: it may have been altered or "
                               "cut short. Open it again from your list on the Exports page.")
        export_id = "unknown"
        try:
            parts = token.split(".") if isinstance(token, str) else []
            if len(parts) != 3 or not parts[1].isdigit() or len(token) > 200:
                raise _Refusal("malformed", invalid)
            export_id, expiry, signature = parts[0], int(parts[1]), parts[2]
            with self._store.read() as session:
                row = session.get(Export, export_id)
            if row is None:
                raise _Refusal("unknown export", invalid)
            expected = self._sign(row.id, row.requester, row.tenant_id, expiry)
            if not hmac.compare_digest(expected.encode(), signature.encode()):
                raise _Refusal("bad signature", invalid)
            expires = datetime.fromtimestamp(expiry, UTC).replace(tzinfo=None)
            if self._now() >= expires:
                raise _Refusal("expired", AccessDenied(
                    f"This download link expired at {expires:%Y-%m-%d %H:%M} UTC. Request the "
                    f"export again on the Exports page."))
            if principal.tenant != row.tenant_id:
                raise _Refusal("other tenant", AccessDenied(
                    "This download link belongs to another tenant's export. A link works only "
                    "for the person who requested the export, signed in to their tenant."))
            if principal.subject != row.requester:
                raise _Refusal("other principal", AccessDenied(
                    "This download link was issued to another person. A link works only for "
                    "the person who requested the export."))
            if row.status != "done" or row.purged_at is not None or not row.file_path:
                raise _Refusal("not available", QueryRefused(
                    f"export {row.id[:8]} has no file to download (it is {row.status}"
                    f"{', and its file was deleted' if row.purged_at else ''})."))
            return row
        except _Refusal as refusal:
            audit(self._store, principal=principal.subject, tenant=principal.tenant,
                  role=principal.role, action=action, target=export_id, outcome="refused",
                  detail={"reason": refusal.reason, "token": _redact(token)})
            raise refusal.error from None

    # --- umbrella approvals ----------------------------------------------------------------------

    def pending_approvals(self, principal: Principal) -> list[PendingApproval]:
        """Umbrella exports this principal may approve now: empty unless it holds the approver
        role; never its own request or one it already decided."""
        if principal.role != self._policy.approver_role:
            return []
        with self._store.read() as session:
            rows = session.scalars(select(Export).where(Export.umbrella,
                                                        Export.status == "pending")
                                   .order_by(Export.created_at, Export.id)).all()
            decided = self._approvals(session, [r.id for r in rows], decision=None)
            approvals = self._approvals(session, [r.id for r in rows])
        out = []
        for row in rows:
            if row.requester == principal.subject or principal.subject in decided.get(row.id, ()):
                continue
            out.append(PendingApproval(
                id=row.id, requester=row.requester, tenant=row.tenant_id,
                product=row.product_id, query_summary=self._summary(row.kind, row.query),
                purpose=row.purpose, purpose_title=self._purpose_title(row.purpose),
                justification=row.justification or "", scope=tuple(row.scope),
                created_at=row.created_at, approvals=approvals.get(row.id, ()),
                needed=self._policy.approvals))
        return out

    def approve(self, principal: Principal, export_id: str) -> None:
        """Record this principal's approval; the export is queued once it has enough."""
        self._decide(principal, export_id, decision="approved", reason=None)

    def reject(self, principal: Principal, export_id: str, *, reason: str) -> None:
        """Reject an umbrella export; it will never run. ``reason`` is mandatory."""
        if not isinstance(reason, str) or not reason.strip():
            self._audit_decision(principal, export_id, "rejected", "refused",
                                 {"reason": "no reason given"})
            raise InvalidInput("Give a reason for rejecting the export; the requester sees it.")
        if len(reason) > _MAX_JUSTIFICATION:
            raise InvalidInput(f"the reason is limited to {_MAX_JUSTIFICATION} characters, "
                               f"got {len(reason)}")
        self._decide(principal, export_id, decision="rejected", reason=reason.strip())

    def _decide(self, principal: Principal, export_id: str, *, decision: str,
                reason: str | None) -> None:
        try:
            with self._store.write.begin() as session:
                # FOR UPDATE serialises concurrent approvals on PostgreSQL (SQLite's write
                # transaction already holds the lock), so two approvals always queue the job.
                row = session.get(Export, export_id, with_for_update=True)
                self._check_decision(principal, row, export_id)
                decided = session.execute(select(ExportApproval.approver,
                                                 ExportApproval.decision)
                                          .where(ExportApproval.export_id == row.id)).all()
                if principal.subject in {a for a, _ in decided}:
                    raise QueryRefused(f"you have already decided on export {row.id[:8]}; "
                                       f"it needs {self._policy.approvals} different approvers")
                now = self._now()
                session.add(ExportApproval(export_id=row.id, approver=principal.subject,
                                           role=principal.role, decision=decision,
                                           reason=reason, at=now))
                approvals = 1 + sum(1 for _, d in decided if d == "approved")
                detail = {"approvals": approvals if decision == "approved" else None,
                          "needed": self._policy.approvals, "requester": row.requester,
                          "tenant": row.tenant_id}
                if decision == "rejected":
                    detail["reason"] = reason
                    self._set_status(session, row.id, "pending", status="rejected",
                                     finished_at=now,
                                     error=f"rejected by {principal.subject}: {reason}")
                elif approvals >= self._policy.approvals:
                    self._set_status(session, row.id, "pending", status="queued")
                    detail["queued"] = True
                self._audit_decision(principal, row.id, decision, "allowed", detail,
                                     session=session)
        except IntegrityError:
            error = QueryRefused(f"you have already decided on export {export_id[:8]}")
            self._audit_decision(principal, export_id, decision, "refused",
                                 {"reason": str(error)})
            raise error from None
        except VeilError as exc:
            self._audit_decision(principal, export_id, decision, "refused",
                                 {"reason": str(exc)})
            raise

    def _check_decision(self, principal: Principal, row: Export | None, export_id: str) -> None:
        approver = self._catalog.roles[self._policy.approver_role].title
        if principal.role != self._policy.approver_role:
            raise AccessDenied(f"only a {approver} can approve or reject umbrella exports")
        if row is None or not row.umbrella:
            raise InvalidInput(f"there is no umbrella export {brief(export_id)}")
        if row.requester == principal.subject:
            raise AccessDenied("you requested this export, so you cannot approve or reject it; "
                               f"two other {approver}s must approve it")
        if row.status != "pending":
            raise QueryRefused(f"export {row.id[:8]} is {row.status}: only pending umbrella "
                               f"exports can be approved or rejected")

    def _audit_decision(self, principal: Principal, export_id: str, decision: str, outcome: str,
                        detail: dict, *, session=None) -> None:
        action = "export_approve" if decision == "approved" else "export_reject"
        entry = dict(principal=principal.subject, tenant=principal.tenant, role=principal.role,
                     action=action, target=export_id, outcome=outcome, detail=detail)
        if session is not None:
            audit_in(session, **entry)
        else:
            audit(self._store, **entry)

    # --- the worker ----------------------------------------------------------------------------

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

    # --- helpers -------------------------------------------------------------------------------

    def _actor(self, requester: str, role: str, tenant: str, *, umbrella: bool) -> Principal:
        """Who a release or read runs as: the requester, or a tenant's umbrella identity."""
        if umbrella:
            # One identity per tenant and role: each tenant's budget pays for its own part.
            return Principal(subject=f"umbrella:{role}@{tenant}",
                             display_name=f"Umbrella exports ({role})", role=role,
                             tenant=tenant, source="system")
        return Principal(subject=requester, display_name=requester, role=role, tenant=tenant,
                         source="system")

    def _role(self, principal: Principal) -> RoleSpec:
        role = self._catalog.roles.get(principal.role)
        if role is None:
            raise AccessDenied(f"role {principal.role!r} is not defined in the policy")
        return role

    def _product(self, product_id: str) -> ProductSpec:
        try:
            return self._catalog.product(product_id)
        except VeilError:
            raise QueryRefused(f"unknown data product {product_id!r}") from None

    def _purpose_title(self, code: str) -> str:
        purpose = self._policy.purposes.get(code)
        return purpose.title if purpose else code

    def _set_status(self, session, export_id: str, expected: str, **values) -> None:
        changed = session.execute(
            update(Export).where(Export.id == export_id, Export.status == expected)
            .values(**values).execution_options(synchronize_session=False)).rowcount
        if changed != 1:
            raise VeilBug(f"export {export_id} left status {expected!r} under a row lock")

    def _approvals(self, session, ids: Iterable[str], *,
                   decision: str | None = "approved") -> dict[str, tuple[str, ...]]:
        ids = list(ids)
        if not ids:
            return {}
        statement = (select(ExportApproval.export_id, ExportApproval.approver)
                     .where(ExportApproval.export_id.in_(ids))
                     .order_by(ExportApproval.at, ExportApproval.id))
        if decision is not None:
            statement = statement.where(ExportApproval.decision == decision)
        out: dict[str, tuple[str, ...]] = {}
        for export_id, approver in session.execute(statement):
            out[export_id] = out.get(export_id, ()) + (approver,)
        return out

    def _summary(self, kind: str, query: dict) -> str:
        try:
            product = self._catalog.product(query["product"])
        except VeilError:
            return str(query.get("product"))
        if kind == "records":
            filters = ", ".join(f"{k} = {v}" for k, v in query["filters"]) or "all records"
            search = f", search {query['search']!r}" if query.get("search") else ""
            return f"{product.title}: {filters}{search}"
        try:
            metric = product.metric(query["metric"]).title
        except KeyError:
            metric = query["metric"]
        by = " × ".join(query["group_by"])
        filters = "".join(f", {k} = {v}" for k, v in query["filters"])
        return (f"{metric} ({product.title}), {query['start'][:7]} to {query['end'][:7]}, "
                f"by {by}{filters}, {query['level']}")

    def _to_status(self, row: Export, *, approvals: tuple[str, ...]) -> ExportStatus:
        return ExportStatus(
            id=row.id, tenant=row.tenant_id, requester=row.requester, role=row.role,
            product=row.product_id, kind=row.kind, summary=self._summary(row.kind, row.query),
            format=row.format, purpose=row.purpose,
            purpose_title=self._purpose_title(row.purpose),
            justification=row.justification or "", umbrella=row.umbrella,
            scope=tuple(row.scope or ()), status=row.status, progress=row.progress or 0.0,
            row_count=row.row_count, digest=row.digest, size_bytes=row.size_bytes,
            epsilon=Epsilon(row.epsilon or 0.0), masking=dict(row.masking or {}),
            policy_version=row.policy_version, approvals=approvals,
            approvals_needed=self._policy.approvals if row.umbrella else 0,
            attempts=row.attempts or 0, error=row.error, created_at=row.created_at,
            started_at=row.started_at, finished_at=row.finished_at,
            link_expires_at=row.link_expires_at, purged=row.purged_at is not None,
            releases=tuple(r["release"] for r in (row.releases or ())))


class _Refusal(Exception):
    def __init__(self, reason: str, error: VeilError):
        super().__init__(reason)
        self.reason, self.error = reason, error


@dataclass(frozen=True)
class _WorkerInfo:
    id: str
    directory: Path
    lease: timedelta
    chunk_rows: int


_GEO = ("state", "district", "h3_cell")


def _timestamp(moment: datetime) -> int:
    return calendar.timegm(moment.timetuple())


def _redact(token) -> str:
    """Enough of a token to recognise it in the audit log, never enough to use it."""
    return str(token)[:48]


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


# --- file writers: CSV, or Parquet through pyarrow -------------------------------------------


def _aggregate_schema(columns: list[str]) -> list[tuple[str, str]]:
    numeric = {"value", "lower", "upper", "noise_scale", "n"}
    return [(c, "float" if c in numeric else "string") for c in columns]


def _record_schema(columns: tuple[str, ...], treatments: dict[str, str], catalog: Catalog,
                   product_id: str) -> list[tuple[str, str]]:
    """Column types: a field shown as stored keeps its type; a treated one is text."""
    kinds = {int: "int", float: "float", date: "date", datetime: "timestamp"}
    table = {"registrations": Registration}[catalog.product(product_id).store].__table__
    out = []
    for name in columns:
        kind = "string"
        if treatments[name] == "show":
            kind = kinds.get(table.c[name].type.python_type, "string")
        out.append((name, kind))
    return out


@contextmanager
def _writer(format: str, path: Path, schema: list[tuple[str, str]], job: _Job) -> Iterator:
    writer = (_CsvWriter if format == "csv" else _ParquetWriter)(path, schema, job)
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
    writer.close()


class _CsvWriter:
    def __init__(self, path: Path, schema: list[tuple[str, str]], job: _Job):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._handle = open(fd, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._handle)
        self._csv.writerow([name for name, _ in schema])

    def write(self, rows: list[tuple]) -> None:
        self._csv.writerows(rows)

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def abort(self) -> None:
        self._handle.close()


class _ParquetWriter:
    def __init__(self, path: Path, schema: list[tuple[str, str]], job: _Job):
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"string": pa.string(), "float": pa.float64(), "int": pa.int64(),
                 "date": pa.date32(), "timestamp": pa.timestamp("s")}
        self._pa = pa
        self._schema = pa.schema([(name, types[kind]) for name, kind in schema]).with_metadata(
            {"veil.export": job.id, "veil.product": job.product, "veil.tenant": job.tenant})
        self._path = path
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb"):
            pass
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")

    def write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        columns = list(zip(*rows))
        arrays = [self._pa.array(list(column), type=spec.type)
                  for column, spec in zip(columns, self._schema)]
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self) -> None:
        self._writer.close()
        with self._path.open("rb") as handle:
            os.fsync(handle.fileno())

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # the file is discarded anyway
            pass
