"""Tenant privacy settings (SPEC D8): the values the gate applies to every release.

Owns what a tenant's settings *are* and which are in force: the value objects
(``TenantSettings``, ``SettingsVersion``, ``SettingChange``), the versions stored in
``tenant_settings_versions`` read back over the catalog's values, and how a version comes into
force (``SettingsBook.activate``: the version before it and every pending proposal superseded,
the caps of the tenant's open budget accounts moved). The gate reads it on every release: the
product's k (``product_k``), the level's ε and the role's cap when planning, that they are still
in force inside the charging transaction (``SettingsBook.expect``), and the policy version a
release records
(``policy_version``, ``settings_version_of``).

A tenant's settings are the catalog's values (version 0, never stored) overridden by its newest
*active* stored version. Stored are only the overrides — the values that differ from the
catalog — so a value the tenant never changed follows later catalog changes. Who may change
them, and the rule that weakening needs a second administrator, belong to the administration
service (``privacy.admin``), which changes settings only through these public calls. This
module never authorises anyone and never audits an administrator's action except the
supersession that activation itself causes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from data.catalog import Catalog, ProductSpec
from data.prepared import Batch, Prepared
from data.engine import Store
from data.errors import InvalidInput, VeilBug
from data.models import BudgetAccount
from data.models import TenantSettingsVersion as SettingsRow

from privacy._audit import audit_in
from privacy._values import Epsilon, Principal

__all__ = ["SettingChange", "SettingsBook", "SettingsVersion", "TenantSettings",
           "policy_version", "product_k", "same_subject", "settings_version_of"]

#: keeps ``<catalog hash[:56]>+s<version>`` within the 64 characters of ``policy_version``
_MAX_VERSION = 999_999


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


def same_subject(a: str, b: str) -> bool:
    """Whether two recorded subjects name one person (a proposer is never its own approver)."""
    return a.strip().lower() == b.strip().lower()


# --- the versions of each tenant's settings ----------------------------------------------------


class SettingsChanged(Exception):
    """Another settings version came into force while a release was being made: plan it
    again (never reaches a caller of the gate)."""


class SettingsBook:
    """The stored versions of every tenant's settings over the catalog's values.

    ``effective``, ``at_version`` and ``expect`` are the gate's reads; the rest are the calls
    the administration service makes inside its own (locked, audited) transactions.
    """

    def __init__(self, store: Store, catalog: Catalog):
        self._store, self._catalog = store, catalog
        #: Views of active versions by row id. A version's values never change once stored
        #: (a change is a new version); only its status does, and the active one is looked up
        #: on every read, so a view is reused only while its row is the one in force.
        self._active_views: dict[int, SettingsVersion] = {}
        policy = catalog.policy
        self._defaults = TenantSettings(
            k=policy.k,
            budgets={r.id: Epsilon(r.budget_epsilon) for r in catalog.roles.values()
                     if r.budget_epsilon > 0},
            levels={lv.id: Epsilon(lv.epsilon) for lv in policy.levels.values() if lv.noisy})

    @property
    def defaults(self) -> TenantSettings:
        """The catalog's values: every tenant's version 0."""
        return self._defaults

    # --- the gate's reads ------------------------------------------------------------------------

    def effective(self, tenant: str) -> SettingsVersion:
        """The settings in force for ``tenant`` (for the gate: settings hold no personal data)."""
        with self._store.read() as session:
            return self.active_in(session, tenant)

    def at_version(self, tenant: str, version: int) -> SettingsVersion:
        """The settings of ``tenant`` under ``version`` (0: the catalog's), whatever its status."""
        if version == 0:
            return self.catalog_version(tenant, status="active")
        with self._store.read() as session:
            row = self.row(session, tenant, version)
        return self.view(row)

    def expect(self, batch: Batch, version: SettingsVersion) -> None:
        """Queue on ``batch`` (the charging transaction's statements) the check that
        ``version`` is still its tenant's version in force: SettingsChanged if another came
        into force since it was read, so that the caller plans again under it. The charge can
        then use the cap of ``version``: a cap changed meanwhile holds at once."""
        def check(rows: list[tuple]) -> None:
            now = rows[0][0] if rows else 0
            if now != version.version:
                raise SettingsChanged(f"tenant {version.tenant}'s settings moved from version "
                                      f"{version.version} to {now}")
        batch.add(_ACTIVE_VERSION, {"tenant": version.tenant}, then=check)

    # --- versions, inside the caller's transaction -----------------------------------------------

    def active_in(self, session: Session, tenant: str) -> SettingsVersion:
        """The version in force for ``tenant``, read in ``session`` (its id on every call; the
        row itself only the first time it is in force)."""
        row_id = _ACTIVE_ID.scalar(session, {"tenant": tenant})
        if row_id is None:
            return self.catalog_version(tenant, status="active")
        view = self._active_views.get(row_id)
        if view is None:
            row = session.get(SettingsRow, row_id)
            if row is None or row.status != "active":  # superseded since: read it again
                return self.active_in(session, tenant)
            view = self._active_views[row_id] = self.view(row)
        return view

    def row(self, session: Session, tenant: str, version: int) -> SettingsRow:
        """The stored version ``version`` of ``tenant``, or InvalidInput."""
        row = session.scalar(select(SettingsRow).where(SettingsRow.tenant_id == tenant,
                                                       SettingsRow.version == version))
        if row is None:
            raise InvalidInput(f"tenant {tenant} has no settings version {version!r}")
        return row

    def next_version(self, session: Session, tenant: str) -> int:
        """The number the tenant's next stored version gets (proposed ones count too)."""
        last = session.scalar(select(func.max(SettingsRow.version))
                              .where(SettingsRow.tenant_id == tenant)) or 0
        if last >= _MAX_VERSION:
            raise InvalidInput(f"tenant {tenant} has reached {_MAX_VERSION} settings versions")
        return last + 1

    def apply(self, overrides: dict) -> TenantSettings:
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

    def overrides(self, settings: TenantSettings) -> dict:
        """What a version stores of ``settings``: only the values that differ from the
        catalog's."""
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

    def activate(self, session: Session, row: SettingsRow, *, before: TenantSettings,
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

    # --- views -----------------------------------------------------------------------------------

    def view(self, row: SettingsRow, *, principal: Principal | None = None) -> SettingsVersion:
        """A stored version as a value; ``decidable`` for ``principal`` (a proposal, and not
        its own)."""
        return SettingsVersion(
            tenant=row.tenant_id, version=row.version, status=row.status,
            settings=self.apply(row.overrides),
            changes=tuple(SettingChange.from_json(c) for c in row.changes),
            weakens=row.weakens, base_version=row.base_version, proposed_by=row.proposed_by,
            proposed_at=row.proposed_at, reason=row.reason, decided_by=row.decided_by,
            decided_at=row.decided_at, decision_reason=row.decision_reason,
            decidable=(principal is not None and row.status == "proposed"
                       and not same_subject(row.proposed_by, principal.subject)))

    def catalog_version(self, tenant: str, *, status: str) -> SettingsVersion:
        """Version 0 of ``tenant``: the catalog's values."""
        return SettingsVersion(
            tenant=tenant, version=0, status=status, settings=self._defaults, changes=(),
            weakens=False, base_version=None, proposed_by="catalog", proposed_at=None,
            reason="the catalog's values (policy.toml, roles.toml)")


#: The number of a tenant's version in force (none: the catalog's, version 0).
_ACTIVE_VERSION = Prepared(select(SettingsRow.version)
                           .where(SettingsRow.tenant_id == bindparam("tenant"),
                                  SettingsRow.status == "active")
                           .order_by(SettingsRow.version.desc()).limit(1))
#: The id of a tenant's version in force: prebuilt once, sent on the driver's cursor (the gate
#: reads it twice per release).
_ACTIVE_ID = Prepared(select(SettingsRow.id)
                      .where(SettingsRow.tenant_id == bindparam("tenant"),
                             SettingsRow.status == "active")
                      .order_by(SettingsRow.version.desc()).limit(1))
