"""Roles and tenants: who sees which pages, levels and field treatments, and whose data is whose.

Owns ``RoleSpec`` (pages, privacy levels, default level, budget, treatment per field
classification, record-level products) read from ``roles.toml`` and ``TenantSpec`` (a
tenant's states and demo scale) read from ``tenants.toml``. It never touches the database and
never decides access: that is the gate's (``privacy``).
"""

from __future__ import annotations

from dataclasses import dataclass

from data.catalog._policy import Policy
from data.catalog._products import CLASSIFICATIONS
from data.catalog._toml import _File, _unique


TREATMENTS = ("show", "generalise", "mask", "pseudonymise", "hide")
KNOWN_PAGES = (
    "home", "trends", "map", "lists", "donor", "insights", "exports", "compliance", "admin",
)


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
