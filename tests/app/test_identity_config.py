"""Identity configuration fails closed (A1, A2, E3): settings, the role mappings file, sign-in sources.

A missing identity source lets nobody in and names the setting; a malformed role mappings file
stops start-up naming the file and key; ``veil init`` applies the file idempotently and the
app refuses to start on a store that does not hold it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from dashboard.cli import main as veil
from data.bootstrap import DEMO_MAPPING_SOURCE, init_store, utcnow
from data.catalog import load_catalog
from data.config import PROJECT_ROOT, load_settings
from data.engine import open_store
from data.errors import ConfigError
from data.models import RoleMapping
from data.role_mappings import (
    FILE_SOURCE,
    apply_role_mappings,
    load_role_mappings,
    role_mapping_drift,
)
from privacy import AccessDenied
from privacy._access import resolve_principal
from tests.app.conftest import APP

AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "apptest-cookie-secret-0123456789",
    "client_id": "veil",
    "client_secret": "apptest-client-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}
ONE_MAPPING = """version = 1
[[mapping]]
claim = "email"
value = "Ana@Health.example"
role = "policy_maker"
tenant = "kigali-east"
"""


@pytest.fixture(scope="module")
def catalog_():
    return load_catalog(PROJECT_ROOT / "catalog")


@pytest.fixture
def mapping_file(tmp_path):
    def write(text: str, name: str = "role_mappings.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


@pytest.fixture(scope="module")
def bare_var(tmp_path_factory, catalog_) -> Path:
    """An initialised store (demo accounts, no demo data) holding the shipped mappings file."""
    var = tmp_path_factory.mktemp("bare-var")
    store = open_store(load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"}))
    init_store(store, catalog_, demo_accounts=True, role_mappings=load_role_mappings(
        PROJECT_ROOT / "config" / "role_mappings.toml", catalog_))
    store.dispose()
    return var


@pytest.fixture
def app_env(bare_var, monkeypatch):
    """Set Veil's variables for an AppTest: ``app_env(VEIL_DEMO_MODE="0", ...)``."""
    for key in ("VEIL_DATABASE_URL", "VEIL_SECRET", "VEIL_DEMO_MODE", "VEIL_DEMO_ACCOUNTS",
                "VEIL_ROLE_MAPPINGS", "VEIL_SESSION_HOURS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VEIL_VAR_DIR", str(bare_var))

    def apply(**env: str) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    return apply


def run_app(auth: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if auth is not None:
        at.secrets["auth"] = auth
    return at.run()


# --- settings ----------------------------------------------------------------------------------


def test_session_lifetime_defaults_to_eight_hours():
    """Unset VEIL_SESSION_HOURS means an 8-hour session."""
    assert load_settings({"VEIL_VAR_DIR": "/tmp/v"}).session_hours == 8.0


def test_session_lifetime_accepts_fractions_of_an_hour():
    """Half an hour is a valid lifetime."""
    assert load_settings({"VEIL_SESSION_HOURS": "0.5"}).session_hours == 0.5


@pytest.mark.parametrize("raw", ["0", "-1", "eight", "nan", "inf", "721"])
def test_session_lifetime_outside_its_range_names_the_variable(raw):
    """Zero, negative, non-numeric or beyond the 30-day identity cookie: ConfigError."""
    with pytest.raises(ConfigError, match=rf"VEIL_SESSION_HOURS must be .* got '{raw}'"):
        load_settings({"VEIL_SESSION_HOURS": raw})


@pytest.mark.parametrize("raw, expected", [("", None), ("auto", None), ("0", False), ("1", True)])
def test_demo_accounts_setting(raw, expected):
    """Unset or auto leaves the choice to "is OIDC configured"; 0 and 1 decide."""
    assert load_settings({"VEIL_DEMO_ACCOUNTS": raw}).demo_accounts is expected


def test_demo_accounts_cannot_be_forced_on_outside_demo_mode():
    """A public demo password never guards a real store."""
    with pytest.raises(ConfigError, match="VEIL_DEMO_ACCOUNTS=1 needs VEIL_DEMO_MODE=1"):
        load_settings({"VEIL_DEMO_ACCOUNTS": "1", "VEIL_DEMO_MODE": "0",
                       "VEIL_SECRET": "s" * 32})


def test_demo_accounts_setting_must_be_known():
    """Anything but 0, 1 or auto is refused, quoting the value."""
    with pytest.raises(ConfigError, match="VEIL_DEMO_ACCOUNTS must be 0, 1 or auto, got 'yes'"):
        load_settings({"VEIL_DEMO_ACCOUNTS": "yes"})


def test_role_mappings_file_defaults_to_config_folder():
    """Without VEIL_ROLE_MAPPINGS the versioned config/role_mappings.toml is used."""
    assert load_settings({}).role_mappings_file == PROJECT_ROOT / "config" / "role_mappings.toml"


# --- the role mappings file ----------------------------------------------------------------------


def test_shipped_role_mappings_file_is_valid_and_maps_nobody(catalog_):
    """config/role_mappings.toml ships empty: organisation accounts need explicit mappings."""
    spec = load_role_mappings(PROJECT_ROOT / "config" / "role_mappings.toml", catalog_)
    assert spec.mappings == ()


def test_role_mappings_file_is_loaded_with_emails_lowercased(mapping_file, catalog_):
    """A valid file loads; e-mail values are compared case-insensitively, so lowercased."""
    spec = load_role_mappings(mapping_file(ONE_MAPPING), catalog_)
    assert [(m.claim, m.value, m.role, m.tenant) for m in spec.mappings] == [
        ("email", "ana@health.example", "policy_maker", "kigali-east")]


@pytest.mark.parametrize("text, key, reason", [
    ("version = 1\n[[mapping]\n", None, "not valid TOML"),
    ("[[mapping]]\nclaim='email'\n", "version", "must be 1, got None"),
    ("version = 2\n", "version", "must be 1, got 2"),
    ("version = 1\nmappings = []\n", "mappings", "is not a known key"),
    ("version = 1\nmapping = 3\n", "mapping", "must be an array of tables"),
    (ONE_MAPPING.replace('role = "policy_maker"\n', ""), "mapping[0].role",
     "is required but missing"),
    (ONE_MAPPING.replace('role = "policy_maker"', 'rol = "policy_maker"'), "mapping[0].rol",
     "is not a known key"),
    (ONE_MAPPING.replace('"policy_maker"', '"superuser"'), "mapping[0].role",
     "must be a role of roles.toml .* got 'superuser'"),
    (ONE_MAPPING.replace('"kigali-east"', '"atlantis"'), "mapping[0].tenant",
     "must be a tenant of tenants.toml .* got 'atlantis'"),
    (ONE_MAPPING.replace('"policy_maker"', '"publisher"'), "mapping[0].role",
     "role 'publisher' has no pages in roles.toml: it is not a role a person signs in as"),
    (ONE_MAPPING.replace('"email"', '"phone"'), "mapping[0].claim",
     "must be one of \\['email', 'sub', 'group'\\], got 'phone'"),
    (ONE_MAPPING.replace('"Ana@Health.example"', '"ana"'), "mapping[0].value",
     "must be an e-mail address, got 'ana'"),
    (ONE_MAPPING.replace('"Ana@Health.example"', '""'), "mapping[0].value",
     "must be a non-empty string"),
    (ONE_MAPPING.replace('"Ana@Health.example"', "7"), "mapping[0].value",
     "must be a non-empty string, got 7"),
    (ONE_MAPPING + ONE_MAPPING.replace("version = 1\n", "").replace("Ana@", "ana@"),
     "mapping[1].value", "is already mapped by mapping\\[0\\]"),
], ids=["toml", "no-version", "version-2", "unknown-top-key", "mapping-not-array",
        "missing-role", "misspelt-key", "unknown-role", "unknown-tenant", "role-without-pages",
        "unknown-claim",
        "email-without-at", "empty-value", "non-string-value", "duplicate"])
def test_malformed_role_mappings_name_the_file_and_key(text, key, reason, mapping_file,
                                                        catalog_):
    """Every defect is a ConfigError naming the file, the key and what is wrong."""
    path = mapping_file(text)
    where = re.escape(f"{path}: key '{key}'" if key else f"{path}")
    with pytest.raises(ConfigError, match=rf"^{where}.*{reason}"):
        load_role_mappings(path, catalog_)


def test_missing_role_mappings_file_names_the_variable(tmp_path, catalog_):
    """A missing file stops start-up naming VEIL_ROLE_MAPPINGS, never means "no mappings"."""
    with pytest.raises(ConfigError, match="role mappings file is missing .*VEIL_ROLE_MAPPINGS="):
        load_role_mappings(tmp_path / "nope.toml", catalog_)


def _mappings(store) -> set[tuple[str, str, str, str, str]]:
    with store.read() as session:
        return {(r.claim, r.value, r.role, r.tenant_id, r.created_by)
                for r in session.scalars(select(RoleMapping))
                if r.created_by != DEMO_MAPPING_SOURCE}


def test_applying_the_file_is_idempotent_and_revokes_removed_lines(store, catalog_,
                                                                   mapping_file):
    """Apply twice: nothing changes the second time; a removed line is removed from the store."""
    spec = load_role_mappings(mapping_file(ONE_MAPPING + """
[[mapping]]
claim = "group"
value = "veil-donors"
role = "donor"
tenant = "south"
"""), catalog_)
    with store.write.begin() as session:
        assert apply_role_mappings(session, spec) == 2
    with store.write.begin() as session:
        assert apply_role_mappings(session, spec) == 0
        assert role_mapping_drift(session, spec) == []
    smaller = load_role_mappings(mapping_file(ONE_MAPPING.replace('"policy_maker"',
                                                                  '"researcher"'), "b.toml"),
                                 catalog_)
    with store.write.begin() as session:
        assert apply_role_mappings(session, smaller) == 2  # one changed, one removed
    assert _mappings(store) == {
        ("email", "ana@health.example", "researcher", "kigali-east", FILE_SOURCE)}


def test_file_never_overrides_a_mapping_made_elsewhere(store, catalog_, mapping_file):
    """A file line for a demo account's address is a clash to resolve, not an overwrite."""
    spec = load_role_mappings(mapping_file(ONE_MAPPING.replace(
        "Ana@Health.example", "donor@south.demo")), catalog_)
    with pytest.raises(ConfigError, match=r"key 'mapping\[0\].value': email 'donor@south.demo' "
                                          r"is already mapped to donor at south by "
                                          r"'veil init \(demo\)'"):
        with store.write.begin() as session:
            apply_role_mappings(session, spec)


def test_drift_lists_what_differs(store, catalog_, mapping_file):
    """A file line the store lacks is reported as drift."""
    spec = load_role_mappings(mapping_file(ONE_MAPPING), catalog_)
    with store.read() as session:
        assert role_mapping_drift(session, spec) == [
            "email 'ana@health.example' is not in the store"]


def test_a_role_without_pages_is_never_signed_in_as(store, catalog_):
    """A mapping row to a page-less role (made outside the file) still gives no access."""
    with store.write.begin() as session:
        session.add(RoleMapping(claim="email", value="bot@programmes.example", role="publisher",
                                tenant_id="south", created_at=utcnow(), created_by="test"))
    with pytest.raises(AccessDenied, match="has no role in Veil"):
        resolve_principal(store, catalog_, {"email": "bot@programmes.example"}, source="oidc")


def test_veil_init_applies_the_file_and_veil_check_verifies_it(tmp_path, mapping_file,
                                                               monkeypatch, capsys):
    """`veil init` applies VEIL_ROLE_MAPPINGS; `veil check` fails once the file has changed."""
    path = mapping_file(ONE_MAPPING)
    # outside demo mode someone must be able to sign in: organisation accounts, by [auth]
    secrets = mapping_file("[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in AUTH.items()),
                           "secrets.toml")
    check = ["check", "--secrets", str(secrets)]
    for key in ("VEIL_DATABASE_URL", "VEIL_SECRET", "VEIL_DEMO_ACCOUNTS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VEIL_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("VEIL_DEMO_MODE", "0")
    monkeypatch.setenv("VEIL_SECRET", "s" * 32)
    monkeypatch.setenv("VEIL_ROLE_MAPPINGS", str(path))
    assert veil(["init"]) == 0
    assert "1 role mappings from" in capsys.readouterr().out
    assert veil(check) == 0
    path.write_text(ONE_MAPPING.replace("policy_maker", "donor"))
    assert veil(check) == 2
    assert "Run `veil init` to apply it" in capsys.readouterr().err
    assert veil(["init"]) == 0 and veil(check) == 0


# --- the app fails closed ------------------------------------------------------------------------


def test_malformed_role_mappings_stop_the_app_naming_file_and_key(app_env, mapping_file):
    """Start-up stops with the file and the key named; no sign-in form is offered."""
    path = mapping_file(ONE_MAPPING.replace('"kigali-east"', '"atlantis"'))
    app_env(VEIL_ROLE_MAPPINGS=str(path))
    at = run_app()
    assert not at.exception
    assert at.error[0].value.startswith(f"Veil cannot start: {path}: key 'mapping[0].tenant'")
    assert not at.text_input and not at.button


def test_store_without_the_current_mappings_stops_the_app(app_env, mapping_file):
    """A changed file that `veil init` has not applied yet stops start-up (fail closed)."""
    app_env(VEIL_ROLE_MAPPINGS=str(mapping_file(ONE_MAPPING)))
    at = run_app()
    assert "do not match this file" in at.error[0].value
    assert "Run `veil init` to apply it" in at.error[0].value
    assert not at.text_input


def test_no_auth_section_and_no_demo_mode_lets_nobody_in(app_env):
    """No [auth] and demo mode off: the page names both settings; no form, no button."""
    app_env(VEIL_DEMO_MODE="0", VEIL_SECRET="s" * 32)
    at = run_app()
    assert not at.exception
    message = at.error[0].value
    assert "Nobody can sign in" in message
    assert "no [auth] section in .streamlit/secrets.toml" in message
    assert "VEIL_DEMO_MODE=1" in message
    assert not at.text_input and not at.button
    assert "veil_principal" not in at.session_state


def test_demo_accounts_switched_off_explicitly_let_nobody_in(app_env):
    """Demo mode with VEIL_DEMO_ACCOUNTS=0 and no [auth]: refused, naming VEIL_DEMO_ACCOUNTS."""
    app_env(VEIL_DEMO_MODE="1", VEIL_DEMO_ACCOUNTS="0")
    at = run_app()
    assert "VEIL_DEMO_ACCOUNTS=0" in at.error[0].value
    assert not at.text_input and not at.button


def test_oidc_configured_hides_the_demo_accounts(app_env):
    """With [auth] present the demo accounts are off by default: only the organisation button."""
    app_env(VEIL_DEMO_MODE="1")
    at = run_app(AUTH)
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in with your organisation"]
    assert not at.text_input
    assert not any("Demo identity source" in i.value for i in at.info)


def test_demo_accounts_can_be_kept_beside_oidc_explicitly(app_env):
    """VEIL_DEMO_ACCOUNTS=1 offers both sources, the demo one labelled as such."""
    app_env(VEIL_DEMO_MODE="1", VEIL_DEMO_ACCOUNTS="1")
    at = run_app(AUTH)
    assert [b.label for b in at.button] == ["Sign in with your organisation", "Sign in"]
    assert any("Demo identity source" in i.value for i in at.info)


@pytest.mark.parametrize("missing", ["client_secret", "redirect_uri", "cookie_secret"])
def test_incomplete_auth_section_names_the_missing_key(missing, app_env):
    """An [auth] section lacking a key switches OIDC off, names the key, and lets nobody in."""
    app_env(VEIL_DEMO_MODE="1")
    at = run_app({k: v for k, v in AUTH.items() if k != missing})
    assert not at.exception
    assert f"[auth] section is missing auth.{missing}" in at.error[0].value
    assert "Nobody can sign in" in at.error[1].value
    assert not at.button and not at.text_input


def test_redirect_uri_must_be_the_oauth_callback(app_env):
    """A redirect_uri that is not /oauth2callback is named and switches OIDC off."""
    app_env(VEIL_DEMO_MODE="1")
    at = run_app(dict(AUTH, redirect_uri="http://127.0.0.1:8501/"))
    assert "auth.redirect_uri' must end with /oauth2callback" in at.error[0].value
    assert not at.button


def test_bad_session_setting_stops_the_app(app_env):
    """A malformed VEIL_SESSION_HOURS reaches the page as one message naming it."""
    app_env(VEIL_SESSION_HOURS="forever")
    at = run_app()
    assert at.error[0].value.startswith("Veil cannot start: VEIL_SESSION_HOURS must be")
    assert not at.text_input
