"""Role mappings administration. An administrator lists its tenant's mappings — from
``config/role_mappings.toml`` (``file``), from ``veil init`` in demo mode (``demo``) and from
the admin page (``admin``) — and adds or removes page-made mappings for organisation (OIDC)
identities; the file's and the demo's rows are read-only here. Every change appends a
``role_mapping_changes`` row numbered per tenant and an audit entry, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from data.bootstrap import DEMO_MAPPING_SOURCE
from data.errors import AccessDenied, InvalidInput
from data.models import RoleMapping
from data.models import RoleMappingChange as MappingChangeRow
from data.role_mappings import ADMIN_SOURCE_PREFIX, FILE_SOURCE, check_mapping

from privacy.admin._base import PLATFORM_ADMIN, _AdminBase, _reason
from privacy.core import Principal, audit_in

__all__ = ["MappingHistoryEntry", "RoleMappingView", "_Mappings"]


@dataclass(frozen=True)
class RoleMappingView:
    """One role mapping of a tenant; ``removable`` by the principal who asked, on the page."""

    claim: str
    value: str
    role: str
    tenant: str
    source: str                     # file | demo | admin
    created_by: str
    created_at: datetime
    removable: bool


@dataclass(frozen=True)
class MappingHistoryEntry:
    """A role mapping added or removed on the admin page: the tenant's mapping ``version``."""

    tenant: str
    version: int
    action: str                     # add | remove
    claim: str
    value: str
    role: str
    changed_by: str
    reason: str
    at: datetime


class _Mappings(_AdminBase):
    def mappings(self, principal: Principal, *,
                 tenant: str | None = None) -> tuple[RoleMappingView, ...]:
        """The tenant's role mappings (every source), by claim and value."""
        with self._refusals(principal, action="admin_view", target=tenant or principal.tenant):
            tenant = self._scope(principal, tenant)
        with self._store.read() as session:
            rows = session.scalars(select(RoleMapping).where(RoleMapping.tenant_id == tenant)
                                   .order_by(RoleMapping.claim, RoleMapping.value)).all()
        return tuple(self._mapping_view(row, principal) for row in rows)

    def mapping_history(self, principal: Principal, *,
                        tenant: str | None = None) -> tuple[MappingHistoryEntry, ...]:
        """Role mapping changes made on the admin page, newest first."""
        with self._refusals(principal, action="admin_view", target=tenant or principal.tenant):
            tenant = self._scope(principal, tenant)
        with self._store.read() as session:
            rows = session.scalars(select(MappingChangeRow)
                                   .where(MappingChangeRow.tenant_id == tenant)
                                   .order_by(MappingChangeRow.version.desc())).all()
        return tuple(MappingHistoryEntry(
            tenant=r.tenant_id, version=r.version, action=r.action, claim=r.claim,
            value=r.value, role=r.role, changed_by=r.changed_by, reason=r.reason, at=r.at)
            for r in rows)

    def add_mapping(self, principal: Principal, *, claim: str, value: str, role: str,
                    tenant: str | None = None, reason: str) -> RoleMappingView:
        """Map an organisation identity's claim to a role of the tenant."""
        with self._refusals(principal, action="role_mapping_add",
                            target=f"{claim} {value}",
                            detail={"role": role, "tenant": tenant or principal.tenant}):
            tenant = self._scope(principal, tenant)
            reason = _reason(reason)
            spec = check_mapping(self._catalog, claim=claim, value=value, role=role,
                                 tenant=tenant)
            if not self._may_grant(principal, role):
                raise AccessDenied(_grant_refusal(principal, role, "grant"))
            with self._store.write.begin() as session:
                self._lock(session, tenant)
                existing = session.scalar(select(RoleMapping).where(
                    RoleMapping.claim == spec.claim, RoleMapping.value == spec.value))
                if existing is not None:
                    raise InvalidInput(self._already_mapped(principal, existing))
                now = self._clock()
                row = RoleMapping(claim=spec.claim, value=spec.value, role=spec.role,
                                  tenant_id=tenant, created_at=now,
                                  created_by=(ADMIN_SOURCE_PREFIX + principal.subject)[:256])
                session.add(row)
                try:
                    with session.begin_nested():
                        session.flush()
                except IntegrityError:
                    raise InvalidInput(f"{spec.claim} {spec.value!r} was mapped by someone else "
                                       f"a moment ago; reload the page") from None
                self._record_mapping_change(session, principal, row, action="add",
                                            reason=reason, at=now)
                return self._mapping_view(row, principal)

    def remove_mapping(self, principal: Principal, *, claim: str, value: str,
                       tenant: str | None = None, reason: str) -> MappingHistoryEntry:
        """Remove a mapping made on the admin page; file and demo mappings are read-only."""
        with self._refusals(principal, action="role_mapping_remove", target=f"{claim} {value}",
                            detail={"tenant": tenant or principal.tenant}):
            tenant = self._scope(principal, tenant)
            reason = _reason(reason)
            value = value.strip().lower() if claim == "email" else value.strip()
            with self._store.write.begin() as session:
                self._lock(session, tenant)
                row = session.scalar(select(RoleMapping).where(
                    RoleMapping.claim == claim, RoleMapping.value == value,
                    RoleMapping.tenant_id == tenant))
                if row is None:
                    raise InvalidInput(f"no role mapping of {claim} {value!r} at {tenant}")
                source = _source(row)
                if source != "admin":
                    raise InvalidInput(_read_only(row, source))
                if not self._may_grant(principal, row.role):
                    raise AccessDenied(_grant_refusal(principal, row.role, "remove"))
                now, role = self._clock(), row.role
                version = self._record_mapping_change(session, principal, row,
                                                      action="remove", reason=reason, at=now)
                session.delete(row)
                return MappingHistoryEntry(tenant=tenant, version=version, action="remove",
                                           claim=claim, value=value, role=role,
                                           changed_by=principal.subject, reason=reason, at=now)

    def _mapping_view(self, row: RoleMapping, principal: Principal) -> RoleMappingView:
        source = _source(row)
        return RoleMappingView(
            claim=row.claim, value=row.value, role=row.role, tenant=row.tenant_id,
            source=source, created_by=row.created_by, created_at=row.created_at,
            removable=source == "admin" and self._may_grant(principal, row.role))

    def _already_mapped(self, principal: Principal, row: RoleMapping) -> str:
        if row.tenant_id != principal.tenant and principal.role != PLATFORM_ADMIN:
            return f"{row.claim} {row.value!r} is already mapped in another tenant"
        return (f"{row.claim} {row.value!r} is already mapped to {row.role} at {row.tenant_id} "
                f"({_describe(row)}); one identity gets one role and one tenant")

    def _record_mapping_change(self, session: Session, principal: Principal, row: RoleMapping,
                               *, action: str, reason: str, at: datetime) -> int:
        version = (session.scalar(select(func.max(MappingChangeRow.version))
                                  .where(MappingChangeRow.tenant_id == row.tenant_id)) or 0) + 1
        session.add(MappingChangeRow(
            tenant_id=row.tenant_id, version=version, action=action, claim=row.claim,
            value=row.value, role=row.role, changed_by=principal.subject, reason=reason, at=at))
        audit_in(session, principal=principal.subject, tenant=row.tenant_id, role=principal.role,
                 action=f"role_mapping_{action}", target=f"{row.claim} {row.value}",
                 outcome="allowed",
                 detail={"mapping_version": version, "claim": row.claim, "value": row.value,
                         "role": row.role, "tenant": row.tenant_id, "reason": reason,
                         "before": None if action == "add" else row.role,
                         "after": row.role if action == "add" else None})
        return version


def _source(row: RoleMapping) -> str:
    if row.created_by == FILE_SOURCE:
        return "file"
    if row.created_by == DEMO_MAPPING_SOURCE:
        return "demo"
    return "admin" if row.created_by.startswith(ADMIN_SOURCE_PREFIX) else "other"


def _describe(row: RoleMapping) -> str:
    return {"file": "by the role mappings file", "demo": "a demo account, by veil init",
            "admin": f"on the admin page by {row.created_by[len(ADMIN_SOURCE_PREFIX):]}"}.get(
        _source(row), f"by {row.created_by}")


def _read_only(row: RoleMapping, source: str) -> str:
    if source == "file":
        return (f"{row.claim} {row.value!r} is managed by the role mappings file; remove it there "
                f"and run `veil init`")
    return f"{row.claim} {row.value!r} was mapped {_describe(row)}; it cannot be removed here"


def _grant_refusal(principal: Principal, role: str, verb: str) -> str:
    if role == PLATFORM_ADMIN:
        return (f"nobody can {verb} the platform_admin role on the admin page; it is granted in "
                f"the role mappings file only")
    return (f"only a platform administrator can {verb} the tenant_admin role (your role: "
            f"{principal.role})")
