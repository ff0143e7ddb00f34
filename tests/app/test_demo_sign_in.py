"""A demo sign-in survives a browser refresh within its lifetime, on the gate's record (issue 17).

The browser keeps only a random token (the ``veil_demo`` cookie); the store keeps its hash and
when the sign-in ends. A refresh starts a new Streamlit session that sends the cookie: it
resumes the sign-in while the record says it is open, and a signed-out, expired or unknown
token gets the sign-in page and an audit entry. AppTest has no browser, so the cookie the
browser would send is given to ``dashboard.identity._browser_cookies``.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from data import clock
from data.config import load_settings
from data.engine import open_store
from data.models import AuditEntry, SignIn
from dashboard import identity
from privacy import AccessDenied, open_gate
from tests.app.conftest import APP, copy_demo, sign_in

USER = "policy.maker@kigali-east.demo"


@pytest.fixture
def var(demo_var, tmp_path, monkeypatch) -> Path:
    """A private copy of the demo store: sign-outs here end no other test's sign-ins."""
    copy_demo(demo_var, tmp_path)
    monkeypatch.setenv("VEIL_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("VEIL_DEMO_MODE", "1")
    monkeypatch.delenv("VEIL_DATABASE_URL", raising=False)
    return tmp_path


def _rows(var: Path, model, *where):
    store = open_store(load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"}))
    try:
        with store.read() as session:
            return list(session.scalars(select(model).where(*where).order_by(model.id)))
    finally:
        store.dispose()


def _logins(var: Path) -> list[tuple[str, str]]:
    return [(a.outcome, (a.detail or {}).get("reason", "")) for a in
            _rows(var, AuditEntry, AuditEntry.action == "login", AuditEntry.target == "demo")]


def _cookie_of(at: AppTest) -> str:
    started = at.session_state["veil_signed_in_at"]
    return f"{int(started.timestamp())}.{at.session_state['veil_demo_token']}"


def _refresh(monkeypatch, cookie: str | None) -> AppTest:
    """A new browser session of the same browser: it sends the demo cookie, nothing else."""
    monkeypatch.setattr(identity, "_browser_cookies",
                        lambda: {identity.DEMO_COOKIE: cookie} if cookie else {})
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    return at


def test_a_demo_sign_in_is_on_record_under_the_hash_of_its_token(var):
    """The store holds the token's SHA-256 and the session's end, never the token."""
    at = sign_in(USER)
    token = at.session_state["veil_demo_token"]
    [row] = _rows(var, SignIn, SignIn.source == "demo")
    assert row.id == hashlib.sha256(token.encode()).hexdigest() != token
    assert (row.subject, row.ended_at) == (USER, None)
    assert row.expires_at - row.issued_at == timedelta(hours=8)
    assert _logins(var) == [("allowed", "")]


def test_a_refresh_resumes_the_demo_sign_in_without_a_new_login(var, monkeypatch):
    """The cookie of an open sign-in gets the same principal back; one login on record."""
    signed_in = sign_in(USER)
    again = _refresh(monkeypatch, _cookie_of(signed_in))
    assert again.session_state["veil_principal"] == signed_in.session_state["veil_principal"]
    assert again.title[0].value.startswith("Welcome, ")
    assert again.session_state["veil_signed_in_at"] == (
        signed_in.session_state["veil_signed_in_at"].replace(microsecond=0))
    assert _logins(var) == [("allowed", "")]


def test_replaying_the_cookie_after_sign_out_is_refused_and_audited(var, monkeypatch):
    """Sign-out ends the record; the same cookie afterwards gets the sign-in page."""
    at = sign_in(USER)
    cookie = _cookie_of(at)
    [b for b in at.button if b.label == "Sign out"][0].click().run()
    replay = _refresh(monkeypatch, cookie)
    assert "veil_principal" not in replay.session_state
    assert replay.title[0].value == "Veil"
    assert "This sign-in has ended (signed out)" in replay.warning[0].value
    assert _rows(var, SignIn, SignIn.source == "demo")[0].ended_reason == "signed out"
    assert _logins(var) == [("allowed", ""), ("refused", "sign-in signed out")]


def test_an_expired_demo_cookie_is_refused_and_audited(var, monkeypatch, pinned_clock):
    """Past the session's hours on the gate's clock the cookie no longer signs anyone in."""
    cookie = _cookie_of(sign_in(USER))
    monkeypatch.setattr(clock, "utcnow", lambda: pinned_clock + timedelta(hours=8, seconds=1))
    late = _refresh(monkeypatch, cookie)
    assert "veil_principal" not in late.session_state
    assert "Your session ended 8 hours after you signed in" in late.warning[0].value
    assert _rows(var, SignIn, SignIn.source == "demo")[0].ended_reason == "expired"
    assert _logins(var)[-1] == ("refused", "sign-in expired")


def test_an_unknown_token_is_refused_and_audited(var, monkeypatch):
    """A made-up cookie signs nobody in and says so; the attempt is on record."""
    made_up = _refresh(monkeypatch, "1700000000." + "A" * 43)
    assert "veil_principal" not in made_up.session_state
    assert "not on record" in made_up.warning[0].value
    assert _logins(var) == [("refused", "sign-in not on record")]


def test_a_malformed_cookie_is_ignored(var, monkeypatch):
    """A cookie that is not ``<time>.<token>`` is not even looked up: the sign-in page."""
    at = _refresh(monkeypatch, "not a veil cookie")
    assert at.title[0].value == "Veil"
    assert _logins(var) == []


def test_only_a_password_check_starts_a_demo_sign_in(var):
    """A token with a claimed e-mail but no proof of the password check is not recorded."""
    gate = open_gate(load_settings({"VEIL_VAR_DIR": str(var), "VEIL_DEMO_MODE": "1"}))
    try:
        with pytest.raises(AccessDenied, match="not on record"):
            gate.resolve({"email": USER, "veil_demo_token": "B" * 43,
                          "veil_session_hours": 8.0}, source="demo")
        forged = gate.authenticate_demo(username=USER, password="veil-demo")
        forged["veil_demo_token"] = "C" * 43  # the proof is for another token
        with pytest.raises(AccessDenied, match="not on record"):
            gate.resolve({**forged, "veil_session_hours": 8.0}, source="demo")
    finally:
        gate.close()
    assert _rows(var, SignIn, SignIn.source == "demo") == []


# --- the gate's record of demo sign-ins, on both stores ----------------------------------------


def _gate_sign_in(gate) -> tuple[dict, object]:
    claims = gate.authenticate_demo(username=USER, password="veil-demo")
    return claims, gate.resolve({**claims, "veil_session_hours": 8.0}, source="demo")


def test_the_gate_resumes_a_demo_token_until_its_sign_out(store, catalog):
    """On either store: the token alone resumes the sign-in (no new login on record); after
    sign-out it is refused, audited."""
    from privacy import Gate

    gate = Gate(store, catalog, demo_accounts=True)
    claims, principal = _gate_sign_in(gate)
    resume = {"veil_demo_token": claims["veil_demo_token"], "veil_session_hours": 8.0}
    assert gate.resolve(resume, source="demo") == principal
    gate.record_session_end(principal, reason="signed out")
    with pytest.raises(AccessDenied, match="has ended") as refused:
        gate.resolve(resume, source="demo")
    assert refused.value.sign_in_ended == "signed out"
    with store.read() as session:
        reasons = [(a.outcome, (a.detail or {}).get("reason", "")) for a in session.scalars(
            select(AuditEntry).where(AuditEntry.action == "login").order_by(AuditEntry.id))]
        [row] = session.scalars(select(SignIn)).all()
    assert reasons == [("allowed", ""), ("refused", "sign-in signed out")]
    assert (row.source, row.ended_reason) == ("demo", "signed out")


def test_a_demo_token_is_bound_to_the_record_not_to_the_claims(store, catalog):
    """A resume that claims another e-mail still resolves the person on record."""
    from privacy import Gate

    gate = Gate(store, catalog, demo_accounts=True)
    claims, principal = _gate_sign_in(gate)
    resumed = gate.resolve({"veil_demo_token": claims["veil_demo_token"],
                            "email": "tenant.admin@kigali-east.demo",
                            "veil_session_hours": 8.0}, source="demo")
    assert resumed == principal and resumed.role == "policy_maker"
