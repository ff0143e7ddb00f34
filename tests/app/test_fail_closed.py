"""Configuration fails closed (issue 15.5): secrets that do not parse, paths start-up cannot use,
and a `veil check` that says who can sign in.

The secrets tests point Streamlit's own ``secrets.files`` option at a real file on disk, so the
app reads it the way a deployment does (``at.secrets`` would bypass the file).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from dashboard.cli import main as veil
from data.bootstrap import init_store
from data.catalog import load_catalog
from data.config import PROJECT_ROOT, load_settings, start_up_error
from data.engine import open_store
from tests.app.conftest import APP

AUTH = """[auth]
redirect_uri = "http://127.0.0.1:8501/oauth2callback"
cookie_secret = "apptest-cookie-secret-0123456789"
client_id = "veil"
client_secret = "apptest-client-secret"
server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"
"""
#: an [auth] section whose closing bracket is missing: line 1, column 6
BROKEN = AUTH.replace("[auth]", "[auth", 1)


@pytest.fixture(scope="module")
def var(tmp_path_factory) -> Path:
    """An initialised embedded store (demo accounts, the shipped, empty role mappings)."""
    var = tmp_path_factory.mktemp("fail-closed")
    store = open_store(load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"}))
    init_store(store, load_catalog(PROJECT_ROOT / "catalog"), demo_accounts=True)
    store.dispose()
    return var


@pytest.fixture
def env(var, monkeypatch):
    for key in ("VEIL_DATABASE_URL", "VEIL_SECRET", "VEIL_DEMO_MODE", "VEIL_DEMO_ACCOUNTS",
                "VEIL_ROLE_MAPPINGS", "VEIL_SESSION_HOURS", "VEIL_CATALOG_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VEIL_VAR_DIR", str(var))

    def apply(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
    return apply


@pytest.fixture
def secrets_file(tmp_path):
    """``secrets_file(text)``: Streamlit reads this file, and only it, as the app's secrets."""
    saved = streamlit_config.get_option("secrets.files")

    def use(content: str | bytes) -> Path:
        path = tmp_path / "secrets.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        streamlit_config.set_option("secrets.files", [str(path)])
        st.secrets._reset()  # what Streamlit's file watcher does when a secrets file changes
        return path

    yield use
    streamlit_config.set_option("secrets.files", saved)
    st.secrets._reset()


def run_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60).run()


# --- secrets that do not parse ---------------------------------------------------------------


def test_unparsable_secrets_stop_sign_in_in_demo_mode(env, secrets_file):
    """Demo mode with a broken secrets file: no demo form (its password is public), the file
    and line named."""
    env(VEIL_DEMO_MODE="1")
    path = secrets_file(BROKEN)
    at = run_app()
    assert not at.exception
    assert at.title[0].value == "Veil"
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith(f"{path}: cannot be read as TOML")
    assert "line 1" in message and "Nobody can sign in" in message
    assert not at.text_input and not at.button
    assert "veil_principal" not in at.session_state
    secrets_file(AUTH)  # the same file with its bracket back: the organisation's sign-in
    fixed = run_app()
    assert not fixed.error
    assert [b.label for b in fixed.button] == ["Sign in with your organisation"]


def test_unparsable_secrets_on_a_real_store_are_named_not_called_absent(env, secrets_file):
    """Outside demo mode the page names the broken file, never "no [auth] section"."""
    env(VEIL_DEMO_MODE="0", VEIL_SECRET="s" * 32)
    path = secrets_file(BROKEN)
    at = run_app()
    assert not at.exception
    assert [e.value.split(":")[0] for e in at.error] == [str(path)]
    assert "line 1" in at.error[0].value
    assert not any("no [auth] section" in e.value for e in at.error)
    assert not at.button


def test_secrets_that_are_not_utf8_stop_sign_in_too(env, secrets_file):
    """A file Streamlit cannot even decode is refused the same way, naming it."""
    env(VEIL_DEMO_MODE="1")
    secrets_file(AUTH.encode() + b"\nnote = \"\xff\xfe\"\n")
    at = run_app()
    assert not at.exception
    assert "cannot be read as TOML" in at.error[0].value
    assert "utf-8" in at.error[0].value
    assert not at.text_input and not at.button


# --- paths start-up cannot use ------------------------------------------------------------------


def test_an_unusable_store_folder_is_named_on_the_page(env, tmp_path):
    """A VEIL_VAR_DIR under a file: one message naming the variable, no traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env(VEIL_VAR_DIR=str(blocker / "var"))
    at = run_app()
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith(f"Veil cannot start: VEIL_VAR_DIR={blocker / 'var'}: "
                                        f"cannot use {blocker / 'var'}: Not a directory")
    assert not at.text_input


@pytest.mark.parametrize("variable, failing", [
    ("VEIL_VAR_DIR", "{var}/veil.db"),
    ("VEIL_VAR_DIR", "{var}"),
    ("VEIL_ROLE_MAPPINGS", "{mappings}"),
    ("VEIL_CATALOG_DIR", "{catalog}/roles.toml"),
    ("VEIL_DATABASE_URL", "{other}"),
])
def test_every_start_up_os_error_names_its_variable(variable, failing, tmp_path):
    """The path an OSError names leads to the variable that set it."""
    paths = {"var": tmp_path / "var", "mappings": tmp_path / "maps.toml",
             "catalog": tmp_path / "catalog", "other": tmp_path / "elsewhere"}
    env = {"VEIL_VAR_DIR": str(paths["var"]), "VEIL_ROLE_MAPPINGS": str(paths["mappings"]),
           "VEIL_CATALOG_DIR": str(paths["catalog"])}
    if variable == "VEIL_DATABASE_URL":
        env.update(VEIL_DATABASE_URL=f"sqlite:///{paths['other'] / 'x.db'}", VEIL_DEMO_MODE="1")
    error = start_up_error(load_settings(env), PermissionError(
        13, "Permission denied", failing.format(**{k: str(v) for k, v in paths.items()})))
    assert str(error).startswith(f"{variable}=")
    assert "Permission denied" in str(error)


def test_veil_check_names_an_unusable_store_folder(env, tmp_path, capsys):
    """`veil check` reports the folder as a one-line error naming VEIL_VAR_DIR, exit 2."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env(VEIL_VAR_DIR=str(blocker / "var"))
    assert veil(["check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("veil check: error: VEIL_VAR_DIR=") and "Traceback" not in err


# --- veil check: who can sign in ----------------------------------------------------------------


def test_veil_check_reports_organisation_sign_in(env, tmp_path, capsys):
    """With [auth] configured `veil check` says organisation accounts can sign in."""
    env(VEIL_DEMO_MODE="1")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(AUTH)
    assert veil(["check", "--secrets", str(secrets)]) == 0
    out = capsys.readouterr().out
    assert "who can sign in: organisation accounts (OIDC" in out
    assert "demo accounts" not in out  # [auth] present switches them off by default


def test_veil_check_reports_demo_accounts(env, tmp_path, capsys):
    """Demo mode without [auth]: the demo accounts, with their public password, are named."""
    env(VEIL_DEMO_MODE="1")
    assert veil(["check", "--secrets", str(tmp_path / "none.toml")]) == 0
    assert "who can sign in: demo accounts (public password" in capsys.readouterr().out


def test_veil_check_fails_when_nobody_can_sign_in(env, tmp_path, capsys):
    """No [auth] and demo accounts off: `veil check` fails, naming both."""
    env(VEIL_DEMO_MODE="1", VEIL_DEMO_ACCOUNTS="0")
    assert veil(["check", "--secrets", str(tmp_path / "none.toml")]) == 2
    captured = capsys.readouterr()
    assert "configuration ok" not in captured.out
    assert captured.err.startswith("veil check: error: nobody can sign in: there is no [auth] "
                                   "section in ")


def test_veil_check_fails_on_unparsable_secrets_naming_file_and_line(env, tmp_path, capsys):
    """A broken secrets file: `veil check` fails with the file and the line, even in demo mode."""
    env(VEIL_DEMO_MODE="1")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(BROKEN)
    assert veil(["check", "--secrets", str(secrets)]) == 2
    err = capsys.readouterr().err
    assert f"nobody can sign in: {secrets}: cannot be read as TOML" in err
    assert "line 1" in err
