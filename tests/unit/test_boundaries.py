"""Architecture guards: pages and the dashboard reach data only through the privacy gate."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import privacy
from data.config import PROJECT_ROOT

# The CLI is an operator tool under dashboard/ that never shows a released number to a user.
EXEMPT = {PROJECT_ROOT / "dashboard" / "cli.py"}
FORBIDDEN = ("data", "sqlalchemy", "psycopg", "opendp")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


UI_FILES = sorted(p for folder in ("pages", "dashboard") for p in (PROJECT_ROOT / folder).rglob("*.py")
                  if p not in EXEMPT)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_ui_never_imports_stores_directly(path):
    """No page or dashboard module imports the data layer, SQLAlchemy, a driver or OpenDP."""
    offending = {name for name in _imports(path)
                 if name.split(".")[0] in FORBIDDEN or name.startswith("privacy._")}
    assert offending == set()


@pytest.mark.parametrize("folder", ["data", "privacy"])
def test_back_end_never_imports_streamlit(folder):
    """data/ and privacy/ stay free of Streamlit."""
    for path in (PROJECT_ROOT / folder).rglob("*.py"):
        assert not any(n.split(".")[0] == "streamlit" for n in _imports(path)), path


def test_privacy_public_surface_is_pinned():
    """The gate's public names change only on purpose."""
    assert sorted(privacy.__all__) == sorted([
        "AccessDenied", "BudgetExhausted", "BudgetStatus", "Cell", "ConfigError", "Epsilon",
        "DownloadLink", "ExportFile", "ExportStatus", "PendingApproval",
        "Gate", "Insight", "InsightPoint", "InvalidInput", "LocalEstimate", "LocalRandomizer", "Preview", "Principal", "Query", "QueryRefused", "RecordPage",
        "RecordQuery", "Release",
        "Settings", "StoreError", "VeilBug", "VeilError", "estimate_local", "load_settings",
        "open_gate",
        # compliance reads (D7)
        "AuditFilter", "BudgetFilter", "BudgetUsage", "ConsentFilter", "ConsentStatistics",
        "ExportFilter", "KpiDefinition", "LogPage", "PolicyDiff", "PolicyVersion",
        "ProductQuality", "ReleaseFilter",
        # administration (D8)
        "MappingHistoryEntry", "RoleMappingView", "SettingChange", "SettingsVersion",
        "TenantSettings",
        # the data's clock (issue 13): pages default to the latest complete month with data
        "DataClock", "add_months",
        # (ε, δ) accounting (issue 14.3): Gaussian releases compose in ρ, spend δ once
        "Delta", "PrivacyLoss",
        # a lifetime budget per month of data (issue 16)
        "PeriodBudgetExhausted", "PeriodStatus"])
