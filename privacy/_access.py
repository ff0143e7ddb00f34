"""Identity → Principal: demo password check and claim-to-role resolution.

Owns the rule that a Principal exists only if a RoleMapping row matches one of the identity's
claims (email, then sub, then groups). An unknown identity gets AccessDenied and an audit entry;
there is no default role, ever.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select

from data.catalog import Catalog
from data.engine import Store
from data.errors import AccessDenied
from data.models import LocalAccount, RoleMapping

from privacy._audit import audit
from privacy._values import Principal

__all__ = ["authenticate_demo", "resolve_principal"]

_HASHER = PasswordHasher()


def authenticate_demo(store: Store, *, username: str, password: str) -> dict:
    """Check a demo account's password; return its identity claims or raise AccessDenied."""
    with store.read() as session:
        account = session.get(LocalAccount, username.strip().lower())
    if account is None:
        _HASHER.hash(password)  # spend the same time whether or not the account exists
        raise AccessDenied("Unknown demo account or wrong password.")
    try:
        _HASHER.verify(account.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        audit(store, principal=account.username, tenant=None, role=None, action="login",
              target="demo", outcome="refused", detail={"reason": "wrong password"})
        raise AccessDenied("Unknown demo account or wrong password.") from None
    return {"email": account.username, "name": account.display_name, "iss": "veil-demo"}


def resolve_principal(store: Store, catalog: Catalog, claims: dict, *, source: str) -> Principal:
    """Map identity claims to a Principal through the role-mapping table."""
    candidates: list[tuple[str, str]] = []
    if claims.get("email"):
        candidates.append(("email", str(claims["email"]).lower()))
    if claims.get("sub"):
        candidates.append(("sub", str(claims["sub"])))
    for group in claims.get("groups") or ():
        candidates.append(("group", str(group)))
    who = str(claims.get("email") or claims.get("sub") or "<anonymous>")
    mapping = None
    with store.read() as session:
        for claim, value in candidates:
            mapping = session.scalar(select(RoleMapping).where(
                RoleMapping.claim == claim, RoleMapping.value == value))
            if mapping is not None:
                break
    if mapping is None or mapping.role not in catalog.roles:
        audit(store, principal=who, tenant=None, role=None, action="login", target=source,
              outcome="refused", detail={"reason": "no role mapping"})
        raise AccessDenied(
            f"{who} is signed in but has no role in Veil. Ask your tenant administrator to add a "
            f"role mapping for this account.")
    principal = Principal(subject=who, display_name=str(claims.get("name") or who),
                          role=mapping.role, tenant=mapping.tenant_id, source=source)
    audit(store, principal=who, tenant=principal.tenant, role=principal.role, action="login",
          target=source, outcome="allowed")
    return principal
