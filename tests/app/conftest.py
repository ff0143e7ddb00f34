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
from privacy import open_gate
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
def pinned_clock(monkeypatch) -> datetime:
    """The pages' clock (budget windows, audit periods, freshness) stands still at a fixed
    instant in every AppTest, so no page test depends on the day it runs."""
    monkeypatch.setattr(clock, "utcnow", lambda: PAGES_NOW)
    return PAGES_NOW


@pytest.fixture
def demo_env(demo_var, monkeypatch) -> Path:
    monkeypatch.setenv("VEIL_VAR_DIR", str(demo_var))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    return demo_var


def sign_in(username: str, password: str = DEMO_PASSWORD) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.text_input(key="demo_username").input(username)
    at.text_input(key="demo_password").input(password)
    at.button[0].click()
    at.run()
    return at
