"""Veil's privacy gate: the only way data reaches a page or an export.

Public surface (everything else is private to this package)::

    gate = open_gate()                       # store + catalog from the environment
    principal = gate.resolve(claims, source="oidc")
    release = gate.release(principal, Query(...))
    gate.preview(principal, query)           # cost and accuracy, spends nothing
    gate.budget(principal, product=...)      # durable ε budget in the current window

Errors: VeilError → ConfigError, StoreError, InvalidInput, AccessDenied,
QueryRefused → BudgetExhausted. No Streamlit import here.

Layout (issue 19): the gate core — private modules ``privacy/_*.py``, public surface
``privacy.core`` — and four services beside it, each a package written only against
``privacy.core``: ``privacy.exports`` (D6), ``privacy.compliance`` (D7, with job history,
alerts and evidence bundles), ``privacy.admin`` (D8) and ``privacy.snapshots`` (donor
snapshots on a schedule). ``Gate`` here is the core gate with
the services attached as ``gate.exports``, ``gate.compliance``, ``gate.admin`` and
``gate.snapshots``; no core
module imports a service.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime

from data.bootstrap import utcnow
from data.catalog import Catalog, load_catalog
from data.config import Settings, load_settings
from data.engine import Store, open_store
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

from privacy import core
from privacy.admin import Admin, MappingHistoryEntry, RoleMappingView
from privacy.compliance import (AuditFilter, BudgetFilter, BudgetUsage, Compliance, ConsentFilter,
                                ConsentStatistics, ExportFilter, KpiDefinition, LogPage,
                                PolicyDiff, PolicyVersion, ProductQuality, ReleaseFilter)
from privacy.core import (BudgetStatus, Cell, DataClock, Delta, Epsilon, Insight, InsightPoint,
                          LocalEstimate, LocalRandomizer, PeriodBudgetExhausted, PeriodStatus,
                          Preview, Principal, PrivacyLoss, Query, RecordPage, RecordQuery,
                          Release, SettingChange, SettingsVersion, TenantSettings, add_months,
                          estimate_local)
from privacy.exports import DownloadLink, ExportFile, ExportStatus, Exports, PendingApproval
from privacy.snapshots import Snapshots

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


class Gate(core.Gate):
    """The gate callers use: the core gate (``privacy.core.Gate``) with its services attached —
    ``exports`` (D6), ``compliance`` (D7), ``admin`` (D8) and ``snapshots`` (donor snapshots on
    a schedule) — built from the core's public calls, and sharing its store, catalog, clock and
    deployment secret."""

    def __init__(self, store: Store, catalog: Catalog, *, demo_accounts: bool = False,
                 secret: str | None = None,
                 clock: Callable[[], datetime] = utcnow):
        # Without a deployment secret (tests, benchmarks) record pseudonyms, links and bundles
        # are keyed per process, as the core would key them: one secret for it and its services.
        secret = secret or secrets.token_hex(32)
        super().__init__(store, catalog, demo_accounts=demo_accounts, secret=secret, clock=clock)
        self.exports = Exports(self, store, catalog, secret=secret, clock=clock)
        self.compliance = Compliance(self, store, catalog, secret=secret, clock=clock)
        self.admin = Admin(self.tenant_settings, store, catalog, clock=clock)
        self.snapshots = Snapshots(self, store, catalog, clock=clock)


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
