"""Export requests: what a principal may export, and the checks a request passes before it is
queued — role, coded purpose, the query for every tenant it covers, and the ε budget now
(``gate.preview``), refusing early and spending nothing. Also a requester's own list and the
status of one of its exports (anyone else's is refused and audited: an id is not a
capability).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from data.catalog import RoleSpec
from data.errors import AccessDenied, BudgetExhausted, InvalidInput, VeilError, brief
from data.models import Export

from privacy.core import Principal, Query, RecordQuery, audit, audit_in, record_treatments
from privacy.exports._base import _ExportsBase
from privacy.exports._values import ExportRequest, ExportStatus

__all__ = ["_Requests"]


class _Requests(_ExportsBase):
    # --- what a principal may ask for ----------------------------------------------------------

    def purposes(self, principal: Principal) -> dict[str, str]:
        """The coded purposes this principal's role may give: code → title."""
        return {code: p.title for code, p in self._policy.purposes_for(principal.role).items()}

    def products(self, principal: Principal) -> tuple[str, ...]:
        """Products this principal may export: of those its role may use
        (``gate.products``), metric sets for roles that may release aggregates (a noisy level
        and a budget: ``gate.aggregate_levels``), the role's operational lists (record
        exports)."""
        role = self._catalog.roles.get(principal.role)
        if role is None or "exports" not in role.pages:
            return ()
        # switched-off levels count: the page then says they are off rather than hiding the
        # role's metric sets
        aggregates = bool(self._gate.aggregate_levels(principal, switched_off=True))
        return tuple(p.id for p in self._gate.products(principal)
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
