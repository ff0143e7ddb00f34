"""Misconfiguration fails closed with a message naming the setting."""

from __future__ import annotations

import pytest

from data.config import load_settings
from data.engine import open_store
from data.errors import ConfigError, StoreError
from privacy import open_gate


def test_unset_url_means_embedded_file_under_var(tmp_path):
    """No VEIL_DATABASE_URL: an embedded SQLite file under the var directory, in demo mode."""
    settings = load_settings({"VEIL_VAR_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'veil.db'}"
    assert settings.demo_mode and settings.is_embedded


@pytest.mark.parametrize("url, message", [
    ("not a url", "VEIL_DATABASE_URL is not a valid database URL"),
    ("mysql://root@localhost/veil", "VEIL_DATABASE_URL must be a sqlite:/// or postgresql://"),
])
def test_bad_database_url_names_the_setting(url, message):
    """A malformed or unsupported URL is a ConfigError naming VEIL_DATABASE_URL."""
    settings = load_settings({"VEIL_DATABASE_URL": url, "VEIL_SECRET": "x" * 32})
    with pytest.raises(ConfigError, match=message):
        open_store(settings)


def test_unreachable_postgres_names_the_setting():
    """A server that does not answer is a StoreError naming the setting, password redacted."""
    settings = load_settings({
        "VEIL_DATABASE_URL": "postgresql://veil:hunter2@127.0.0.1:1/veil?connect_timeout=2",
        "VEIL_SECRET": "x" * 32})
    with pytest.raises(StoreError, match=r"Cannot reach the store at VEIL_DATABASE_URL=") as caught:
        open_store(settings)
    assert "hunter2" not in str(caught.value)


def test_production_mode_without_secret_refuses_to_start():
    """Outside demo mode a missing VEIL_SECRET stops start-up with the variable named."""
    with pytest.raises(ConfigError, match="VEIL_SECRET is not set"):
        load_settings({"VEIL_DATABASE_URL": "postgresql://x@127.0.0.1/veil"})


def test_demo_mode_flag_must_be_zero_or_one():
    with pytest.raises(ConfigError, match="VEIL_DEMO_MODE must be 0 or 1, got 'yes'"):
        load_settings({"VEIL_DEMO_MODE": "yes"})


def test_missing_catalog_directory_stops_the_gate(tmp_path):
    """The gate will not open without its catalog, and says which setting points where."""
    settings = load_settings({"VEIL_VAR_DIR": str(tmp_path),
                              "VEIL_CATALOG_DIR": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="VEIL_CATALOG_DIR=.*does not exist"):
        open_gate(settings)


def test_uninitialised_store_asks_for_veil_init(tmp_path):
    """A store without the schema is refused with the command that fixes it."""
    settings = load_settings({"VEIL_VAR_DIR": str(tmp_path)})
    with pytest.raises(StoreError, match=r"schema revision none .* Run `veil init`"):
        open_gate(settings)
