"""Administration (SPEC D8): tenant privacy settings, role mappings, the approvals queue.

Reached as ``gate.admin``. Owns every change an administrator makes; each is versioned and
audited in the transaction that makes it, and every refusal is audited too. It never releases
a number, and it never lets one administrator loosen privacy alone.

Who: a ``tenant_admin`` administers its own tenant; a ``platform_admin`` any tenant (it passes
``tenant=``). Every other role is refused.

Tenant privacy settings
    A tenant's settings are the catalog's values (version 0, never stored) overridden by its
    newest *active* stored version. Stored are only the overrides — the values that differ
    from the catalog — so a value the tenant never changed follows later catalog changes.

    - ``k``: the tenant's minimum group size. The policy's k (policy.toml ``[defaults] k``)
      is the tenant-adjustable default; a product that declares a k *above* the policy's keeps
      it as a floor no tenant can lower. So a product's effective k is
      ``max(tenant k, product k)`` when the product's k exceeds the policy's, else the tenant
      k (``product_k``). k is a whole number >= 2.
    - ``budgets``: ε per refresh window for each role that has a query budget in roles.toml.
      A role without one (donor, case worker, administrators) cannot be given one here: that
      would change what the role is, not how private it is.
    - ``levels``: ε of each noisy privacy level (finite, > 0), kept in the catalog's order
      (dp_high <= dp_medium <= dp_low); ``disabled_levels`` switches levels off for the
      tenant (its releases at that level are refused).

    A change that only tightens (higher k, lower budget, lower level ε, a level switched off)
    applies at once. A change that weakens anything — even alongside tightenings — is stored as
    *proposed* and has no effect until a second administrator approves it: a tenant_admin of
    the same tenant or a platform_admin, never its proposer (the proposer may withdraw it,
    which is recorded as a rejection). When a version becomes active, the version before it
    and every proposal still pending for the tenant are *superseded*: a proposal was judged
    against the settings it would replace, so after any other change it must be proposed
    again. Versions are numbered 1, 2, … per tenant (proposed and rejected ones included);
    proposals, applications, approvals, rejections and supersessions are audited with the
    settings before and after.

    The gate applies the settings in force to every release: the product's k and the level's ε
    when planning, the role's budget as the ledger cap (a changed cap holds in the current
    window: activation rewrites the caps of the tenant's open budget accounts, and every
    charge re-reads the cap in its own transaction), and a release made under a stored version
    N records the policy version ``<catalog hash[:56]>+sN`` (``policy_version``). Stored
    releases and periods are keyed by the k and ε they were made under (when those differ from
    the catalog's), so a change of k or ε is never answered from a release made before it,
    while a budget-only change keeps reusing them (re-noising an unchanged statistic would only
    help an averaging attack).

Role mappings
    An administrator lists its tenant's mappings — from ``config/role_mappings.toml``
    (``file``), from ``veil init`` in demo mode (``demo``) and from this page (``admin``) —
    and adds or removes page-made mappings for organisation (OIDC) identities; the file's and
    the demo's rows are read-only here (change the file and run ``veil init``). Rules:

    - the same checks as the file (claim email | sub | group, a role a person signs in as, a
      known tenant); an identity already mapped anywhere is refused, never re-mapped;
    - nobody grants ``platform_admin`` here (the file only); ``tenant_admin`` mappings are
      added and removed by a platform_admin only — otherwise a tenant admin could map a second
      identity of its own and approve its own loosening;
    - a tenant_admin maps into its own tenant only;
    - page-made rows (``created_by`` = ``admin page: <admin>``) apply to organisation sign-ins
      only, like the file's. ``veil init`` never overwrites them (a file entry for the same
      identity stops it, naming the admin), and the start-up check compares the file's rows
      only, so they never stop the dashboard;
    - every change appends a ``role_mapping_changes`` row numbered per tenant (the tenant's
      mapping version) and an audit entry, in one transaction.

Changes to one tenant's settings or mappings are serialised by locking its ``tenants`` row
(SQLite serialises every writer anyway), so version numbers never collide.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from data.bootstrap import DEMO_MAPPING_SOURCE
from data.catalog import Catalog, ProductSpec
from data.engine import Store
from data.errors import AccessDenied, InvalidInput, StoreError, VeilBug, VeilError
from data.models import BudgetAccount, RoleMapping, Tenant
from data.models import RoleMappingChange as MappingChangeRow
from data.models import TenantSettingsVersion as SettingsRow
from data.role_mappings import ADMIN_SOURCE_PREFIX, CLAIMS, FILE_SOURCE, check_mapping

from privacy._audit import audit, audit_in
from privacy._budget import window_of
from privacy._values import Epsilon, Principal

__all__ = ["Admin", "MappingHistoryEntry", "RoleMappingView", "SettingChange", "SettingsVersion",
           "TenantSettings", "policy_version", "product_k", "settings_version_of"]

TENANT_ADMIN, PLATFORM_ADMIN = "tenant_admin", "platform_admin"
#: keeps ``<catalog hash[:56]>+s<version>`` within the 64 characters of ``policy_version``
_MAX_VERSION = 999_999
_MAX_REASON = 2000


# --- value objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantSettings:
    """A tenant's privacy settings: k, ε budget per role and window, ε per noisy level.

    ``TenantSettings(k=7, budgets={"researcher": Epsilon(5)}, levels={"dp_low": Epsilon(1.5)})``
    — roles and levels left out keep their current values when proposed as a change.
    """

    k: int
    budgets: Mapping[str, Epsilon]
    levels: Mapping[str, Epsilon]
    disabled_levels: frozenset[str] = frozenset()

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise InvalidInput(f"k must be a whole number, got {self.k!r}")
        if self.k < 2:
            raise InvalidInput(f"k must be >= 2, got {self.k}")
        for name, table in (("budget", self.budgets), ("level", self.levels)):
            if not isinstance(table, Mapping):
                raise InvalidInput(f"{name}s must map names to ε, got {table!r}")
            for key, value in table.items():
                if not isinstance(key, str) or not key:
                    raise InvalidInput(f"{name} names must be non-empty strings, got {key!r}")
                if not isinstance(value, Epsilon):
                    raise InvalidInput(f"{name} {key!r} must be an Epsilon, got {value!r}")
                if value.value <= 0:
                    raise InvalidInput(f"{name} {key!r} must be ε > 0, got ε={value.value!r}")
            object.__setattr__(self, f"{name}s", MappingProxyType(dict(sorted(table.items()))))
        if isinstance(self.disabled_levels, str):
            raise InvalidInput(f"disabled_levels must be a set of level names, got "
                               f"{self.disabled_levels!r}")
        object.__setattr__(self, "disabled_levels", frozenset(self.disabled_levels))

    def __repr__(self) -> str:
        budgets = ", ".join(f"{r}: {e.value:g}" for r, e in self.budgets.items())
        levels = ", ".join(f"{lv}: {e.value:g}" for lv, e in self.levels.items())
        return (f"TenantSettings(k={self.k}, budgets={{{budgets}}}, levels={{{levels}}}, "
                f"disabled_levels={sorted(self.disabled_levels)})")

    def cap(self, role: str) -> float:
        """The role's ε budget per window; 0 for a role without a query budget."""
        budget = self.budgets.get(role)
        return budget.value if budget is not None else 0.0

    def to_json(self) -> dict:
        return {"k": self.k, "budgets": {r: e.value for r, e in self.budgets.items()},
                "levels": {lv: e.value for lv, e in self.levels.items()},
                "disabled_levels": sorted(self.disabled_levels)}


@dataclass(frozen=True)
class SettingChange:
    """One setting changed by a version: ``k``, ``budget.<role>``, ``level.<level>`` (ε) or
    ``enabled.<level>``, its value before and after, and whether the change weakens privacy."""

    setting: str
    before: int | float | bool
    after: int | float | bool
    weakens: bool

    def to_json(self) -> dict:
        return {"setting": self.setting, "before": self.before, "after": self.after,
                "weakens": self.weakens}

    @classmethod
    def from_json(cls, data: dict) -> SettingChange:
        return cls(setting=data["setting"], before=data["before"], after=data["after"],
                   weakens=data["weakens"])


@dataclass(frozen=True)
class SettingsVersion:
    """A version of a tenant's settings and its history; version 0 is the catalog's values.

    ``settings`` are the values in force under this version; ``decidable`` says whether the
    principal who asked may approve or reject it (a proposal, and not its own).
    """

    tenant: str
    version: int
    status: str                     # active | proposed | rejected | superseded
    settings: TenantSettings
    changes: tuple[SettingChange, ...]
    weakens: bool
    base_version: int | None        # the version in force when it was proposed
    proposed_by: str
    proposed_at: datetime | None
    reason: str
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    decidable: bool = False


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


# --- helpers the gate uses ----------------------------------------------------------------------


def product_k(tenant_k: int, product: ProductSpec, *, policy_k: int) -> int:
    """A product's effective k: the tenant's k, but never below a k the product declares above
    the policy's default."""
    return max(tenant_k, product.k) if product.k > policy_k else tenant_k


def policy_version(catalog_version: str, settings_version: int) -> str:
    """The policy version recorded on a release: the catalog's hash, plus ``+sN`` under stored
    tenant settings version N (at most 64 characters)."""
    if settings_version == 0:
        return catalog_version
    if not 0 < settings_version <= _MAX_VERSION:
        raise VeilBug(f"settings version out of range: {settings_version}")
    return f"{catalog_version[:56]}+s{settings_version}"


def settings_version_of(recorded: str) -> int:
    """The tenant settings version in a recorded policy version (0: the catalog's values)."""
    _head, sep, tail = recorded.rpartition("+s")
    return int(tail) if sep and tail.isdigit() else 0


# --- the part of the gate --------------------------------------------------------------------


class Admin:
    """Tenant privacy settings, role mappings and their approvals (see the module docstring)."""

    #: claims a mapping may use, in the order the gate matches them
    claims = CLAIMS

    def __init__(self, gate, store: Store, catalog: Catalog, *, clock):
        self._gate, self._store, self._catalog, self._clock = gate, store, catalog, clock
        policy = catalog.policy
        self._defaults = TenantSettings(
            k=policy.k,
            budgets={r.id: Epsilon(r.budget_epsilon) for r in catalog.roles.values()
                     if r.budget_epsilon > 0},
            levels={lv.id: Epsilon(lv.epsilon) for lv in policy.levels.values() if lv.noisy})
        # loosest first: a level further down may never have a larger ε than one above it
        self._level_order = sorted(self._defaults.levels,
                                   key=lambda lv: -self._defaults.levels[lv].value)

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

    # --- tenant privacy settings ---------------------------------------------------------------

    def effective(self, tenant: str) -> SettingsVersion:
        """The settings in force for ``tenant`` (for the gate: settings hold no personal data)."""
        with self._store.read() as session:
            return self._active(session, tenant)

    def at_version(self, tenant: str, version: int) -> SettingsVersion:
        """The settings of ``tenant`` under ``version`` (0: the catalog's), whatever its status."""
        if version == 0:
            return self._catalog_version(tenant, status="active")
        with self._store.read() as session:
            row = self._row(session, tenant, version)
        return self._view(row)

    def cap_in(self, session: Session, *, principal: Principal, product: str,
               today: date) -> float:
        """The principal's budget cap, read inside the caller's (charging) transaction; its
        open account in this window is set to it, so a cap changed meanwhile holds at once."""
        cap = self._active(session, principal.tenant).settings.cap(principal.role)
        start, _end = window_of(today)
        session.execute(
            update(BudgetAccount)
            .where(BudgetAccount.tenant_id == principal.tenant,
                   BudgetAccount.principal == principal.subject,
                   BudgetAccount.product_id == product, BudgetAccount.window_start == start,
                   BudgetAccount.cap != cap)
            .values(cap=cap).execution_options(synchronize_session=False))
        return cap

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
        return (*(self._view(row, principal=principal) for row in rows),
                self._catalog_version(tenant, status=base_status))

    def pending(self, principal: Principal) -> tuple[SettingsVersion, ...]:
        """Settings proposals awaiting a second administrator, in the principal's scope, oldest
        first; ``decidable`` marks those the principal may approve or reject."""
        tenants = self.tenants(principal)
        with self._store.read() as session:
            rows = session.scalars(select(SettingsRow).where(
                SettingsRow.tenant_id.in_(tenants), SettingsRow.status == "proposed")
                .order_by(SettingsRow.proposed_at, SettingsRow.id)).all()
        return tuple(self._view(row, principal=principal) for row in rows)

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
                current = self._active(session, tenant)
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
                    tenant_id=tenant, version=self._next_version(session, tenant),
                    overrides=self._overrides(after), changes=[c.to_json() for c in changes],
                    weakens=weakens, base_version=current.version, status="proposed",
                    reason=reason, proposed_by=principal.subject, proposed_at=now)
                session.add(row)
                session.flush()
                if not weakens:
                    self._activate(session, row, before=current.settings, after=after,
                                   by=principal, at=now, note="tightens only: applied at once")
                audit_in(session, principal=principal.subject, tenant=tenant,
                         role=principal.role,
                         action="settings_propose" if weakens else "settings_apply",
                         target=f"{tenant} settings v{row.version}", outcome="allowed",
                         detail={"version": row.version, "status": row.status,
                                 "weakens": weakens, "reason": reason,
                                 "before": current.settings.to_json(), "after": after.to_json(),
                                 "changes": row.changes})
                return self._view(row, principal=principal)

    def approve_settings(self, principal: Principal, *, tenant: str, version: int,
                         reason: str = "") -> SettingsVersion:
        """Approve another administrator's proposal: it becomes the settings in force."""
        with self._refusals(principal, action="settings_approve",
                            target=f"{tenant} settings v{version}"):
            tenant = self._scope(principal, tenant)
            with self._store.write.begin() as session:
                self._lock(session, tenant)
                row = self._proposal(session, tenant, version)
                if _same(row.proposed_by, principal.subject):
                    raise AccessDenied(
                        f"you proposed settings version {version} of {tenant}; a second "
                        f"administrator (a tenant administrator of {tenant} or a platform "
                        f"administrator) must approve it")
                current = self._active(session, tenant)
                if current.version != row.base_version:
                    raise VeilBug(f"proposal v{version} of {tenant} changes v{row.base_version} "
                                  f"but v{current.version} is in force and did not supersede it")
                after = self._apply(row.overrides)
                now = self._clock()
                self._activate(session, row, before=current.settings, after=after, by=principal,
                               at=now, note=reason.strip()[:_MAX_REASON] or "approved")
                audit_in(session, principal=principal.subject, tenant=tenant,
                         role=principal.role, action="settings_approve",
                         target=f"{tenant} settings v{version}", outcome="allowed",
                         detail={"version": version, "proposed_by": row.proposed_by,
                                 "reason": row.decision_reason,
                                 "before": current.settings.to_json(), "after": after.to_json(),
                                 "changes": row.changes})
                return self._view(row, principal=principal)

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
                current = self._active(session, tenant)
                row.status, row.decided_by, row.decided_at = ("rejected", principal.subject,
                                                              self._clock())
                row.decision_reason = (f"withdrawn by its proposer: {reason}"
                                       if _same(row.proposed_by, principal.subject) else reason)
                audit_in(session, principal=principal.subject, tenant=tenant,
                         role=principal.role, action="settings_reject",
                         target=f"{tenant} settings v{version}", outcome="allowed",
                         detail={"version": version, "proposed_by": row.proposed_by,
                                 "reason": row.decision_reason,
                                 "before": current.settings.to_json(),
                                 "after": current.settings.to_json(),
                                 "rejected": self._apply(row.overrides).to_json(),
                                 "changes": row.changes})
                return self._view(row, principal=principal)

    # --- role mappings -------------------------------------------------------------------------

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

    def _apply(self, overrides: dict) -> TenantSettings:
        """The catalog's values with a stored version's overrides (unknown names ignored: the
        catalog may have dropped a role or level since)."""
        d = self._defaults
        return TenantSettings(
            k=int(overrides.get("k", d.k)),
            budgets={**d.budgets, **{r: Epsilon(float(v)) for r, v in
                                     overrides.get("budgets", {}).items() if r in d.budgets}},
            levels={**d.levels, **{lv: Epsilon(float(v)) for lv, v in
                                   overrides.get("levels", {}).items() if lv in d.levels}},
            disabled_levels=frozenset(overrides.get("disabled_levels", ()))
            & set(self._catalog.policy.levels))

    def _overrides(self, settings: TenantSettings) -> dict:
        d = self._defaults
        out: dict = {}
        if settings.k != d.k:
            out["k"] = settings.k
        budgets = {r: e.value for r, e in settings.budgets.items() if e != d.budgets.get(r)}
        levels = {lv: e.value for lv, e in settings.levels.items() if e != d.levels.get(lv)}
        if budgets:
            out["budgets"] = budgets
        if levels:
            out["levels"] = levels
        if settings.disabled_levels:
            out["disabled_levels"] = sorted(settings.disabled_levels)
        return out

    def _merge(self, current: TenantSettings, proposed: TenantSettings) -> TenantSettings:
        """Check names against the catalog and fill what ``proposed`` leaves out from
        ``current``."""
        d = self._defaults
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
        for looser, stricter in zip(self._level_order, self._level_order[1:]):
            if after.levels[stricter] > after.levels[looser]:
                raise InvalidInput(
                    f"levels: {stricter!r} protects more than {looser!r}, so its ε may not be "
                    f"larger: got ε={after.levels[stricter].value:g} for {stricter!r} and "
                    f"ε={after.levels[looser].value:g} for {looser!r}")
        return after

    def _next_version(self, session: Session, tenant: str) -> int:
        last = session.scalar(select(func.max(SettingsRow.version))
                              .where(SettingsRow.tenant_id == tenant)) or 0
        if last >= _MAX_VERSION:
            raise InvalidInput(f"tenant {tenant} has reached {_MAX_VERSION} settings versions")
        return last + 1

    def _row(self, session: Session, tenant: str, version: int) -> SettingsRow:
        row = session.scalar(select(SettingsRow).where(SettingsRow.tenant_id == tenant,
                                                       SettingsRow.version == version))
        if row is None:
            raise InvalidInput(f"tenant {tenant} has no settings version {version!r}")
        return row

    def _proposal(self, session: Session, tenant: str, version: int) -> SettingsRow:
        row = self._row(session, tenant, version)
        if row.status != "proposed":
            raise InvalidInput(f"settings version {version} of {tenant} is {row.status}, not "
                               f"awaiting approval")
        return row

    def _active(self, session: Session, tenant: str) -> SettingsVersion:
        row = session.scalar(select(SettingsRow).where(
            SettingsRow.tenant_id == tenant, SettingsRow.status == "active")
            .order_by(SettingsRow.version.desc()).limit(1))
        return self._view(row) if row is not None else self._catalog_version(tenant,
                                                                              status="active")

    def _activate(self, session: Session, row: SettingsRow, *, before: TenantSettings,
                  after: TenantSettings, by: Principal, at: datetime, note: str) -> None:
        """Make ``row`` the version in force: supersede the previous one and every pending
        proposal, and move the caps of the tenant's open budget accounts."""
        session.execute(
            update(SettingsRow)
            .where(SettingsRow.tenant_id == row.tenant_id, SettingsRow.status == "active")
            .values(status="superseded").execution_options(synchronize_session=False))
        outdated = session.scalars(select(SettingsRow).where(
            SettingsRow.tenant_id == row.tenant_id, SettingsRow.status == "proposed",
            SettingsRow.id != row.id)).all()
        for stale in outdated:
            stale.status, stale.decided_at = "superseded", at
            stale.decision_reason = (f"version {row.version} came into force first; propose "
                                     f"the change again against it")
            audit_in(session, principal=by.subject, tenant=row.tenant_id, role=by.role,
                     action="settings_supersede", target=f"{row.tenant_id} settings "
                     f"v{stale.version}", outcome="allowed",
                     detail={"version": stale.version, "by_version": row.version})
        row.status, row.decided_by, row.decided_at, row.decision_reason = (
            "active", by.subject, at, note)
        today = at.date()
        for role in sorted(set(before.budgets) | set(after.budgets)):
            if before.cap(role) != after.cap(role):
                session.execute(
                    update(BudgetAccount)
                    .where(BudgetAccount.tenant_id == row.tenant_id, BudgetAccount.role == role,
                           BudgetAccount.window_end >= today)
                    .values(cap=after.cap(role)).execution_options(synchronize_session=False))

    def _view(self, row: SettingsRow, *, principal: Principal | None = None) -> SettingsVersion:
        return SettingsVersion(
            tenant=row.tenant_id, version=row.version, status=row.status,
            settings=self._apply(row.overrides),
            changes=tuple(SettingChange.from_json(c) for c in row.changes),
            weakens=row.weakens, base_version=row.base_version, proposed_by=row.proposed_by,
            proposed_at=row.proposed_at, reason=row.reason, decided_by=row.decided_by,
            decided_at=row.decided_at, decision_reason=row.decision_reason,
            decidable=(principal is not None and row.status == "proposed"
                       and not _same(row.proposed_by, principal.subject)))

    def _catalog_version(self, tenant: str, *, status: str) -> SettingsVersion:
        return SettingsVersion(
            tenant=tenant, version=0, status=status, settings=self._defaults, changes=(),
            weakens=False, base_version=None, proposed_by="catalog", proposed_at=None,
            reason="the catalog's values (policy.toml, roles.toml)")

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


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput(f"a reason is required for every administrative change, got "
                           f"{reason!r}")
    if len(reason) > _MAX_REASON:
        raise InvalidInput(f"a reason may have at most {_MAX_REASON} characters, got "
                           f"{len(reason)}")
    return reason.strip()


def _same(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


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
