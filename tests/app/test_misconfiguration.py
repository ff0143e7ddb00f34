"""Misconfiguration reaches the page as one clear message naming the setting, never a traceback."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP


@pytest.mark.parametrize("env, message", [
    ({"VEIL_DATABASE_URL": "sqlite//var/veil.db", "VEIL_SECRET": "s" * 32},
     "VEIL_DATABASE_URL is not a valid database URL"),
    ({"VEIL_DATABASE_URL": "postgresql://veil@127.0.0.1:1/veil?connect_timeout=2",
      "VEIL_SECRET": "s" * 32},
     "Cannot reach the store at VEIL_DATABASE_URL="),
    ({"VEIL_CATALOG_DIR": "/nonexistent/catalog"}, "VEIL_CATALOG_DIR=/nonexistent/catalog"),
    ({"VEIL_DATABASE_URL": "postgresql://veil@127.0.0.1/veil"}, "VEIL_SECRET is not set"),
])
def test_bad_configuration_is_shown_without_a_traceback(env, message, monkeypatch, tmp_path):
    """The app refuses to start, names the setting, and shows no exception."""
    monkeypatch.setenv("VEIL_VAR_DIR", str(tmp_path))
    for key in ("VEIL_DATABASE_URL", "VEIL_CATALOG_DIR", "VEIL_SECRET", "VEIL_DEMO_MODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value
    assert at.error[0].value.startswith("Veil cannot start:")
    assert not at.text_input, "no sign-in form on a misconfigured app"


def test_uninitialised_store_points_to_veil_init(monkeypatch, tmp_path):
    """A fresh embedded store that was never initialised asks the operator to run veil init."""
    monkeypatch.setenv("VEIL_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "Run `veil init`" in at.error[0].value
