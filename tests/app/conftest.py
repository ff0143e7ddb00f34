"""A small demo store shared by the AppTests, built once per session through the real pipeline."""

from __future__ import annotations

from datetime import datetime
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


@pytest.fixture(scope="session")
def demo_var(tmp_path_factory) -> Path:
    var = tmp_path_factory.mktemp("demo-var")
    settings = load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"})
    catalog = load_catalog(settings.catalog_dir)
    store = open_store(settings)
    init_store(store, catalog, demo_accounts=True)
    generate(store, catalog, size="small", seed=7, secret=settings.secret, as_of=DEMO_AS_OF)
    materialize(store, catalog)
    store.dispose()
    gate = open_gate(settings)
    publish_defaults(gate, requested_by="test fixture")  # what `veil demo` does
    gate.close()
    return var


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
