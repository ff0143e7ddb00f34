"""The catalog as a whole: ``Catalog`` and ``load_catalog``, which reads every file.

Owns reading the six catalog files together — each through its concern's loader (geography and
domains, policy, tenants and roles, products) — the checks that span files (a tenant's states,
a product's category domain and allowed roles, a role's levels and record products, the export
policy's roles) and the catalog version: the SHA-256 of the files' contents, recorded on every
release and export. It never touches the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from data.catalog._access import RoleSpec, TenantSpec, _load_roles, _load_tenants
from data.catalog._geography import District, State, _load_domains, _load_geography
from data.catalog._policy import Policy, _check_export_roles, _load_policy
from data.catalog._products import ProductSpec, _check_allowed_roles, _load_products
from data.catalog._toml import _File
from data.errors import ConfigError


CATALOG_FILES = (
    "domains.toml",
    "geography.toml",
    "policy.toml",
    "products.toml",
    "roles.toml",
    "tenants.toml",
)


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
    _check_allowed_roles(files["products.toml"], products, roles)
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
