"""Compliance (SPEC D7, issue 20): what a compliance officer may read about their own tenant.

A service beside the gate, reached as ``gate.compliance``, written only against the gate core's
public surface (``privacy.core``). Its reads, one module per concern:

- ``_logs``: the audit log, the release log and the export records;
- ``_budgets``: budget usage per day, role and product, and every data month's lifetime budget;
- ``_policies``: policy versions with a diff between any two, and KPI definitions;
- ``_consent``: consent statistics (exact at tenant level, k-thresholded by district);
- ``_quality``: freshness and completeness of every metric product against its SLO;
- ``_showback``: cost per domain — rows stored, rebuild time, ε spent by releases and exports;
- ``_operations``: job history, the attention list, the evidence bundle and its key, and the
  query of the bias-check dataset;

with their filters in ``_filters`` and what every read shares (authorisation, the audit of each
view) in ``_base``. Operators reach three of them without a principal, from ``veil``: the job
history (``jobs``), alerts and their webhook delivery (``alerts``) and evidence bundles
(``evidence``) — public modules of this package; alerts and evidence are imported on first use.

Every read

* authorises the principal: its role must list the ``compliance`` page in the catalog
  (``compliance_officer``); anyone else gets AccessDenied, and the attempt is audited;
* is scoped to the principal's tenant inside the SQL, never by a caller's argument;
* takes typed, validated filters and pages in SQL (the audit log grows without bound);
* is itself audited (``compliance_view``, target = the section, detail = the filters): an
  auditor's reads are on the record too;
* returns frozen rows. No Streamlit here, and no released value is recomputed: the logs show
  who asked for what and what it cost, never the cells themselves.
"""

from __future__ import annotations

from privacy.compliance._budgets import (BudgetAccountUsage, BudgetDay, BudgetLine, BudgetUsage,
                                         PeriodUsage, _Budgets)
from privacy.compliance._consent import (ConsentArea, ConsentMonth, ConsentStatistics,
                                         ConsentVertical, ExcludedEvents, _Consent)
from privacy.compliance._filters import (OUTCOMES, AuditFilter, BudgetFilter, ConsentFilter,
                                         ExportFilter, LogPage, ReleaseFilter)
from privacy.compliance._logs import AuditRecord, ExportRecord, ReleaseRecord, _Logs
from privacy.compliance._operations import BIAS_DIMENSIONS, _Operations
from privacy.compliance._policies import (FileDiff, KpiDefinition, PolicyDiff, PolicyVersion,
                                          _Policies)
from privacy.compliance._quality import (MonthCoverage, ProductQuality, completeness_window,
                                         month_coverage, _Quality)
from privacy.compliance._showback import DomainCost, Showback, _Showback

__all__ = [
    "AuditFilter", "AuditRecord", "BIAS_DIMENSIONS", "BudgetAccountUsage", "BudgetDay",
    "BudgetFilter", "BudgetLine", "BudgetUsage", "Compliance", "ConsentArea", "ConsentFilter",
    "ConsentMonth", "ConsentStatistics", "ConsentVertical", "DomainCost", "ExcludedEvents",
    "ExportFilter",
    "ExportRecord", "FileDiff", "KpiDefinition", "LogPage", "MonthCoverage", "OUTCOMES",
    "PeriodUsage", "PolicyDiff", "PolicyVersion", "ProductQuality", "ReleaseFilter",
    "ReleaseRecord", "Showback", "completeness_window", "month_coverage",
]


class Compliance(_Logs, _Budgets, _Policies, _Consent, _Quality, _Showback, _Operations):
    """Compliance reads (see the package docstring): ``Compliance(gate, store, catalog,
    secret=…, clock=…)``, where ``gate`` is the core gate and ``secret`` the one it was built
    with."""
