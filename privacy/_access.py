"""Identity → Principal: demo password check, claim-to-role resolution, page authorisation.

Owns the rule that a Principal exists only if a RoleMapping row matches one of the identity's
claims (email, then sub, then groups). An unknown identity gets AccessDenied and an audit entry;
there is no default role, ever. Demo mappings (created by ``veil init`` in demo mode) apply to
demo sign-ins only, so an organisation account can never borrow a demo account's role. Also
owns which pages a role may open, and whether the store still holds the role mappings file.
"""

from __future__ import annotations

from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select

from data.bootstrap import DEMO_MAPPING_SOURCE
from data.catalog import Catalog
from data.engine import Store
from data.errors import AccessDenied, ConfigError
from data.models import LocalAccount, RoleMapping
from data.role_mappings import load_role_mappings, role_mapping_drift

from privacy._audit import audit
from privacy._values import Principal

__all__ = ["authenticate_demo", "authorize_page", "check_role_mappings", "resolve_principal"]

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


def _candidates(claims: dict, *, source: str) -> list[tuple[str, str]]:
    """The (claim, value) keys to look up, in precedence order."""
    out: list[tuple[str, str]] = []
    email = claims.get("email")
    # An address the provider says it has not verified could be anyone's: do not map it.
    if email and not (source == "oidc" and claims.get("email_verified") is False):
        out.append(("email", str(email).strip().lower()))
    if claims.get("sub"):
        out.append(("sub", str(claims["sub"])))
    groups = claims.get("groups") or ()
    if isinstance(groups, str):
        groups = (groups,)
    out.extend(("group", str(group)) for group in groups)
    return out


def resolve_principal(store: Store, catalog: Catalog, claims: dict, *, source: str) -> Principal:
    """Map identity claims to a Principal through the role-mapping table."""
    candidates = _candidates(claims, source=source)
    who = str(claims.get("email") or claims.get("sub") or "<anonymous>")
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
    audit(store, principal=who, tenant=principal.tenant, role=principal.role, action="login",
          target=source, outcome="allowed",
          detail={"claim": mapping.claim, "value": mapping.value})
    return principal


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
