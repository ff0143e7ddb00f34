"""The server-side record of browser sign-ins (issue 15.2), on both stores.

Streamlit's identity cookie is the whole of an OIDC sign-in on the client; the store keeps a
record of each one, so that a sign-out or an expiry holds for a copy of the cookie too.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from data.bootstrap import utcnow
from data.models import AuditEntry, RoleMapping, SignIn
from privacy import AccessDenied, Gate
from privacy._access import SIGN_OUT_CLOCK_SKEW

HOURS = 8.0
#: The tests' clock for ``iat``: fixed, so that two cookies built in one test with the same
#: arguments are the same token even when a second ticks over between them.
STARTED = time.time()


@pytest.fixture
def gate(store, catalog) -> Gate:
    with store.write.begin() as session:
        session.add(RoleMapping(claim="email", value="ana@programmes.example",
                                role="policy_maker", tenant_id="kigali-east",
                                created_at=utcnow(), created_by="test"))
    return Gate(store, catalog)


def cookie(*, issued_ago: float = 60.0, nonce: str = "n-1", email: str = "Ana@Programmes.example",
           hours: float = HOURS, at: float = STARTED) -> dict:
    """The claims a browser's identity cookie carries, as the dashboard passes them on: issued
    ``issued_ago`` seconds before ``at`` (the module's start, well within ``HOURS``)."""
    return {"iss": "http://127.0.0.1:9/oidc", "sub": "u-ana", "email": email,
            "email_verified": True, "iat": int(at - issued_ago), "nonce": nonce,
            "is_logged_in": True, "veil_session_hours": hours}


def sign_ins(store) -> list[SignIn]:
    with store.read() as session:
        return list(session.scalars(select(SignIn).order_by(SignIn.started_at, SignIn.id)))


def logins(store) -> list[tuple[str, str]]:
    with store.read() as session:
        return [(a.outcome, (a.detail or {}).get("reason", ""))
                for a in session.scalars(select(AuditEntry).where(AuditEntry.action == "login")
                                         .order_by(AuditEntry.id))]


def test_a_sign_in_is_recorded_once_and_audited_once(gate, store):
    """The first request records the sign-in; later requests of the same cookie reuse it."""
    first = gate.resolve(cookie(), source="oidc")
    again = gate.resolve(cookie(email="ANA@programmes.example"), source="oidc")
    assert first == again
    [row] = sign_ins(store)
    assert (row.subject, row.source, row.issuer) == (
        "ana@programmes.example", "oidc", "http://127.0.0.1:9/oidc")
    assert row.ended_at is None
    assert (row.expires_at - row.issued_at).total_seconds() == HOURS * 3600
    assert logins(store) == [("allowed", "")]


def test_sign_out_ends_the_record_and_a_copied_cookie_is_refused(gate, store):
    """After sign-out the same claims (a copied cookie) are refused, audited, on record."""
    principal = gate.resolve(cookie(), source="oidc")
    gate.record_session_end(principal, reason="signed out")
    [row] = sign_ins(store)
    assert (row.ended_reason, row.ended_at is not None) == ("signed out", True)
    with pytest.raises(AccessDenied, match="This sign-in has ended") as refused:
        gate.resolve(cookie(), source="oidc")
    assert refused.value.sign_in_ended == "signed out"
    assert logins(store) == [("allowed", ""), ("refused", "sign-in signed out")]


def test_a_new_sign_in_after_sign_out_is_let_in(gate, store):
    """Signing in again (a new token: new iat and nonce) starts another record, even when the
    provider's clock runs a little behind Veil's."""
    principal = gate.resolve(cookie(issued_ago=120, nonce="n-1"), source="oidc")
    gate.record_session_end(principal, reason="signed out")
    again = cookie(nonce="n-2", at=time.time(), issued_ago=SIGN_OUT_CLOCK_SKEW.seconds - 5)
    assert gate.resolve(again, source="oidc") == principal
    assert [r.ended_reason for r in sign_ins(store)] == ["signed out", None]


def test_a_cookie_never_shown_before_a_later_sign_out_is_refused(gate, store):
    """A token issued before a sign-in that was signed out is ended too, seen or not."""
    principal = gate.resolve(cookie(issued_ago=60, nonce="n-late"), source="oidc")
    gate.record_session_end(principal, reason="signed out")
    with pytest.raises(AccessDenied, match="has ended"):
        gate.resolve(cookie(issued_ago=600, nonce="n-early"), source="oidc")
    assert len(sign_ins(store)) == 1


def test_a_cookie_never_shown_issued_between_a_sign_in_and_its_sign_out_is_refused(gate, store):
    """What ends it is the moment of the sign-out, not when the signed-out sign-in began."""
    principal = gate.resolve(cookie(issued_ago=600, nonce="laptop"), source="oidc")
    gate.record_session_end(principal, reason="signed out")
    phone = cookie(nonce="phone", at=time.time(), issued_ago=SIGN_OUT_CLOCK_SKEW.seconds + 5)
    with pytest.raises(AccessDenied, match="has ended"):
        gate.resolve(phone, source="oidc")
    assert [r.ended_reason for r in sign_ins(store)] == ["signed out"]
    assert logins(store)[-1] == ("refused", "sign-in signed out")


def test_an_expired_sign_in_is_ended_and_refused(gate, store):
    """Past iat + the session hours the record ends as expired; the refusal is audited."""
    claims = cookie(issued_ago=0, hours=0.001, at=time.time())  # 3.6 seconds
    gate.resolve(claims, source="oidc")
    ends = sign_ins(store)[0].expires_at.replace(tzinfo=UTC)
    time.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds() + 0.2))
    with pytest.raises(AccessDenied, match="This sign-in expired") as refused:
        gate.resolve(claims, source="oidc")
    assert refused.value.sign_in_ended == "expired"
    [row] = sign_ins(store)
    assert row.ended_reason == "expired"
    assert logins(store) == [("allowed", ""), ("refused", "sign-in expired")]


def test_an_expired_cookie_never_seen_is_refused_without_a_record(gate, store):
    """A cookie older than the session hours is refused on its first request, audited."""
    with pytest.raises(AccessDenied, match="This sign-in expired"):
        gate.resolve(cookie(issued_ago=HOURS * 3600 + 5), source="oidc")
    assert sign_ins(store) == []
    assert logins(store) == [("refused", "sign-in expired")]


def test_signing_out_ends_every_open_sign_in_of_the_person(gate, store):
    """The gate records sign-out per person, so a second browser's sign-in ends as well."""
    laptop = gate.resolve(cookie(nonce="laptop"), source="oidc")
    gate.resolve(cookie(nonce="phone", issued_ago=30), source="oidc")
    gate.record_session_end(laptop, reason="signed out")
    assert [r.ended_reason for r in sign_ins(store)] == ["signed out", "signed out"]
    with pytest.raises(AccessDenied, match="has ended"):
        gate.resolve(cookie(nonce="phone", issued_ago=30), source="oidc")


def test_claims_without_the_session_marker_keep_no_record(gate, store):
    """Resolving claims outside a browser sign-in (the gate's API) records nothing."""
    claims = cookie()
    del claims["veil_session_hours"]
    gate.resolve(claims, source="oidc")
    assert sign_ins(store) == []
