"""Identity → Principal: demo password check, claim-to-role resolution, page authorisation.

Owns the rule that a Principal exists only if a RoleMapping row matches one of the identity's
claims (email, then sub, then groups). An unknown identity gets AccessDenied and an audit entry;
there is no default role, ever. Demo mappings (created by ``veil init`` in demo mode) apply to
demo sign-ins only, so an organisation account can never borrow a demo account's role. Also
owns which pages a role may open, and whether the store still holds the role mappings file.

**One subject per person.** ``canonical_subject`` is the only spelling of an identity that
Veil keys anything by (approvals, budgets, releases, audit): the e-mail address in canonical
form (NFKC, case-folded), or, without a usable address, the provider's ``sub`` with its issuer.
Two claims that differ only by letter case or Unicode form are the same person.

**Browser sign-ins are on record** (the ``sign_ins`` table). The dashboard marks the claims of a
browser sign-in with ``SESSION_HOURS_CLAIM``; the first request of that sign-in records it,
each later one checks it, and a sign-in that was signed out or has expired is refused
(``SignInEnded``, audited) even though the browser's identity cookie still says otherwise.
``Gate.record_session_end`` ends them (``end_sign_ins``) in the transaction that audits the
sign-out.

**Demo sign-ins are on record the same way.** A demo password check hands out a random token
(``DEMO_TOKEN_CLAIM``) and a proof that this process checked the password; resolving those
claims with ``SESSION_HOURS_CLAIM`` records the sign-in under the token's SHA-256 (the store
never holds the token). Later, the token alone resumes it (a browser refresh): the record, not
the browser, says who it is and until when; an unknown, signed-out or expired token is refused
and audited. Only a password check can start a demo sign-in: a token without the proof finds
an existing record or nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from data.bootstrap import DEMO_MAPPING_SOURCE, utcnow
from data.catalog import Catalog
from data.engine import Store
from data.errors import AccessDenied, ConfigError, VeilBug
from data.models import LocalAccount, RoleMapping, SignIn
from data.role_mappings import canonical_email, load_role_mappings, role_mapping_drift

from privacy._audit import audit, audit_in
from privacy._values import Principal

__all__ = ["DEMO_TOKEN_CLAIM", "SESSION_HOURS_CLAIM", "SignInEnded", "authenticate_demo",
           "authorize_page", "canonical_subject", "check_role_mappings", "end_sign_ins",
           "resolve_principal"]

#: The dashboard adds this key to the claims of a browser sign-in (an identity cookie): the
#: sign-in is then kept on record and lasts this many hours from the ID token's ``iat``.
SESSION_HOURS_CLAIM = "veil_session_hours"
#: How far the identity provider's clock (a token's ``iat``) may run behind Veil's: a token
#: never seen before that was issued more than this before the person's last sign-out is ended
#: by it; one issued later is a new sign-in (signing in again takes longer than this anyway).
SIGN_OUT_CLOCK_SKEW = timedelta(seconds=60)
#: A demo sign-in's bearer token (random, 256 bits): with the proof from ``authenticate_demo``
#: it starts a recorded demo sign-in; alone, it resumes one that is on record and still open.
DEMO_TOKEN_CLAIM = "veil_demo_token"
_DEMO_PROOF_CLAIM = "veil_demo_password_checked"
#: Keys the proof that this process checked a demo password; never stored, never sent out.
_PROOF_KEY = secrets.token_bytes(32)


class SignInEnded(AccessDenied):
    """This browser sign-in is over (signed out, expired, or a demo token not on record);
    signing in again starts another."""

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        #: ``signed out``, ``expired`` or (a demo token) ``not on record``: the dashboard shows
        #: the sign-in page for each
        self.sign_in_ended = reason


_HASHER = PasswordHasher()


def authenticate_demo(store: Store, *, username: str, password: str) -> dict:
    """Check a demo account's password; return its identity claims or raise AccessDenied.

    The claims carry a fresh sign-in token and this process's proof of the password check, so
    that resolving them with ``SESSION_HOURS_CLAIM`` can start a recorded demo sign-in."""
    with store.read() as session:
        account = session.get(LocalAccount, canonical_email(username))
    if account is None:
        _HASHER.hash(password)  # spend the same time whether or not the account exists
        raise AccessDenied("Unknown demo account or wrong password.")
    try:
        _HASHER.verify(account.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        audit(store, principal=account.username, tenant=None, role=None, action="login",
              target="demo", outcome="refused", detail={"reason": "wrong password"})
        raise AccessDenied("Unknown demo account or wrong password.") from None
    token = secrets.token_urlsafe(32)
    return {"email": account.username, "name": account.display_name, "iss": "veil-demo",
            DEMO_TOKEN_CLAIM: token, _DEMO_PROOF_CLAIM: _demo_proof(account.username, token)}


def _demo_proof(username: str, token: str) -> str:
    return hmac.new(_PROOF_KEY, f"{username}\0{token}".encode(), hashlib.sha256).hexdigest()


def _usable_email(claims: dict, *, source: str) -> str | None:
    """The claims' e-mail address in canonical form, if it may identify the person."""
    email = claims.get("email")
    # An address the provider says it has not verified could be anyone's: do not use it.
    if not email or (source == "oidc" and claims.get("email_verified") is False):
        return None
    email = canonical_email(str(email))
    return email if "@" in email and not any(c.isspace() for c in email) else None


def canonical_subject(claims: dict, *, source: str) -> str | None:
    """The one key of this identity: its canonical e-mail, else ``sub`` and issuer, else None.

    ``sub`` is compared exactly (the provider's identifier is case-sensitive) and qualified by
    the issuer, since two providers may hand out the same ``sub``; the spaces keep it from ever
    equalling an e-mail subject.
    """
    email = _usable_email(claims, source=source)
    if email:
        return email
    sub = claims.get("sub")
    if not sub:
        return None
    issuer = claims.get("iss")
    return f"sub {sub} of {issuer}" if issuer else f"sub {sub}"


def _candidates(claims: dict, *, source: str) -> list[tuple[str, str]]:
    """The (claim, value) keys to look up, in precedence order."""
    out: list[tuple[str, str]] = []
    email = _usable_email(claims, source=source)
    if email:
        out.append(("email", email))
    if claims.get("sub"):
        out.append(("sub", str(claims["sub"])))
    groups = claims.get("groups") or ()
    if isinstance(groups, str):
        groups = (groups,)
    out.extend(("group", str(group)) for group in groups)
    return out


def resolve_principal(store: Store, catalog: Catalog, claims: dict, *, source: str) -> Principal:
    """Map identity claims to a Principal through the role-mapping table.

    With ``SESSION_HOURS_CLAIM`` in an OIDC identity's claims the browser sign-in is checked
    against its record first (``SignInEnded`` if it is over), and recorded on its first request;
    only that first request is audited as a login.
    """
    sign_in = None
    if source == "demo" and SESSION_HOURS_CLAIM in claims and DEMO_TOKEN_CLAIM in claims:
        sign_in, claims = _demo_sign_in(store, claims)
    candidates = _candidates(claims, source=source)
    who = canonical_subject(claims, source=source) or "<anonymous>"
    if source == "oidc" and SESSION_HOURS_CLAIM in claims:
        sign_in = _SignInClaims.of(store, claims, subject=who)
        _refuse_if_ended(store, sign_in)
    with store.read() as session:
        rows = session.scalars(select(RoleMapping).where(
            RoleMapping.claim.in_({c for c, _ in candidates} or {""}),
            RoleMapping.value.in_({v for _, v in candidates} or {""}))).all()
    found = {(r.claim, r.value): r for r in rows
             if (r.created_by == DEMO_MAPPING_SOURCE) == (source == "demo")}
    matches = [found[c] for c in candidates if c in found]
    mapping = matches[0] if matches else None
    if mapping is not None and mapping.claim == "group":
        grants = {(m.role, m.tenant_id) for m in matches}
        if len(grants) > 1:
            audit(store, principal=who, tenant=None, role=None, action="login", target=source,
                  outcome="refused", detail={"reason": "ambiguous group mappings",
                                             "groups": sorted(m.value for m in matches)})
            raise AccessDenied(
                f"{who} is in groups that map to different roles or tenants "
                f"({', '.join(sorted(f'{r} at {t}' for r, t in grants))}). Veil gives one role "
                f"and one tenant per session; ask your tenant administrator to map this account "
                f"by e-mail.")
    role = catalog.roles.get(mapping.role) if mapping is not None else None
    if role is None or not role.pages:
        # No mapping, or a role nobody signs in as (unknown, or without pages: e.g. publisher).
        audit(store, principal=who, tenant=None, role=None, action="login", target=source,
              outcome="refused", detail={"reason": "no role mapping"})
        raise AccessDenied(
            f"{who} is signed in but has no role in Veil. Ask your tenant administrator to add a "
            f"role mapping for this account.")
    principal = Principal(subject=who, display_name=str(claims.get("name") or who),
                          role=mapping.role, tenant=mapping.tenant_id, source=source)
    if sign_in is not None and not _record_sign_in(store, sign_in):
        return principal  # a later request of a sign-in already on record (and audited)
    audit(store, principal=who, tenant=principal.tenant, role=principal.role, action="login",
          target=source, outcome="allowed",
          detail={"claim": mapping.claim, "value": mapping.value})
    return principal


# --- the record of browser sign-ins ---------------------------------------------------------------


@dataclass(frozen=True)
class _SignInClaims:
    """What identifies one browser sign-in, and when it ends, read from its claims."""

    id: str
    subject: str
    issuer: str
    issued_at: datetime   # naive UTC, wall clock (the provider's)
    expires_at: datetime
    now: datetime
    source: str = "oidc"

    @classmethod
    def of(cls, store: Store, claims: dict, *, subject: str) -> _SignInClaims:
        hours = claims[SESSION_HOURS_CLAIM]
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not hours > 0:
            raise VeilBug(f"{SESSION_HOURS_CLAIM} must be a positive number, got {hours!r}")
        iat = claims.get("iat")
        now = datetime.now(UTC).replace(tzinfo=None)
        if isinstance(iat, bool) or not isinstance(iat, (int, float)) or not math.isfinite(iat):
            audit(store, principal=subject, tenant=None, role=None, action="login",
                  target="oidc", outcome="refused", detail={"reason": "no issue time (iat)"})
            raise AccessDenied("Your identity provider's ID token has no issue time (iat "
                               "claim), so Veil cannot bound the session. Ask your "
                               "administrator to check the provider.")
        try:
            issued = datetime.fromtimestamp(iat, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            issued = datetime.min
        issued = min(issued, now)  # a token from the future does not lengthen the session
        # The claims that make this sign-in unique: a copied cookie carries the same ones.
        key = json.dumps([claims.get("iss"), claims.get("sub"), subject, iat,
                          claims.get("nonce")], sort_keys=True, default=str)
        return cls(id=hashlib.sha256(key.encode()).hexdigest(), subject=subject,
                   issuer=str(claims.get("iss") or "")[:256], issued_at=issued,
                   expires_at=issued + timedelta(hours=hours), now=now)


def _demo_sign_in(store: Store, claims: dict) -> tuple[_SignInClaims, dict]:
    """The record of a demo sign-in and the claims to resolve it by.

    With the password check's proof: a new sign-in, starting now. Without: the sign-in on
    record under the token's hash, if it is still open; the record names the subject (whatever
    else the claims say), so a token can only ever resume what a password check started.
    """
    hours = claims[SESSION_HOURS_CLAIM]
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not hours > 0:
        raise VeilBug(f"{SESSION_HOURS_CLAIM} must be a positive number, got {hours!r}")
    token = str(claims[DEMO_TOKEN_CLAIM])
    key = hashlib.sha256(token.encode()).hexdigest()
    now = utcnow()
    proof = claims.get(_DEMO_PROOF_CLAIM)
    username = canonical_email(str(claims.get("email") or ""))
    if isinstance(proof, str) and hmac.compare_digest(proof, _demo_proof(username, token)):
        return _SignInClaims(id=key, subject=username, issuer="veil-demo", issued_at=now,
                             expires_at=now + timedelta(hours=hours), now=now,
                             source="demo"), claims
    with store.read() as session:
        row = session.get(SignIn, key)
        account = session.get(LocalAccount, row.subject) if row is not None else None
    if row is None or row.source != "demo":
        audit(store, principal="<unknown demo sign-in>", tenant=None, role=None,
              action="login", target="demo", outcome="refused",
              detail={"reason": "sign-in not on record", "sign_in": key[:16]})
        raise SignInEnded("This sign-in is not on record (it may have been removed). Please "
                          "sign in again.", reason="not on record")
    sign_in = _SignInClaims(id=key, subject=row.subject, issuer=row.issuer,
                            issued_at=row.issued_at,
                            expires_at=min(row.expires_at,
                                           row.issued_at + timedelta(hours=hours)),
                            now=now, source="demo")
    _refuse_if_ended(store, sign_in)
    return sign_in, {"email": row.subject, "iss": "veil-demo",
                     "name": account.display_name if account is not None else row.subject}


def _refuse_if_ended(store: Store, sign_in: _SignInClaims) -> None:
    """Raise SignInEnded (audited) if this sign-in was signed out or has expired."""
    with store.read() as session:
        row = session.get(SignIn, sign_in.id)
        signed_out_since = None
        if row is None and sign_in.source == "oidc":
            # A cookie never presented before, issued before this person last signed out:
            # signing out ends every sign-in begun before it, seen by Veil or not.
            signed_out_since = session.scalar(select(func.max(SignIn.ended_at)).where(
                SignIn.subject == sign_in.subject, SignIn.source == sign_in.source,
                SignIn.ended_reason == "signed out"))
    if row is not None and row.ended_at is not None:
        reason = row.ended_reason or "signed out"
    elif (signed_out_since is not None
          and sign_in.issued_at < signed_out_since - SIGN_OUT_CLOCK_SKEW):
        reason = "signed out"
    elif sign_in.now >= sign_in.expires_at:
        reason = "expired"
    else:
        return
    with store.write.begin() as session:
        row = session.get(SignIn, sign_in.id)
        if row is not None and row.ended_at is None:
            row.ended_at, row.ended_reason = utcnow(), reason
        audit_in(session, principal=sign_in.subject, tenant=None, role=None, action="login",
                 target=sign_in.source, outcome="refused",
                 detail={"reason": f"sign-in {reason}", "sign_in": sign_in.id[:16]})
    if reason == "expired":
        raise SignInEnded(f"This sign-in expired at {sign_in.expires_at:%d %b %H:%M} UTC. "
                          f"Please sign in again.", reason=reason)
    raise SignInEnded("This sign-in has ended (signed out). Please sign in again.",
                      reason=reason)


def _record_sign_in(store: Store, sign_in: _SignInClaims) -> bool:
    """Record the sign-in on its first request; False if it was on record already."""
    with store.read() as session:
        if session.get(SignIn, sign_in.id) is not None:
            return False
    try:
        with store.write.begin() as session:
            if session.get(SignIn, sign_in.id) is not None:
                return False
            session.add(SignIn(id=sign_in.id, subject=sign_in.subject, source=sign_in.source,
                               issuer=sign_in.issuer, issued_at=sign_in.issued_at,
                               expires_at=sign_in.expires_at, started_at=utcnow()))
    except IntegrityError:  # the same sign-in's first request, twice at once (PostgreSQL)
        return False
    return True


def end_sign_ins(session, *, subject: str, source: str, at: datetime) -> int:
    """End every open sign-in of ``subject`` (in the caller's transaction, with the sign-out's
    audit entry); returns how many. A sign-out does not know which browser's cookie it was,
    so all of the person's open sign-ins end ("sign out everywhere"). Expiry needs no call:
    each sign-in carries its own end."""
    result = session.execute(update(SignIn).where(
        SignIn.subject == subject, SignIn.source == source, SignIn.ended_at.is_(None))
        .values(ended_at=at, ended_reason="signed out")
        .execution_options(synchronize_session=False))
    return result.rowcount


def authorize_page(store: Store, catalog: Catalog, principal: Principal, *, page: str) -> None:
    """Allow a page only if the principal's role lists it; audit and refuse otherwise."""
    role = catalog.roles.get(principal.role)
    if role is not None and page in role.pages:
        return
    audit(store, principal=principal.subject, tenant=principal.tenant, role=principal.role,
          action="page_view", target=page, outcome="refused")
    title = role.title if role is not None else principal.role
    raise AccessDenied(f"Not permitted: the {title} role cannot open the {page} page. This "
                       f"attempt has been recorded.")


def check_role_mappings(store: Store, catalog: Catalog, path: Path) -> int:
    """Validate the role mappings file and check the store holds it; return its size.

    A store that does not match could still let in someone the file no longer lists, so the
    mismatch stops start-up instead of being ignored.
    """
    spec = load_role_mappings(path, catalog)
    with store.read() as session:
        drift = role_mapping_drift(session, spec)
    if drift:
        shown = "; ".join(drift[:3]) + (f"; and {len(drift) - 3} more" if len(drift) > 3 else "")
        raise ConfigError(f"{path}: the store's role mappings do not match this file ({shown}). "
                          f"Run `veil init` to apply it.")
    return len(spec.mappings)
