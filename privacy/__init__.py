"""Veil's privacy gate: the only way data reaches a page or an export.

Public surface (everything else is private to this package)::

    gate = open_gate()                       # store + catalog from the environment
    principal = gate.resolve(claims, source="oidc")
    release = gate.release(principal, Query(...))
    gate.preview(principal, query)           # cost and accuracy, spends nothing
    gate.budget(principal, product=...)      # durable ε budget in the current window

Errors: VeilError → ConfigError, StoreError, InvalidInput, AccessDenied,
QueryRefused → BudgetExhausted. No Streamlit import here.
"""

from __future__ import annotations

from data.catalog import load_catalog
from data.config import Settings, load_settings
from data.engine import open_store
from data.migrate import current_revision, head_revision
from data.policy_history import record_policy
from data.errors import (
    AccessDenied,
    BudgetExhausted,
    ConfigError,
    InvalidInput,
    QueryRefused,
    StoreError,
    VeilBug,
    VeilError,
)

from privacy._compliance import (AuditFilter, BudgetFilter, BudgetUsage, ConsentFilter,
                                 ConsentStatistics, ExportFilter, KpiDefinition, LogPage,
                                 PolicyDiff, PolicyVersion, ProductQuality, ReleaseFilter)
from privacy._admin import (MappingHistoryEntry, RoleMappingView, SettingChange, SettingsVersion,
                            TenantSettings)
from privacy._exports import DownloadLink, ExportFile, ExportStatus, PendingApproval
from privacy._gate import Gate
from privacy._insights import Insight, InsightPoint
from privacy._local import LocalEstimate, LocalRandomizer, estimate_local
from privacy._records import RecordPage, RecordQuery
from privacy._budget import PeriodBudgetExhausted
from privacy._values import (BudgetStatus, Cell, DataClock, Delta, Epsilon, PeriodStatus, Preview,
                             Principal, PrivacyLoss, Query, Release, add_months)

__all__ = [
    "AccessDenied",
    "BudgetExhausted",
    "BudgetStatus",
    "Cell",
    "PeriodBudgetExhausted",
    "PeriodStatus",
    "ConfigError",
    "DataClock",
    "Delta",
    "DownloadLink",
    "Epsilon",
    "ExportFile",
    "ExportStatus",
    "Gate",
    "Insight",
    "InsightPoint",
    "InvalidInput",
    "LocalEstimate",
    "LocalRandomizer",
    "PendingApproval",
    "Preview",
    "Principal",
    "PrivacyLoss",
    "Query",
    "QueryRefused",
    "RecordPage",
    "RecordQuery",
    "Release",
    "StoreError",
    "VeilBug",
    "VeilError",
    "add_months",
    "Settings",
    "estimate_local",
    "load_settings",
    "open_gate",
    # compliance reads (D7): filters and what they return
    "AuditFilter",
    "BudgetFilter",
    "BudgetUsage",
    "ConsentFilter",
    "ConsentStatistics",
    "ExportFilter",
    "KpiDefinition",
    "LogPage",
    "PolicyDiff",
    "PolicyVersion",
    "ProductQuality",
    "ReleaseFilter",
    # administration (D8): tenant privacy settings and role mappings
    "MappingHistoryEntry",
    "RoleMappingView",
    "SettingChange",
    "SettingsVersion",
    "TenantSettings",
]


def open_gate(settings: Settings | None = None) -> Gate:
    """Open the configured store and catalog; fail closed with a message naming the setting."""
    settings = settings or load_settings()
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    current, head = current_revision(store), head_revision()
    if current != head:
        store.dispose()
        raise StoreError(
            f"The store at VEIL_DATABASE_URL is at schema revision {current or 'none'} but this "
            f"Veil needs {head}. Run `veil init` to create or migrate it.")
    record_policy(store, catalog)  # this policy version is on record for the compliance page
    return Gate(store, catalog, demo_accounts=settings.demo_mode, secret=settings.secret)
