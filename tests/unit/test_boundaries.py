"""Architecture guards: pages and the dashboard reach data only through the privacy gate, and
inside ``privacy/`` the gate core and the services beside it keep their borders (issue 19)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import privacy
from data.config import PROJECT_ROOT

# The CLI is an operator tool under dashboard/ that never shows a released number to a user
# (a module, or a package of modules).
CLI = PROJECT_ROOT / "dashboard" / "cli"
FORBIDDEN = ("data", "sqlalchemy", "psycopg", "opendp")
PRIVACY = PROJECT_ROOT / "privacy"
#: The services beside the gate core, in the only direction they may depend on each other: a
#: service may import services listed before it, never one after it, so there is no circle.
#: Today none imports another (the admin page's umbrella approvals call ``gate.exports``).
SERVICES = ("exports", "admin", "compliance", "snapshots")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function; a relative import is
    named ``.`` (nothing here uses one, so a guard below sees it as foreign)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _private(name: str) -> bool:
    """A private module of the privacy package: ``privacy._x``, ``privacy.exports._y``, …"""
    return name.split(".")[0] == "privacy" and any(p.startswith("_") for p in name.split(".")[1:])


def _rel(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT))


UI_FILES = sorted(p for folder in ("pages", "dashboard") for p in (PROJECT_ROOT / folder).rglob("*.py")
                  if p != CLI.with_suffix(".py") and CLI not in p.parents)
CORE_FILES = sorted([*(p for p in PRIVACY.glob("_*.py") if p.name != "__init__.py"),
                     PRIVACY / "core.py"])
SERVICE_FILES = sorted((service, p) for service in SERVICES
                       for p in (PRIVACY / service).rglob("*.py"))


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_ui_never_imports_stores_directly(path):
    """No page or dashboard module imports the data layer, SQLAlchemy, a driver or OpenDP."""
    offending = {name for name in _imports(path)
                 if name.split(".")[0] in FORBIDDEN or _private(name)}
    assert offending == set()


@pytest.mark.parametrize("folder", ["data", "privacy"])
def test_back_end_never_imports_streamlit(folder):
    """data/ and privacy/ stay free of Streamlit."""
    for path in (PROJECT_ROOT / folder).rglob("*.py"):
        assert not any(n.split(".")[0] == "streamlit" for n in _imports(path)), path


def test_the_data_layer_never_imports_the_privacy_layer():
    """data/ sits below the gate: nothing in it imports privacy (the collection-side randomiser
    lives in data/ingest/randomise.py; the gate's estimates import it from there)."""
    offending = {str(path.relative_to(PROJECT_ROOT)) for path in (PROJECT_ROOT / "data").rglob(
        "*.py") if any(n.split(".")[0] == "privacy" for n in _imports(path))}
    assert offending == set()


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


# --- the gate core and the services beside it (issue 19) ---------------------------------------


def test_the_layout_is_what_the_guards_check():
    """Every module of privacy/ is a core module or belongs to one of the services."""
    guarded = set(CORE_FILES) | {p for _, p in SERVICE_FILES} | {PRIVACY / "__init__.py"}
    assert set(PRIVACY.rglob("*.py")) - guarded == set()
    assert all((PRIVACY / service / "__init__.py").is_file() for service in SERVICES)


@pytest.mark.parametrize("path", CORE_FILES, ids=_rel)
def test_the_core_never_imports_a_service(path):
    """A core module (privacy/_*.py, privacy/core.py) imports only core modules of privacy:
    never a service, nor the package root that composes them."""
    offending = {name for name in _imports(path)
                 if name.startswith(".") or name == "privacy"
                 or name.split(".")[:2] in (["privacy", s] for s in SERVICES)}
    assert offending == set()


@pytest.mark.parametrize("service,path", SERVICE_FILES,
                         ids=[_rel(p) for _, p in SERVICE_FILES])
def test_services_reach_the_gate_through_its_public_core_only(service, path):
    """A service imports privacy.core and its own package, never a private core module
    (privacy._*) nor the package root."""
    offending = {name for name in _imports(path)
                 if name.startswith(".") or name == "privacy" or name.startswith("privacy._")}
    assert offending == set()


@pytest.mark.parametrize("service,path", SERVICE_FILES,
                         ids=[_rel(p) for _, p in SERVICE_FILES])
def test_services_depend_on_each_other_in_one_direction(service, path):
    """A service imports another only if it comes earlier in SERVICES (no circle), and then
    only its public names (the package or a public module, never a private one)."""
    others = {name.split(".")[1] for name in _imports(path)
              if name.split(".")[0] == "privacy" and len(name.split(".")) > 1
              and name.split(".")[1] in SERVICES and name.split(".")[1] != service}
    assert others <= set(SERVICES[:SERVICES.index(service)])
    assert not {name for name in _imports(path) if _private(name)
                and name.split(".")[1] in set(SERVICES) - {service}}


def test_the_gate_callers_use_is_the_core_gate_with_the_same_constructor():
    """privacy.Gate extends the core gate (attaching the services) and is built like it."""
    from privacy import core

    assert issubclass(privacy.Gate, core.Gate)
    assert inspect.signature(privacy.Gate) == inspect.signature(core.Gate)
