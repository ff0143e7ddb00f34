"""The catalog: data products, public domains, geography, tenants, roles and privacy policy.

Owns loading and validating the versioned TOML files under ``catalog/`` into frozen value
objects. Every error names the file, the key and the reason; nothing is defaulted silently.
The policy version is the SHA-256 of the files' contents, recorded on every release and export.
It never touches the database.

Public surface (implementation modules are private, one concern each)::

    load_catalog(directory) -> Catalog        _catalog: every file, cross-file checks, version
    ProductSpec, MetricSpec, MetricVersion,   _products: products.toml
    FieldSpec, CLASSIFICATIONS
    Policy, Level, Purpose, ExportPolicy,     _policy: policy.toml
    PeriodPolicy, PlannerPolicy
    RoleSpec, TenantSpec, KNOWN_PAGES         _access: roles.toml, tenants.toml
    State, District                           _geography: geography.toml, domains.toml
                                              _toml: the checked TOML reader they all use
"""

# ``X as X``: the catalog's vocabularies, importable from here as before the split.
from data.catalog._access import KNOWN_PAGES, RoleSpec, TenantSpec
from data.catalog._access import TREATMENTS as TREATMENTS
from data.catalog._catalog import CATALOG_FILES as CATALOG_FILES
from data.catalog._catalog import Catalog, load_catalog
from data.catalog._geography import District, State
from data.catalog._policy import (
    ExportPolicy,
    Level,
    PeriodPolicy,
    PlannerPolicy,
    Policy,
    Purpose,
)
from data.catalog._products import KINDS as KINDS
from data.catalog._products import MEASURES as MEASURES
from data.catalog._products import STORES as STORES
from data.catalog._products import VERTICALS as VERTICALS
from data.catalog._products import (
    CLASSIFICATIONS,
    FieldSpec,
    MetricSpec,
    MetricVersion,
    ProductSpec,
)

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
    "PeriodPolicy",
    "PlannerPolicy",
    "Policy",
    "ProductSpec",
    "Purpose",
    "RoleSpec",
    "State",
    "TenantSpec",
    "load_catalog",
]
