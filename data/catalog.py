"""The catalog: data products, public domains, geography, tenants, roles and privacy policy.

Owns loading and validating the versioned TOML files under ``catalog/`` into frozen value
objects. Every error names the file, the key and the reason; nothing is defaulted silently.
The policy version is the SHA-256 of the files' contents, recorded on every release and export.
It never touches the database.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from data.errors import ConfigError

__all__ = [
    "CLASSIFICATIONS",
    "Catalog",
    "District",
    "ExportPolicy",
    "FieldSpec",
    "KNOWN_PAGES",
    "Level",
    "MetricSpec",
    "MetricVersion",
    "Policy",
    "ProductSpec",
    "Purpose",
    "RoleSpec",
    "State",
    "TenantSpec",
    "load_catalog",
]

CATALOG_FILES = (
    "domains.toml",
    "geography.toml",
    "policy.toml",
    "products.toml",
    "roles.toml",
    "tenants.toml",
)
CLASSIFICATIONS = ("direct_identifier", "quasi_identifier", "sensitive", "public")
TREATMENTS = ("show", "generalise", "mask", "pseudonymise", "hide")
KINDS = ("metric_set", "operational_list", "compliance_dataset")
MEASURES = ("count", "sum", "mean")
VERTICALS = ("health", "education", "social_protection")
STORES = ("health_events", "education_events", "social_events", "registrations")
KNOWN_PAGES = (
    "home", "trends", "map", "lists", "donor", "insights", "exports", "compliance", "admin",
)


# --- value objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    name: str
    classification: str
    title: str
    generalise_to: str | None = None


@dataclass(frozen=True)
class MetricVersion:
    version: int
    effective_from: date
    definition: str


@dataclass(frozen=True)
class MetricSpec:
    id: str
    title: str
    measure: str
    event_type: str
    versions: tuple[MetricVersion, ...]
    category: str | None = None
    value_bounds: tuple[float, float] | None = None

    def version_at(self, day: date) -> MetricVersion:
        current = self.versions[0]
        for version in self.versions:
            if version.effective_from <= day:
                current = version
        return current


@dataclass(frozen=True)
class ProductSpec:
    id: str
    vertical: str
    title: str
    owner: str
    kind: str
    store: str
    event_types: tuple[str, ...]
    category_domain: str
    k: int
    max_events_per_subject_per_day: int
    privacy_unit: str
    freshness_slo_hours: int
    published_series: bool
    fields: tuple[FieldSpec, ...]
    metrics: tuple[MetricSpec, ...]
    noise: str = "laplace"   # laplace (pure ε) | gaussian (ρ-zCDP, charged as ε at policy δ)
    #: The person-month bound: at most this many events of one subject in one calendar month
    #: (UTC), enforced at ingestion beside the daily bound. Declared: the privacy unit is one
    #: person's month, and sensitivity follows from this bound. None: the unit is a person-day.
    max_events_per_subject_per_month: int | None = None

    @property
    def unit_period(self) -> str:
        """The period the privacy unit covers: "month" or "day"."""
        return "day" if self.max_events_per_subject_per_month is None else "month"

    @property
    def unit_bound(self) -> int:
        """The most events one privacy unit (a person's day or month) holds."""
        return (self.max_events_per_subject_per_day if self.max_events_per_subject_per_month
                is None else self.max_events_per_subject_per_month)

    def metric(self, metric_id: str) -> MetricSpec:
        for metric in self.metrics:
            if metric.id == metric_id:
                return metric
        raise KeyError(metric_id)

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)


@dataclass(frozen=True)
class State:
    code: str
    name: str
    lat: float
    lng: float


@dataclass(frozen=True)
class District:
    code: str
    name: str
    state: str
    lat: float
    lng: float
    weight: float


@dataclass(frozen=True)
class TenantSpec:
    id: str
    name: str
    states: tuple[str, ...]
    demo_scale: float


@dataclass(frozen=True)
class RoleSpec:
    id: str
    title: str
    pages: tuple[str, ...]
    privacy_levels: tuple[str, ...]
    default_level: str
    budget_epsilon: float
    treatment: dict[str, str]
    #: operational-list products this role may read record by record (field treatments apply)
    record_products: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class Catalog:
    directory: Path
    version: str
    domains: dict[str, tuple[str, ...]]
    domain_titles: dict[str, str]
    states: tuple[State, ...]
    districts: tuple[District, ...]
    h3_resolution: int
    cell_ring: int
    tenants: tuple[TenantSpec, ...]
    products: tuple[ProductSpec, ...]
    roles: dict[str, RoleSpec]
    policy: Policy
    _product_index: dict[str, ProductSpec] = field(default_factory=dict, repr=False)

    def product(self, product_id: str) -> ProductSpec:
        try:
            return self._product_index[product_id]
        except KeyError:
            raise ConfigError(f"unknown data product {product_id!r}") from None

    def tenant(self, tenant_id: str) -> TenantSpec:
        for tenant in self.tenants:
            if tenant.id == tenant_id:
                return tenant
        raise ConfigError(f"unknown tenant {tenant_id!r}")

    def districts_of(self, tenant_id: str) -> tuple[District, ...]:
        states = set(self.tenant(tenant_id).states)
        return tuple(d for d in self.districts if d.state in states)


# --- loading ---------------------------------------------------------------------------------


class _File:
    """One parsed TOML file; every accessor raises ConfigError naming this file and the key."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise ConfigError(f"{path}: catalog file is missing (VEIL_CATALOG_DIR={path.parent})")
        self.raw = path.read_bytes()
        try:
            self.doc = tomllib.loads(self.raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.path}: key {key!r}: {reason}")

    def get(self, table: dict, key: str, where: str, kind: type | tuple[type, ...],
            default: Any = ...) -> Any:
        name = f"{where}.{key}" if where else key
        if key not in table:
            if default is ...:
                raise self.fail(name, "is required but missing")
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
            raise self.fail(name, f"must be {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(name, f"must be {_kind_name(kind)}, got {value!r}")
        return value

    def one_of(self, table: dict, key: str, where: str, allowed, default: Any = ...) -> str:
        value = self.get(table, key, where, str, default)
        if value not in allowed:
            raise self.fail(f"{where}.{key}", f"must be one of {sorted(allowed)}, got {value!r}")
        return value

    def str_list(self, table: dict, key: str, where: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(table, key, where, list, default)
        for item in values:
            if not isinstance(item, str):
                raise self.fail(f"{where}.{key}", f"must be a list of strings, got {item!r}")
        return tuple(values)

    def positive(self, table: dict, key: str, where: str, kind: type, minimum, default: Any = ...):
        value = self.get(table, key, where, kind, default)
        if value < minimum:
            raise self.fail(f"{where}.{key}", f"must be >= {minimum}, got {value!r}")
        return value


def _as_tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def load_catalog(directory: Path | str) -> Catalog:
    """Load and validate every catalog file in ``directory``; raise ConfigError on any fault."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"VEIL_CATALOG_DIR={directory}: the catalog directory does not exist")
    files = {name: _File(directory / name) for name in CATALOG_FILES}
    digest = hashlib.sha256()
    for name in CATALOG_FILES:
        digest.update(name.encode() + b"\0" + files[name].raw + b"\0")

    domains, domain_titles = _load_domains(files["domains.toml"])
    states, districts, resolution, ring = _load_geography(files["geography.toml"])
    policy = _load_policy(files["policy.toml"])
    tenants = _load_tenants(files["tenants.toml"], {s.code for s in states})
    products = _load_products(files["products.toml"], domains, policy)
    roles = _load_roles(files["roles.toml"], policy, {p.id: p.kind for p in products})
    _check_export_roles(files["policy.toml"], policy.exports, roles)
    return Catalog(
        directory=directory,
        version=digest.hexdigest(),
        domains=domains,
        domain_titles=domain_titles,
        states=states,
        districts=districts,
        h3_resolution=resolution,
        cell_ring=ring,
        tenants=tenants,
        products=products,
        roles=roles,
        policy=policy,
        _product_index={p.id: p for p in products},
    )


def _load_domains(f: _File):
    table = f.get(f.doc, "domain", "", dict)
    domains, titles = {}, {}
    for name, spec in table.items():
        where = f"domain.{name}"
        if not isinstance(spec, dict):
            raise f.fail(where, "must be a table")
        values = f.str_list(spec, "values", where)
        if not values:
            raise f.fail(f"{where}.values", "must not be empty")
        if len(set(values)) != len(values):
            raise f.fail(f"{where}.values", "contains duplicates")
        domains[name] = values
        titles[name] = f.get(spec, "title", where, str)
    for required in ("age_bucket", "gender"):
        if required not in domains:
            raise f.fail(f"domain.{required}", "is required but missing")
    return domains, titles


def _load_geography(f: _File):
    resolution = f.get(f.doc, "h3_resolution", "", int)
    if not 0 <= resolution <= 15:
        raise f.fail("h3_resolution", f"must be between 0 and 15, got {resolution}")
    ring = f.positive(f.doc, "cell_ring", "", int, 0)
    states = []
    for i, spec in enumerate(f.get(f.doc, "state", "", list)):
        where = f"state[{i}]"
        states.append(State(
            code=f.get(spec, "code", where, str), name=f.get(spec, "name", where, str),
            lat=_lat(f, spec, where), lng=_lng(f, spec, where),
        ))
    state_codes = [s.code for s in states]
    _unique(f, state_codes, "state[].code")
    districts = []
    for i, spec in enumerate(f.get(f.doc, "district", "", list)):
        where = f"district[{i}]"
        district = District(
            code=f.get(spec, "code", where, str), name=f.get(spec, "name", where, str),
            state=f.one_of(spec, "state", where, set(state_codes)),
            lat=_lat(f, spec, where), lng=_lng(f, spec, where),
            weight=f.positive(spec, "weight", where, float, 0.0),
        )
        districts.append(district)
    _unique(f, [d.code for d in districts], "district[].code")
    for state in states:
        if not any(d.state == state.code for d in districts):
            raise f.fail("state", f"state {state.code!r} has no districts")
    return tuple(states), tuple(districts), resolution, ring


def _lat(f: _File, spec: dict, where: str) -> float:
    lat = f.get(spec, "lat", where, float)
    if not -90 <= lat <= 90:
        raise f.fail(f"{where}.lat", f"must be a latitude in [-90, 90], got {lat}")
    return lat


def _lng(f: _File, spec: dict, where: str) -> float:
    lng = f.get(spec, "lng", where, float)
    if not -180 <= lng <= 180:
        raise f.fail(f"{where}.lng", f"must be a longitude in [-180, 180], got {lng}")
    return lng


def _monthly_bound(f: _File, spec: dict, where: str) -> int | None:
    """``max_events_per_subject_per_month`` if declared: at least the daily bound (else the
    daily bound could never be reached and the declaration contradicts itself)."""
    if "max_events_per_subject_per_month" not in spec:
        return None
    monthly = f.positive(spec, "max_events_per_subject_per_month", where, int, 1)
    daily = spec.get("max_events_per_subject_per_day", 1)
    if isinstance(daily, int) and monthly < daily:
        raise f.fail(f"{where}.max_events_per_subject_per_month",
                     f"must be >= max_events_per_subject_per_day ({daily}), got {monthly}")
    return monthly


def _unique(f: _File, values: list[str], key: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise f.fail(key, f"duplicate value {value!r}")
        seen.add(value)


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


def _load_tenants(f: _File, state_codes: set[str]) -> tuple[TenantSpec, ...]:
    tenants = []
    for i, spec in enumerate(f.get(f.doc, "tenant", "", list)):
        where = f"tenant[{i}]"
        tenant_id = f.get(spec, "id", where, str)
        if not tenant_id or len(tenant_id) > 32 or not tenant_id.replace("-", "").isalnum():
            raise f.fail(f"{where}.id", f"must be 1-32 letters, digits or '-', got {tenant_id!r}")
        states = f.str_list(spec, "states", where)
        for code in states:
            if code not in state_codes:
                raise f.fail(f"{where}.states", f"unknown state {code!r}")
        tenants.append(TenantSpec(
            id=tenant_id, name=f.get(spec, "name", where, str), states=states,
            demo_scale=f.positive(spec, "demo_scale", where, float, 0.0, 1.0),
        ))
    _unique(f, [t.id for t in tenants], "tenant[].id")
    if not tenants:
        raise f.fail("tenant", "at least one tenant is required")
    return tuple(tenants)


def _load_fields(f: _File, table: dict, where: str) -> tuple[FieldSpec, ...]:
    fields = []
    for name, spec in table.items():
        here = f"{where}.{name}"
        if not isinstance(spec, dict):
            raise f.fail(here, "must be a table with a classification")
        fields.append(FieldSpec(
            name=name,
            classification=f.one_of(spec, "classification", here, set(CLASSIFICATIONS)),
            title=f.get(spec, "title", here, str),
            generalise_to=f.get(spec, "generalise_to", here, str, None),
        ))
    return tuple(fields)


def _load_products(f: _File, domains: dict, policy: Policy) -> tuple[ProductSpec, ...]:
    event_fields = _load_fields(f, f.get(f.doc, "event_fields", "", dict), "event_fields")
    products = []
    for i, spec in enumerate(f.get(f.doc, "product", "", list)):
        where = f"product[{i}]"
        product_id = f.get(spec, "id", where, str)
        where = f"product[{product_id}]"
        store = f.one_of(spec, "store", where, set(STORES))
        fields = (
            _load_fields(f, f.get(spec, "fields", where, dict), f"{where}.fields")
            if store == "registrations" else event_fields
        )
        event_types = f.str_list(spec, "event_types", where)
        category_domain = f.one_of(spec, "category_domain", where, set(domains))
        metrics = []
        for j, metric in enumerate(f.get(spec, "metric", where, list, [])):
            mwhere = f"{where}.metric[{j}]"
            metrics.append(_load_metric(f, metric, mwhere, event_types, domains[category_domain]))
        _unique(f, [m.id for m in metrics], f"{where}.metric[].id")
        kind = f.one_of(spec, "kind", where, set(KINDS))
        if kind == "metric_set" and not metrics:
            raise f.fail(f"{where}.metric", "a metric_set product needs at least one metric")
        k = f.positive(spec, "k", where, int, 2, policy.k)
        if k < policy.k:
            raise f.fail(f"{where}.k", f"must be >= the policy's k={policy.k}, got {k}")
        products.append(ProductSpec(
            id=product_id,
            vertical=f.one_of(spec, "vertical", where, set(VERTICALS)),
            title=f.get(spec, "title", where, str),
            owner=f.get(spec, "owner", where, str),
            kind=kind,
            store=store,
            event_types=event_types,
            category_domain=category_domain,
            k=k,
            max_events_per_subject_per_day=f.positive(
                spec, "max_events_per_subject_per_day", where, int, 1),
            privacy_unit=f.get(spec, "privacy_unit", where, str),
            freshness_slo_hours=f.positive(spec, "freshness_slo_hours", where, int, 1),
            published_series=f.get(spec, "published_series", where, bool),
            fields=fields,
            metrics=tuple(metrics),
            noise=f.one_of(spec, "noise", where, {"laplace", "gaussian"}, "laplace"),
            max_events_per_subject_per_month=_monthly_bound(f, spec, where),
        ))
    _unique(f, [p.id for p in products], "product[].id")
    return tuple(products)


def _load_metric(f: _File, spec: dict, where: str, event_types, categories) -> MetricSpec:
    measure = f.one_of(spec, "measure", where, set(MEASURES))
    bounds = f.get(spec, "value_bounds", where, list, None)
    if measure in {"sum", "mean"}:
        if bounds is None:
            raise f.fail(f"{where}.value_bounds",
                         f"a {measure} metric needs clamping bounds [lower, upper]")
    if bounds is not None:
        if (len(bounds) != 2 or not all(isinstance(b, (int, float)) for b in bounds)
                or not bounds[0] < bounds[1]):
            raise f.fail(f"{where}.value_bounds", f"must be [lower, upper] with lower < upper, "
                                                  f"got {bounds!r}")
        bounds = (float(bounds[0]), float(bounds[1]))
    category = f.get(spec, "category", where, str, None)
    if category is not None and category not in categories:
        raise f.fail(f"{where}.category", f"must be one of {list(categories)}, got {category!r}")
    versions = []
    for j, version in enumerate(f.get(spec, "version", where, list)):
        vwhere = f"{where}.version[{j}]"
        effective = f.get(version, "effective_from", vwhere, (str, date))
        if isinstance(effective, str):
            try:
                effective = date.fromisoformat(effective)
            except ValueError:
                raise f.fail(f"{vwhere}.effective_from",
                             f"must be a date YYYY-MM-DD, got {effective!r}") from None
        versions.append(MetricVersion(
            version=f.positive(version, "version", vwhere, int, 1),
            effective_from=effective,
            definition=f.get(version, "definition", vwhere, str),
        ))
    if not versions:
        raise f.fail(f"{where}.version", "a metric needs at least one KPI definition version")
    numbers = [v.version for v in versions]
    if numbers != list(range(1, len(numbers) + 1)):
        raise f.fail(f"{where}.version", f"versions must be numbered 1, 2, … in order, "
                                         f"got {numbers}")
    dates = [v.effective_from for v in versions]
    if dates != sorted(dates) or len(set(dates)) != len(dates):
        raise f.fail(f"{where}.version", "effective_from dates must strictly increase")
    return MetricSpec(
        id=f.get(spec, "id", where, str),
        title=f.get(spec, "title", where, str),
        measure=measure,
        event_type=f.one_of(spec, "event_type", where, set(event_types)),
        versions=tuple(versions),
        category=category,
        value_bounds=bounds,
    )


def _load_roles(f: _File, policy: Policy, products: dict[str, str]) -> dict[str, RoleSpec]:
    roles = {}
    for name, spec in f.get(f.doc, "role", "", dict).items():
        where = f"role.{name}"
        pages = f.str_list(spec, "pages", where)
        for page in pages:
            if page not in KNOWN_PAGES:
                raise f.fail(f"{where}.pages", f"unknown page {page!r}; known: {list(KNOWN_PAGES)}")
        levels = f.str_list(spec, "privacy_levels", where)
        for level in levels:
            if level not in policy.levels:
                raise f.fail(f"{where}.privacy_levels", f"unknown privacy level {level!r}")
        treatment_table = f.get(spec, "treatment", where, dict)
        treatment = {}
        for classification in CLASSIFICATIONS:
            treatment[classification] = f.one_of(
                treatment_table, classification, f"{where}.treatment", set(TREATMENTS))
        unknown = set(treatment_table) - set(CLASSIFICATIONS)
        if unknown:
            raise f.fail(f"{where}.treatment", f"unknown classification {sorted(unknown)[0]!r}")
        record_products = f.str_list(spec, "record_products", where, ())
        for product_id in record_products:
            if products.get(product_id) != "operational_list":
                raise f.fail(f"{where}.record_products",
                             f"{product_id!r} is not an operational_list product")
        roles[name] = RoleSpec(
            id=name,
            title=f.get(spec, "title", where, str),
            pages=pages,
            privacy_levels=levels,
            default_level=f.one_of(spec, "default_level", where, set(policy.levels)),
            budget_epsilon=f.positive(spec, "budget_epsilon", where, float, 0.0),
            treatment=treatment,
            record_products=record_products,
        )
    required = ("policy_maker", "researcher", "case_worker", "donor", "compliance_officer",
                "tenant_admin", "platform_admin", "publisher")
    for role in required:
        if role not in roles:
            raise f.fail(f"role.{role}", "is required but missing")
    return roles
