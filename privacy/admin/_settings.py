"""Tenant privacy settings administration: reading a tenant's settings and their history, and
changing them. A change that only tightens (higher k, lower budget, lower level ε, a level
switched off) applies at once; one that weakens anything — even alongside tightenings — is
stored as *proposed* and has no effect until a second administrator approves it (a
tenant_admin of the same tenant or a platform_admin, never its proposer, who may withdraw it:
recorded as a rejection). A form saved on top of a newer version is refused. Proposals,
applications, approvals and rejections are audited with the settings before and after; what
the values are and how a version comes into force belong to the core (``SettingsBook``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from data.errors import AccessDenied, InvalidInput, VeilBug
from data.models import TenantSettingsVersion as SettingsRow

from privacy.admin._base import _MAX_REASON, _AdminBase, _reason
from privacy.core import (Principal, SettingChange, SettingsVersion, TenantSettings, audit_in,
                          same_subject)

__all__ = ["_SettingsAdmin"]


class _SettingsAdmin(_AdminBase):
    def settings(self, principal: Principal, *, tenant: str | None = None) -> SettingsVersion:
        """The settings in force for the principal's tenant (a platform admin: ``tenant``)."""
        with self._refusals(principal, action="admin_view", target=tenant or principal.tenant):
            tenant = self._scope(principal, tenant)
        return self.effective(tenant)

    def history(self, principal: Principal, *,
                tenant: str | None = None) -> tuple[SettingsVersion, ...]:
        """Every settings version of the tenant, newest first, ending with version 0."""
        with self._refusals(principal, action="admin_view", target=tenant or principal.tenant):
            tenant = self._scope(principal, tenant)
        with self._store.read() as session:
            rows = session.scalars(select(SettingsRow).where(SettingsRow.tenant_id == tenant)
                                   .order_by(SettingsRow.version.desc())).all()
        base_status = "superseded" if any(r.status in ("active", "superseded")
                                          for r in rows) else "active"
        return (*(self._book.view(row, principal=principal) for row in rows),
                self._book.catalog_version(tenant, status=base_status))

    def pending(self, principal: Principal) -> tuple[SettingsVersion, ...]:
        """Settings proposals awaiting a second administrator, in the principal's scope, oldest
        first; ``decidable`` marks those the principal may approve or reject."""
        tenants = self.tenants(principal)
        with self._store.read() as session:
            rows = session.scalars(select(SettingsRow).where(
                SettingsRow.tenant_id.in_(tenants), SettingsRow.status == "proposed")
                .order_by(SettingsRow.proposed_at, SettingsRow.id)).all()
        return tuple(self._book.view(row, principal=principal) for row in rows)

    def change_settings(self, principal: Principal, settings: TenantSettings, *,
                        tenant: str | None = None, reason: str,
                        base_version: int | None = None) -> SettingsVersion:
        """Apply ``settings`` at once if they only tighten; otherwise propose them for a second
        administrator's approval. Returns the new version (``status`` active or proposed).

        ``base_version``, when given, is the version the caller's values were read from: if
        another version came into force since, the change is refused rather than silently
        undoing it (a page passes the version it showed).
        """
        target = tenant or principal.tenant
        detail = {"settings": settings.to_json() if isinstance(settings, TenantSettings)
                  else repr(settings)}
        with self._refusals(principal, action="settings_change", target=target, detail=detail):
            tenant = self._scope(principal, tenant)
            reason = _reason(reason)
            if not isinstance(settings, TenantSettings):
                raise InvalidInput(f"settings must be TenantSettings, got {settings!r}")
            with self._store.write.begin() as session:
                self._lock(session, tenant)
                current = self._book.active_in(session, tenant)
                if base_version is not None and base_version != current.version:
                    raise InvalidInput(
                        f"the settings of {tenant} changed since version {base_version} was "
                        f"shown (now version {current.version}); reload and make the change "
                        f"again")
                after = self._merge(current.settings, settings)
                changes = _diff(current.settings, after)
                if not changes:
                    raise InvalidInput(f"nothing to change: these are the settings of version "
                                       f"{current.version} of {tenant}")
                weakens = any(c.weakens for c in changes)
                now = self._clock()
                row = SettingsRow(
                    tenant_id=tenant, version=self._book.next_version(session, tenant),
                    overrides=self._book.overrides(after), changes=[c.to_json() for c in changes],
                    weakens=weakens, base_version=current.version, status="proposed",
                    reason=reason, proposed_by=principal.subject, proposed_at=now)
                session.add(row)
                session.flush()
                if not weakens:
                    self._book.activate(session, row, before=current.settings, after=after,
                                        by=principal, at=now,
                                        note="tightens only: applied at once")
                audit_in(session, principal=principal.subject, tenant=tenant,
                         role=principal.role,
                         action="settings_propose" if weakens else "settings_apply",
                         target=f"{tenant} settings v{row.version}", outcome="allowed",
                         detail={"version": row.version, "status": row.status,
                                 "weakens": weakens, "reason": reason,
                                 "before": current.settings.to_json(), "after": after.to_json(),
                                 "changes": row.changes})
                return self._book.view(row, principal=principal)

    def approve_settings(self, principal: Principal, *, tenant: str, version: int,
                         reason: str = "") -> SettingsVersion:
        """Approve another administrator's proposal: it becomes the settings in force."""
        with self._refusals(principal, action="settings_approve",
                            target=f"{tenant} settings v{version}"):
            tenant = self._scope(principal, tenant)
            with self._store.write.begin() as session:
                self._lock(session, tenant)
                row = self._proposal(session, tenant, version)
                if same_subject(row.proposed_by, principal.subject):
                    raise AccessDenied(
                        f"you proposed settings version {version} of {tenant}; a second "
                        f"administrator (a tenant administrator of {tenant} or a platform "
                        f"administrator) must approve it")
                current = self._book.active_in(session, tenant)
                if current.version != row.base_version:
                    raise VeilBug(f"proposal v{version} of {tenant} changes v{row.base_version} "
                                  f"but v{current.version} is in force and did not supersede it")
                after = self._book.apply(row.overrides)
                now = self._clock()
                self._book.activate(session, row, before=current.settings, after=after,
                                    by=principal, at=now,
                                    note=reason.strip()[:_MAX_REASON] or "approved")
                audit_in(session, principal=principal.subject, tenant=tenant,
                         role=principal.role, action="settings_approve",
                         target=f"{tenant} settings v{version}", outcome="allowed",
                         detail={"version": version, "proposed_by": row.proposed_by,
                                 "reason": row.decision_reason,
                                 "before": current.settings.to_json(), "after": after.to_json(),
                                 "changes": row.changes})
                return self._book.view(row, principal=principal)

    def reject_settings(self, principal: Principal, *, tenant: str, version: int,
                        reason: str) -> SettingsVersion:
        """Reject a proposal (its proposer may withdraw it this way); nothing changes."""
        with self._refusals(principal, action="settings_reject",
                            target=f"{tenant} settings v{version}"):
            tenant = self._scope(principal, tenant)
            reason = _reason(reason)
            with self._store.write.begin() as session:
                self._lock(session, tenant)
                row = self._proposal(session, tenant, version)
                current = self._book.active_in(session, tenant)
                row.status, row.decided_by, row.decided_at = ("rejected", principal.subject,
                                                              self._clock())
                row.decision_reason = (f"withdrawn by its proposer: {reason}"
                                       if same_subject(row.proposed_by, principal.subject)
                                       else reason)
                audit_in(session, principal=principal.subject, tenant=tenant,
                         role=principal.role, action="settings_reject",
                         target=f"{tenant} settings v{version}", outcome="allowed",
                         detail={"version": version, "proposed_by": row.proposed_by,
                                 "reason": row.decision_reason,
                                 "before": current.settings.to_json(),
                                 "after": current.settings.to_json(),
                                 "rejected": self._book.apply(row.overrides).to_json(),
                                 "changes": row.changes})
                return self._book.view(row, principal=principal)

    def _merge(self, current: TenantSettings, proposed: TenantSettings) -> TenantSettings:
        """Check names against the catalog and fill what ``proposed`` leaves out from
        ``current``."""
        d = self._book.defaults
        for role in proposed.budgets:
            if role not in d.budgets:
                raise InvalidInput(f"budgets: {role!r} is not a role with a query budget in "
                                   f"roles.toml; roles with one: {sorted(d.budgets)}")
        for level in proposed.levels:
            if level not in d.levels:
                raise InvalidInput(f"levels: {level!r} is not a noisy privacy level of "
                                   f"policy.toml; noisy levels: {sorted(d.levels)}")
        for level in sorted(proposed.disabled_levels):
            if level not in self._catalog.policy.levels:
                raise InvalidInput(f"disabled_levels: {level!r} is not a privacy level of "
                                   f"policy.toml; levels: {sorted(self._catalog.policy.levels)}")
        after = TenantSettings(k=proposed.k, budgets={**current.budgets, **proposed.budgets},
                               levels={**current.levels, **proposed.levels},
                               disabled_levels=proposed.disabled_levels)
        # loosest first: a level further down may never have a larger ε than one above it
        order = sorted(d.levels, key=lambda lv: -d.levels[lv].value)
        for looser, stricter in zip(order, order[1:]):
            if after.levels[stricter] > after.levels[looser]:
                raise InvalidInput(
                    f"levels: {stricter!r} protects more than {looser!r}, so its ε may not be "
                    f"larger: got ε={after.levels[stricter].value:g} for {stricter!r} and "
                    f"ε={after.levels[looser].value:g} for {looser!r}")
        return after

    def _proposal(self, session: Session, tenant: str, version: int) -> SettingsRow:
        row = self._book.row(session, tenant, version)
        if row.status != "proposed":
            raise InvalidInput(f"settings version {version} of {tenant} is {row.status}, not "
                               f"awaiting approval")
        return row


def _diff(before: TenantSettings, after: TenantSettings) -> list[SettingChange]:
    """What changes, and whether each change weakens privacy."""
    changes = []
    if after.k != before.k:
        changes.append(SettingChange("k", before.k, after.k, weakens=after.k < before.k))
    for name, old, new in (("budget", before.budgets, after.budgets),
                           ("level", before.levels, after.levels)):
        for key in sorted(set(old) | set(new)):
            was, now = old[key].value, new[key].value
            if was != now:
                changes.append(SettingChange(f"{name}.{key}", was, now, weakens=now > was))
    for level in sorted(before.disabled_levels ^ after.disabled_levels):
        enabled = level not in after.disabled_levels
        changes.append(SettingChange(f"enabled.{level}", not enabled, enabled, weakens=enabled))
    return changes
