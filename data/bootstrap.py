"""Bring a store to a usable state: schema, catalog mirror, geography, tenants, demo identities.

Owns idempotent initialisation (``veil init``): running it twice changes nothing the second
time. Demo accounts are created only in demo mode, with argon2-hashed passwords, and resolve to
roles through the same RoleMapping table that OIDC identities use (their rows are marked
``DEMO_MAPPING_SOURCE`` and never match an OIDC identity). Organisation identities are mapped by
the versioned role mappings file (``data.role_mappings``), applied here when it is passed.
"""

from __future__ import annotations

from datetime import datetime

from argon2 import PasswordHasher
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from data import clock
from data.catalog import Catalog
from data.engine import Store
from data.geo import geography
from data.migrate import upgrade
from data.models import DataProduct, GeoArea, GeoCell, LocalAccount, RoleMapping, Tenant
from data.policy_history import record_policy_snapshot
from data.role_mappings import RoleMappingFile, apply_role_mappings

__all__ = ["DEMO_MAPPING_SOURCE", "DEMO_PASSWORD", "DEMO_ROLES", "PLATFORM_ADMINS", "demo_username", "init_store"]

#: Shared password of every demo account. Demo mode only: printed on the login page on purpose.
DEMO_PASSWORD = "veil-demo"
#: ``created_by`` of the demo accounts' role mappings; such rows apply to demo sign-ins only.
DEMO_MAPPING_SOURCE = "veil init (demo)"
#: Demo platform administrators (username → title); they sign in to the first tenant.
PLATFORM_ADMINS = {"platform.admin@veil.demo": "Platform administrator",
                   "platform.admin2@veil.demo": "Second platform administrator"}
DEMO_ROLES = ("policy_maker", "researcher", "case_worker", "donor", "compliance_officer",
              "tenant_admin")


def demo_username(role: str, tenant_id: str) -> str:
    return f"{role.replace('_', '.')}@{tenant_id}.demo"


def utcnow() -> datetime:
    """Naive UTC now, from the one clock (``data.clock``)."""
    return clock.utcnow()


def init_store(store: Store, catalog: Catalog, *, demo_accounts: bool,
               role_mappings: RoleMappingFile | None = None) -> None:
    """Migrate the schema and mirror the catalog into the store; idempotent.

    ``role_mappings``, when given, becomes the set of file-managed role mappings (added,
    changed and removed to match); without it those rows are left as they are.
    """
    upgrade(store)
    with store.write.begin() as session:
        _sync_products(session, catalog)
        _sync_geography(session, catalog)
        _sync_tenants(session, catalog)
        record_policy_snapshot(session, catalog)  # the compliance page diffs versions
        if demo_accounts:
            _ensure_demo_accounts(session, catalog)
        if role_mappings is not None:
            session.flush()  # tenants first: mappings reference them
            apply_role_mappings(session, role_mappings)


def _sync_products(session: Session, catalog: Catalog) -> None:
    existing = {p.id: p for p in session.scalars(select(DataProduct))}
    for spec in catalog.products:
        row = existing.get(spec.id) or DataProduct(id=spec.id)
        row.vertical, row.kind, row.title, row.owner = spec.vertical, spec.kind, spec.title, spec.owner
        row.policy_version = catalog.version
        session.add(row)


def _sync_geography(session: Session, catalog: Catalog) -> None:
    if session.scalar(select(GeoCell.h3_cell).limit(1)) is not None:
        known = set(session.scalars(select(GeoArea.code)))
        if known == {s.code for s in catalog.states} | {d.code for d in catalog.districts}:
            return
        session.execute(delete(GeoCell))
        session.execute(delete(GeoArea))
    for state in catalog.states:
        session.add(GeoArea(code=state.code, level="state", name=state.name, parent_code=None,
                            lat=state.lat, lng=state.lng))
    for district in catalog.districts:
        session.add(GeoArea(code=district.code, level="district", name=district.name,
                            parent_code=district.state, lat=district.lat, lng=district.lng))
    session.flush()
    session.add_all(GeoCell(h3_cell=cell, district=district)
                    for cell, district in geography(catalog).cells.items())


def _sync_tenants(session: Session, catalog: Catalog) -> None:
    existing = {t.id: t for t in session.scalars(select(Tenant))}
    for spec in catalog.tenants:
        row = existing.get(spec.id)
        if row is None:
            session.add(Tenant(id=spec.id, name=spec.name, created_at=utcnow()))
        else:
            row.name = spec.name


def _ensure_demo_accounts(session: Session, catalog: Catalog) -> None:
    have = set(session.scalars(select(LocalAccount.username)))
    mapped = set(session.scalars(select(RoleMapping.value).where(RoleMapping.claim == "email")))
    # Every demo account shares the public demo password, so one salted argon2 hash serves all
    # of them; hashing each would add seconds to every fresh test store.
    password_hash = PasswordHasher().hash(DEMO_PASSWORD)
    for tenant in catalog.tenants:
        for role in DEMO_ROLES:
            username = demo_username(role, tenant.id)
            if username not in have:
                session.add(LocalAccount(
                    username=username, password_hash=password_hash,
                    display_name=f"{catalog.roles[role].title} ({tenant.name}) — demo",
                    created_at=utcnow(),
                ))
            if username not in mapped:
                session.add(RoleMapping(claim="email", value=username, role=role,
                                        tenant_id=tenant.id, created_at=utcnow(),
                                        created_by=DEMO_MAPPING_SOURCE))
    # Two platform administrators: an umbrella export needs two distinct approvers.
    for platform, title in PLATFORM_ADMINS.items():
        if platform not in have:
            session.add(LocalAccount(username=platform, password_hash=password_hash,
                                     display_name=f"{title} — demo", created_at=utcnow()))
        if platform not in mapped:
            session.add(RoleMapping(claim="email", value=platform, role="platform_admin",
                                    tenant_id=catalog.tenants[0].id, created_at=utcnow(),
                                    created_by=DEMO_MAPPING_SOURCE))
