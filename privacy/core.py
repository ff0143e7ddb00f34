"""The gate core's public surface: every name a caller or a service beside the gate needs.

The core is the privacy gate itself — values, sensitivity, mechanisms, engine, derivation,
intervals, the budget ledgers, the release log, record treatments, access, audit, insights,
local DP and the tenant privacy settings it applies — in the private modules ``privacy/_*.py``.
This module re-exports what may be used from outside them, and nothing else. The services
(``privacy.exports``, ``privacy.compliance``, ``privacy.admin``) are written against these
names only, never against a private module; no core module imports a service
(``tests/unit/test_boundaries.py`` guards both).

What the services get here, besides the gate's value objects:

- ``Gate``: the core gate (``release``, ``preview``, ``budget``, ``aggregate_levels``,
  ``data_clock``, …) with its ``tenant_settings`` (a ``SettingsBook``). It is built with the
  deployment secret; a service that needs the secret (pseudonyms in record exports, link and
  bundle keys) is given the same one by whoever composes them (``privacy.Gate``).
- Records: ``record_treatments`` (authorise a record query, read nothing), ``stream_records``
  (every matching record, treated for the role, in chunks; the caller audits) and
  ``stored_type`` (a field's stored type, for a file's schema).
- Audit: ``audit`` (its own transaction), ``audit_in`` (the caller's), ``audit_best_effort``
  (when the store may be failing), ``STORE_ERRORS``.
- Budgets: ``window_of`` (the refresh window of a day).
- Settings: ``SettingsBook`` and its value objects; ``same_subject`` (one person's subjects).

No Streamlit here, and no logic: only names.
"""

from __future__ import annotations

from privacy._audit import STORE_ERRORS, audit, audit_best_effort, audit_in
from privacy._budget import PeriodBudgetExhausted, window_of
from privacy._gate import Gate
from privacy._insights import Insight, InsightPoint
from privacy._local import LocalEstimate, LocalRandomizer, estimate_local
from privacy._records import (RecordPage, RecordQuery, RecordStream, record_treatments,
                              stored_type, stream_records)
from privacy._settings import (SettingChange, SettingsBook, SettingsVersion, TenantSettings,
                               policy_version, product_k, same_subject, settings_version_of)
from privacy._values import (BudgetStatus, Cell, DataClock, Delta, Epsilon, PeriodStatus, Preview,
                             Principal, PrivacyLoss, Query, Release, add_months)

__all__ = [
    # the gate and what it answers with
    "BudgetStatus", "Cell", "DataClock", "Delta", "Epsilon", "Gate", "Insight",
    "InsightPoint", "PeriodBudgetExhausted", "PeriodStatus", "Preview", "Principal",
    "PrivacyLoss", "Query", "Release", "add_months",
    # local differential privacy
    "LocalEstimate", "LocalRandomizer", "estimate_local",
    # records
    "RecordPage", "RecordQuery", "RecordStream", "record_treatments", "stored_type",
    "stream_records",
    # audit and budgets
    "STORE_ERRORS", "audit", "audit_best_effort", "audit_in", "window_of",
    # tenant privacy settings (D8)
    "SettingChange", "SettingsBook", "SettingsVersion", "TenantSettings", "policy_version",
    "product_k", "same_subject", "settings_version_of",
]
