"""What every part of the export service shares: its store, catalog, policy and clock, who a
job runs as, and how a stored export row reads back (``ExportStatus``, its query in words).

The service's parts (requests, links, approvals, the worker) are mixins of one ``Exports``
object built on ``_ExportsBase``; none of them keeps state of its own beyond what is here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy import select

from data.catalog import Catalog, ProductSpec, RoleSpec
from data.engine import Store
from data.errors import AccessDenied, QueryRefused, VeilError
from data.models import Export, ExportApproval

from privacy.core import Epsilon, Gate, Principal, Query
from privacy.exports._values import ExportStatus

__all__ = ["_ExportsBase"]


class _ExportsBase:
    def __init__(self, gate: Gate, store: Store, catalog: Catalog, *, secret: str,
                 clock: Callable[[], datetime]):
        """``gate`` is the core gate every aggregate goes through (``preview``, ``budget``,
        ``release``, ``aggregate_levels``); ``secret`` the deployment secret the gate was built
        with (pseudonyms in record files, and the key of download links)."""
        self._gate, self._store, self._catalog = gate, store, catalog
        self._clock, self._secret = clock, secret

    @property
    def _policy(self):
        return self._catalog.policy.exports

    def _now(self) -> datetime:
        now = self._clock()
        return now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now

    # --- helpers -------------------------------------------------------------------------------

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
