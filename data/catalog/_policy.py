"""Privacy policy: levels, k, budgets, δ, period budgets, the planner and safe exports.

Owns the policy value objects (``Policy``, ``Level``, ``PeriodPolicy``, ``PlannerPolicy``,
``ExportPolicy``, ``Purpose``) and reading them from ``policy.toml``, with the bounds each
number must stay within (δ below 0.001, an empty-cell rate of at most 0.1, …) and the check
that the roles the export policy names exist and may use exports. It never touches the
database and never applies the policy: that is the gate's (``privacy``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from data.catalog._toml import _File

if TYPE_CHECKING:
    from data.catalog._access import RoleSpec


@dataclass(frozen=True)
class Level:
    id: str
    title: str
    epsilon: float

    @property
    def noisy(self) -> bool:
        return self.epsilon > 0


@dataclass(frozen=True)
class Purpose:
    """A coded export purpose: a request must name one its role may choose."""

    code: str
    title: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class ExportPolicy:
    """Safe exports (D6): coded purposes, link lifetime, worker lease, umbrella approvals."""

    purposes: dict[str, Purpose]
    link_hours: float
    lease_seconds: float
    max_attempts: int
    umbrella_roles: tuple[str, ...]
    approver_role: str
    approvals: int

    def purposes_for(self, role: str) -> dict[str, Purpose]:
        return {code: p for code, p in self.purposes.items() if role in p.roles}


@dataclass(frozen=True)
class Policy:
    levels: dict[str, Level]
    k: int
    budget_window: str
    max_window_days: int
    max_series_months: int
    max_group_by: int
    interval_confidence: float
    exports: ExportPolicy
    delta: float = 1e-7
    #: α: the most often an area with no events may be released with a value of its own. Each
    #: hierarchy level releases a unit only when its noisy count reaches max(k, t_α), where
    #: t_α is the smallest integer with P(noise ≥ t_α) ≤ α for that level's mechanism.
    empty_cell_rate: float = 0.02
    #: the most δ one principal may spend on one product per budget window (every role with
    #: an ε budget); a Gaussian-noise release spends ``delta`` of it once
    delta_cap: float = 1e-6
    #: the lifetime budget of every data month (tenant × product × month), shared by all
    periods: PeriodPolicy = field(default_factory=lambda: PeriodPolicy())
    #: when a view is answered by post-processing stored measurements instead of afresh
    planner: PlannerPolicy = field(default_factory=lambda: PlannerPolicy())


@dataclass(frozen=True)
class PlannerPolicy:
    """When the gate derives a view from measurements already stored instead of spending.

    A derived count is the sum of stored finest-level noisy counts (post-processing: free).
    It is used when at least ``min_share_accurate`` of the counts it shows are about as
    accurate as a fresh release's would be: an interval half-width at most
    ``max_width_ratio`` × a fresh one's at the asked level, or at most
    ``max_relative_half_width`` of the count.
    """

    derive: bool = True
    max_width_ratio: float = 1.5
    max_relative_half_width: float = 0.05
    min_share_accurate: float = 0.9


@dataclass(frozen=True)
class PeriodPolicy:
    """The lifetime (ε, δ) of one month of data, which every release reading it draws from.

    ``reserved`` is the share only publication (donor snapshots) and umbrella exports may
    spend: viewers together stop at ``(1 − reserved) · epsilon``.
    """

    epsilon: float = 20.0
    delta: float = 1e-5
    reserved: float = 0.25

    def cap(self, *, reserved_user: bool) -> float:
        return self.epsilon if reserved_user else self.epsilon * (1 - self.reserved)


def _load_policy(f: _File) -> Policy:
    levels = {}
    for name, spec in f.get(f.doc, "levels", "", dict).items():
        where = f"levels.{name}"
        epsilon = f.positive(spec, "epsilon", where, float, 0.0)
        levels[name] = Level(id=name, title=f.get(spec, "title", where, str), epsilon=epsilon)
    for required in ("anonymized", "dp_low", "dp_medium", "dp_high"):
        if required not in levels:
            raise f.fail(f"levels.{required}", "is required but missing")
    if levels["anonymized"].epsilon != 0:
        raise f.fail("levels.anonymized.epsilon", "must be 0: the anonymized level adds no noise")
    defaults = f.get(f.doc, "defaults", "", dict)
    where = "defaults"
    confidence = f.get(defaults, "interval_confidence", where, float)
    if not 0.5 <= confidence < 1:
        raise f.fail(f"{where}.interval_confidence", f"must be in [0.5, 1), got {confidence}")
    return Policy(
        levels=levels,
        k=f.positive(defaults, "k", where, int, 2),
        budget_window=f.one_of(defaults, "budget_window", where, {"month"}),
        max_window_days=f.positive(defaults, "max_window_days", where, int, 1),
        max_series_months=f.positive(defaults, "max_series_months", where, int, 1),
        max_group_by=f.positive(defaults, "max_group_by", where, int, 1),
        interval_confidence=confidence,
        exports=_load_exports(f),
        delta=_delta(f, defaults),
        empty_cell_rate=_empty_cell_rate(f, defaults),
        delta_cap=_delta_cap(f, defaults, delta=_delta(f, defaults)),
        periods=_period_policy(f, delta=_delta(f, defaults)),
        planner=_planner_policy(f),
    )


def _planner_policy(f: _File) -> PlannerPolicy:
    if "planner" not in f.doc:
        return PlannerPolicy()
    spec = f.get(f.doc, "planner", "", dict)
    where = "planner"
    ratio = f.get(spec, "max_width_ratio", where, float, 1.5)
    if not 1 <= ratio <= 100:
        raise f.fail(f"{where}.max_width_ratio", f"must be in [1, 100], got {ratio}")
    relative = f.get(spec, "max_relative_half_width", where, float, 0.05)
    if not 0 <= relative < 1:
        raise f.fail(f"{where}.max_relative_half_width", f"must be in [0, 1), got {relative}")
    share = f.get(spec, "min_share_accurate", where, float, 0.9)
    if not 0.5 <= share <= 1:
        raise f.fail(f"{where}.min_share_accurate", f"must be in [0.5, 1], got {share}")
    return PlannerPolicy(derive=f.get(spec, "derive", where, bool, True),
                         max_width_ratio=ratio, max_relative_half_width=relative,
                         min_share_accurate=share)


def _period_policy(f: _File, *, delta: float) -> PeriodPolicy:
    spec = f.get(f.doc, "period_budget", "", dict)
    where = "period_budget"
    epsilon = f.get(spec, "epsilon", where, float)
    if not 0 < epsilon < 1000:
        raise f.fail(f"{where}.epsilon", f"must be in (0, 1000), got {epsilon}")
    cap = f.get(spec, "delta", where, float)
    if not delta <= cap < 1e-3:
        raise f.fail(f"{where}.delta", f"must be in [delta ({delta:g}), 0.001), got {cap:g}")
    reserved = f.get(spec, "reserved", where, float)
    if not 0 <= reserved < 1:
        raise f.fail(f"{where}.reserved", f"must be in [0, 1), got {reserved}")
    return PeriodPolicy(epsilon=epsilon, delta=cap, reserved=reserved)


_PURPOSE_CODE = re.compile(r"[a-z][a-z0-9_]{1,31}")


def _load_exports(f: _File) -> ExportPolicy:
    spec = f.get(f.doc, "exports", "", dict)
    where = "exports"
    purposes = {}
    for code, purpose in f.get(spec, "purposes", where, dict).items():
        here = f"{where}.purposes.{code}"
        if not _PURPOSE_CODE.fullmatch(code):
            raise f.fail(here, "a purpose code is 2-32 lower-case letters, digits or '_', "
                               "starting with a letter")
        if not isinstance(purpose, dict):
            raise f.fail(here, "must be a table with a title and roles")
        roles = f.str_list(purpose, "roles", here)
        if not roles:
            raise f.fail(f"{here}.roles", "must name at least one role")
        purposes[code] = Purpose(code=code, title=f.get(purpose, "title", here, str),
                                 roles=roles)
    if not purposes:
        raise f.fail(f"{where}.purposes", "at least one export purpose is required")
    approvals = f.positive(spec, "approvals", where, int, 2)
    return ExportPolicy(
        purposes=purposes,
        link_hours=_bounded(f, spec, "link_hours", where, 0.01, 24 * 30),
        lease_seconds=_bounded(f, spec, "lease_seconds", where, 1.0, 3600.0),
        max_attempts=f.positive(spec, "max_attempts", where, int, 1),
        umbrella_roles=f.str_list(spec, "umbrella_roles", where),
        approver_role=f.get(spec, "approver_role", where, str),
        approvals=approvals,
    )


def _bounded(f: _File, table: dict, key: str, where: str, low: float, high: float) -> float:
    value = f.get(table, key, where, float)
    if not low <= value <= high:
        raise f.fail(f"{where}.{key}", f"must be between {low:g} and {high:g}, got {value:g}")
    return value


def _check_export_roles(f: _File, exports: ExportPolicy, roles: dict[str, RoleSpec]) -> None:
    """Roles named by the export policy exist, may open the exports page, or approve."""
    for code, purpose in exports.purposes.items():
        for role in purpose.roles:
            if role not in roles:
                raise f.fail(f"exports.purposes.{code}.roles", f"unknown role {role!r}")
            if "exports" not in roles[role].pages:
                raise f.fail(f"exports.purposes.{code}.roles",
                             f"role {role!r} has no exports page in roles.toml")
    for role in exports.umbrella_roles:
        if role not in roles:
            raise f.fail("exports.umbrella_roles", f"unknown role {role!r}")
    if exports.approver_role not in roles:
        raise f.fail("exports.approver_role", f"unknown role {exports.approver_role!r}")
    if exports.approver_role in exports.umbrella_roles:
        raise f.fail("exports.approver_role", "an approver role must not also request umbrella "
                                              "exports")


def _delta(f: _File, defaults: dict) -> float:
    delta = f.get(defaults, "delta", "defaults", float, 1e-7)
    if not 0 < delta < 1e-3:
        raise f.fail("defaults.delta", f"must be in (0, 0.001), got {delta}")
    return delta


def _delta_cap(f: _File, defaults: dict, *, delta: float) -> float:
    cap = f.get(defaults, "delta_cap", "defaults", float, 1e-6)
    # δ is the chance that the ε bound fails: summed over a window it must stay tiny
    if not 0 < cap < 1e-3:
        raise f.fail("defaults.delta_cap", f"must be in (0, 0.001), got {cap}")
    if cap < delta:
        raise f.fail("defaults.delta_cap", f"must be >= delta ({delta:g}), or no "
                                           f"Gaussian-noise release could ever run; got {cap:g}")
    return cap


def _empty_cell_rate(f: _File, defaults: dict) -> float:
    rate = f.get(defaults, "empty_cell_rate", "defaults", float)
    # above 0.1 a map of a thousand empty cells would show a hundred as active
    if not 0 < rate <= 0.1:
        raise f.fail("defaults.empty_cell_rate", f"must be in (0, 0.1], got {rate}")
    return rate
