"""A small demo store shared by the AppTests, built once per session through the real pipeline."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import date, datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from data import clock
from data.bootstrap import DEMO_PASSWORD, init_store
from data.catalog import load_catalog
from data.config import PROJECT_ROOT, load_settings
from data.demo import generate
from data.engine import open_store
from data.materialize import materialize
from dashboard.cli import publish_defaults
from dashboard.context import PRINCIPAL_KEY, SIGNED_IN_AT_KEY, now
from privacy import Principal, open_gate
from tests.pinned import DEMO_AS_OF, PAGES_NOW

APP = str(PROJECT_ROOT / "dashboard" / "app.py")


def build_demo(var: Path, *, as_of: date = DEMO_AS_OF) -> Path:
    """A small demo store in ``var`` generated as of ``as_of``, as `veil demo` builds it."""
    settings = load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"})
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=True)
    generate(store, catalog, size="small", seed=7, secret=settings.secret, as_of=as_of)
    materialize(store, catalog)
    store.dispose()
    gate = open_gate(settings)
    publish_defaults(gate, requested_by="test fixture")  # what `veil demo` does
    gate.close()
    return var


def copy_demo(source: Path, var: Path) -> Path:
    """A private copy of a demo store, for tests whose releases others must not see."""
    with closing(sqlite3.connect(source / "veil.db")) as old, \
            closing(sqlite3.connect(var / "veil.db")) as new:
        old.backup(new)
    return var


@pytest.fixture(scope="session")
def demo_var(tmp_path_factory) -> Path:
    return build_demo(tmp_path_factory.mktemp("demo-var"))


@pytest.fixture(autouse=True)
def no_snapshot_scheduler(monkeypatch) -> None:
    """No background publisher in AppTests of app.py: its job runs and releases would land in
    the shared demo store mid-test (tests/system/test_snapshot_schedule.py tests it)."""
    monkeypatch.setenv("VEIL_SNAPSHOT_SCHEDULER", "0")


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch) -> datetime:
    """The pages' clock (budget windows, audit periods, freshness) stands still at a fixed
    instant in every AppTest, so no page test depends on the day it runs."""
    monkeypatch.setattr(clock, "utcnow", lambda: PAGES_NOW)
    return PAGES_NOW


def use_var(var: Path, monkeypatch) -> Path:
    """Point the pages at the demo store in ``var`` (demo mode, no other database)."""
    monkeypatch.setenv("VEIL_VAR_DIR", str(var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    return var


@pytest.fixture
def demo_env(demo_var, monkeypatch) -> Path:
    return use_var(demo_var, monkeypatch)


@pytest.fixture(scope="module")
def private_var(demo_var, tmp_path_factory) -> Path:
    """A private copy of the shared demo for one test module: its tests release views of
    their own, which no other module may find stored."""
    return copy_demo(demo_var, tmp_path_factory.mktemp("private-var"))


@pytest.fixture
def private_demo_env(private_var, monkeypatch) -> Path:
    return use_var(private_var, monkeypatch)


def open_page(page: str, role: str, query_params: dict | None = None, *,
              tenant: str = "kigali-east") -> AppTest:
    """Run ``pages/<page>.py`` for a demo ``role`` of ``tenant`` signed in just now, at an
    address carrying ``query_params``."""
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / f"{page}.py"), default_timeout=60)
    at.session_state[PRINCIPAL_KEY] = Principal(
        subject=f"{role.replace('_', '.')}@{tenant}.demo", display_name=role, role=role,
        tenant=tenant, source="demo")
    at.session_state[SIGNED_IN_AT_KEY] = now()
    for key, value in (query_params or {}).items():
        at.query_params[key] = value
    return at.run()


def widget(at: AppTest, kind: str, label: str):
    """The first widget of ``kind`` (``selectbox``, ``radio``, …) labelled ``label``."""
    return next(w for w in getattr(at, kind) if w.label == label)


def sign_in(username: str, password: str = DEMO_PASSWORD) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.text_input(key="demo_username").input(username)
    at.text_input(key="demo_password").input(password)
    at.button[0].click()
    at.run()
    return at
