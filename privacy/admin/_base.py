"""What every part of the administration service shares: who may administer which tenant
(a ``tenant_admin`` its own, a ``platform_admin`` any), which roles a principal may grant, the
audit of every refused administrative action, the lock that serialises one tenant's changes,
and the reason every change must give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from data.catalog import Catalog
from data.engine import Store
from data.errors import AccessDenied, InvalidInput, StoreError, VeilError
from data.models import Tenant

from privacy.core import Principal, SettingsBook, SettingsVersion, audit

__all__ = ["PLATFORM_ADMIN", "TENANT_ADMIN", "_AdminBase"]

TENANT_ADMIN, PLATFORM_ADMIN = "tenant_admin", "platform_admin"
_MAX_REASON = 2000


class _AdminBase:
    def __init__(self, book: SettingsBook, store: Store, catalog: Catalog, *,
                 clock: Callable[[], datetime]):
        """``book`` is the core gate's ``tenant_settings``: every settings change goes through
        its public calls."""
        self._book, self._store, self._catalog, self._clock = book, store, catalog, clock

    # --- scope ---------------------------------------------------------------------------------

    def tenants(self, principal: Principal) -> tuple[str, ...]:
        """The tenants the principal administers: its own, or every tenant for a platform
        admin."""
        with self._refusals(principal, action="admin_view", target="tenants"):
            self._require_admin(principal)
        if principal.role == PLATFORM_ADMIN:
            return tuple(t.id for t in self._catalog.tenants)
        return (principal.tenant,)

    def grantable_roles(self, principal: Principal) -> tuple[str, ...]:
        """Roles the principal may map identities to on the admin page."""
        with self._refusals(principal, action="admin_view", target="roles"):
            self._require_admin(principal)
        return tuple(r for r, spec in self._catalog.roles.items()
                     if spec.pages and self._may_grant(principal, r))

    # --- the settings in force: the core's reads, for callers that hold ``gate.admin`` -----

    def effective(self, tenant: str) -> SettingsVersion:
        """The settings in force for ``tenant`` (for the gate: settings hold no personal data)."""
        return self._book.effective(tenant)

    def at_version(self, tenant: str, version: int) -> SettingsVersion:
        """The settings of ``tenant`` under ``version`` (0: the catalog's), whatever its status."""
        return self._book.at_version(tenant, version)

    # --- internals -----------------------------------------------------------------------------

    @contextmanager
    def _refusals(self, principal: Principal, *, action: str, target: str,
                  detail: dict | None = None) -> Iterator[None]:
        """Audit a refused administrative action (its own transaction), then re-raise."""
        try:
            yield
        except VeilError as exc:
            audit(self._store, principal=principal.subject, tenant=principal.tenant,
                  role=principal.role, action=action, target=target, outcome="refused",
                  detail={**(detail or {}), "reason": str(exc)})
            raise

    def _require_admin(self, principal: Principal) -> None:
        if principal.role not in (TENANT_ADMIN, PLATFORM_ADMIN):
            role = self._catalog.roles.get(principal.role)
            raise AccessDenied(f"the {role.title if role else principal.role} role cannot "
                               f"administer tenants")

    def _scope(self, principal: Principal, tenant: str | None) -> str:
        """The tenant an administrative call acts on, or AccessDenied."""
        self._require_admin(principal)
        tenant = tenant or principal.tenant
        known = [t.id for t in self._catalog.tenants]
        if tenant not in known:
            raise InvalidInput(f"unknown tenant {tenant!r}; tenants: {known}")
        if principal.role != PLATFORM_ADMIN and tenant != principal.tenant:
            raise AccessDenied(f"a tenant administrator of {principal.tenant} cannot administer "
                               f"tenant {tenant}")
        return tenant

    def _may_grant(self, principal: Principal, role: str) -> bool:
        if role == PLATFORM_ADMIN:
            return False
        return role != TENANT_ADMIN or principal.role == PLATFORM_ADMIN

    def _lock(self, session: Session, tenant: str) -> None:
        """Serialise administrative writes of one tenant (a no-op lock on SQLite, whose write
        transactions are serialised already). ``FOR NO KEY UPDATE`` on PostgreSQL, so rows
        that merely reference the tenant (ingestion sources, mappings) are not held up."""
        found = session.scalar(select(Tenant.id).where(Tenant.id == tenant)
                               .with_for_update(key_share=True))
        if found is None:
            raise StoreError(f"tenant {tenant} is not in the store; run `veil init`")


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput(f"a reason is required for every administrative change, got "
                           f"{reason!r}")
    if len(reason) > _MAX_REASON:
        raise InvalidInput(f"a reason may have at most {_MAX_REASON} characters, got "
                           f"{len(reason)}")
    return reason.strip()
