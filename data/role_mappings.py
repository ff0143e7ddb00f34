"""Role mappings for organisation (OIDC) identities, kept as a versioned file.

Owns ``config/role_mappings.toml`` (or the file VEIL_ROLE_MAPPINGS names): loading and
validating it against the catalog, applying it to the RoleMapping table idempotently
(``veil init``), and telling whether the store still matches it (checked when the dashboard
starts). Every error names the file and the key. Rows this module writes carry
``created_by = FILE_SOURCE``; it never touches rows created any other way (demo accounts,
the admin page, whose rows start with ``ADMIN_SOURCE_PREFIX``) — a clash with one of those is
an error, not an overwrite. ``check_mapping`` applies the same rules to a mapping made on the
admin page.

File format::

    version = 1

    [[mapping]]
    claim = "email"             # email | sub | group
    value = "ana@health.example.org"
    role = "policy_maker"       # a role of catalog/roles.toml
    tenant = "kigali-east"      # a tenant of catalog/tenants.toml
"""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from data.catalog import Catalog
from data.errors import ConfigError, InvalidInput
from data.models import RoleMapping

__all__ = ["ADMIN_SOURCE_PREFIX", "CLAIMS", "FILE_SOURCE", "MappingSpec", "RoleMappingFile",
           "apply_role_mappings", "canonical_email", "check_mapping", "load_role_mappings",
           "role_mapping_drift"]

CLAIMS = ("email", "sub", "group")
#: ``created_by`` of every row that this file manages.
FILE_SOURCE = "role mappings file"
#: ``created_by`` of rows made on the admin page starts with this, followed by the admin.
ADMIN_SOURCE_PREFIX = "admin page: "
_KEYS = {"claim", "value", "role", "tenant"}


def canonical_email(value: str) -> str:
    """The one spelling of an e-mail address that Veil compares: NFKC, case-folded, stripped.

    Providers send the same address in different letter cases or Unicode forms (``Ana@``,
    ``ANA@``, fullwidth ``ａｎａ@``, a decomposed ``é``); each must be the same person, or one
    person could count twice (two approvals, two budgets). NFKC is applied again after case
    folding because folding can leave a string that is not NFKC (Unicode's NFKC_Casefold).
    """
    folded = unicodedata.normalize("NFKC", value.strip()).casefold()
    return unicodedata.normalize("NFKC", folded).strip()


@dataclass(frozen=True)
class MappingSpec:
    claim: str
    value: str
    role: str
    tenant: str

    @property
    def key(self) -> tuple[str, str]:
        return self.claim, self.value


@dataclass(frozen=True)
class RoleMappingFile:
    path: Path
    mappings: tuple[MappingSpec, ...]


def load_role_mappings(path: Path, catalog: Catalog) -> RoleMappingFile:
    """Read and validate the file; raise ConfigError naming the file and the key."""
    if not path.is_file():
        raise ConfigError(f"{path}: role mappings file is missing (VEIL_ROLE_MAPPINGS={path}); "
                          f"create it (an empty one has just `version = 1`)")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:  # unreadable: a start-up error that names the setting, not a trace
        raise ConfigError(f"{path}: cannot read the role mappings file "
                          f"(VEIL_ROLE_MAPPINGS={path}): {exc.strerror or exc}") from exc

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(f"{path}: key {key!r}: {reason}")

    unknown = set(doc) - {"version", "mapping"}
    if unknown:
        raise fail(sorted(unknown)[0], "is not a known key; expected 'version' and [[mapping]]")
    if doc.get("version") != 1:
        raise fail("version", f"must be 1, got {doc.get('version')!r}")
    entries = doc.get("mapping", [])
    if not isinstance(entries, list):
        raise fail("mapping", "must be an array of tables ([[mapping]])")
    seen: dict[tuple[str, str], int] = {}
    mappings = []
    for index, entry in enumerate(entries):
        where = f"mapping[{index}]"
        if not isinstance(entry, dict):
            raise fail(where, "must be a table with claim, value, role and tenant")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:  # a misspelt key would otherwise read as a missing one
            raise fail(f"{where}.{unknown[0]}", f"is not a known key; allowed: {sorted(_KEYS)}")
        for key in sorted(_KEYS):
            if key not in entry:
                raise fail(f"{where}.{key}", "is required but missing")
            if not isinstance(entry[key], str) or not entry[key].strip():
                raise fail(f"{where}.{key}", f"must be a non-empty string, got {entry[key]!r}")
        try:
            mapping = _check(catalog, claim=entry["claim"], value=entry["value"],
                             role=entry["role"], tenant=entry["tenant"])
        except _BadMapping as exc:
            raise fail(f"{where}.{exc.key}", exc.reason) from None
        claim, value = mapping.key
        if (claim, value) in seen:
            raise fail(f"{where}.value", f"{claim} {value!r} is already mapped by "
                                         f"mapping[{seen[(claim, value)]}]; one identity gets "
                                         f"one role and one tenant")
        seen[(claim, value)] = index
        mappings.append(mapping)
    return RoleMappingFile(path=path, mappings=tuple(mappings))


class _BadMapping(Exception):
    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


def _check(catalog: Catalog, *, claim: str, value: str, role: str, tenant: str) -> MappingSpec:
    """The rules every mapping obeys, wherever it comes from; e-mails are canonical."""
    value = value.strip()
    if claim not in CLAIMS:
        raise _BadMapping("claim", f"must be one of {list(CLAIMS)}, got {claim!r}")
    if not value:
        raise _BadMapping("value", f"must be a non-empty string, got {value!r}")
    if claim == "email":
        value = canonical_email(value)  # compared as the subject is: see canonical_email
        if "@" not in value:
            raise _BadMapping("value", f"must be an e-mail address, got {value!r}")
    if len(value) > 256:
        raise _BadMapping("value", f"must be at most 256 characters, got {len(value)}")
    if role not in catalog.roles:
        raise _BadMapping("role", f"must be a role of roles.toml {sorted(catalog.roles)}, "
                                  f"got {role!r}")
    if not catalog.roles[role].pages:
        raise _BadMapping("role", f"role {role!r} has no pages in roles.toml: it is not a role "
                                  f"a person signs in as")
    tenants = [t.id for t in catalog.tenants]
    if tenant not in tenants:
        raise _BadMapping("tenant", f"must be a tenant of tenants.toml {tenants}, got {tenant!r}")
    return MappingSpec(claim=claim, value=value, role=role, tenant=tenant)


def check_mapping(catalog: Catalog, *, claim: str, value: str, role: str,
                  tenant: str) -> MappingSpec:
    """Validate one mapping made outside the file (the admin page); raise InvalidInput."""
    try:
        return _check(catalog, claim=claim, value=value, role=role, tenant=tenant)
    except _BadMapping as exc:
        raise InvalidInput(f"mapping {exc.key} {exc.reason}") from None


def apply_role_mappings(session: Session, spec: RoleMappingFile) -> int:
    """Make the file-managed rows equal the file; return how many rows changed.

    Idempotent: a second run changes nothing. A mapping removed from the file is removed from
    the store, so deleting a line revokes access at the next ``veil init``.
    """
    rows = {(r.claim, r.value): r for r in session.scalars(select(RoleMapping))}
    wanted = {m.key: m for m in spec.mappings}
    changed = 0
    for index, mapping in enumerate(spec.mappings):
        row = rows.get(mapping.key)
        if row is not None and row.created_by != FILE_SOURCE:
            raise ConfigError(
                f"{spec.path}: key 'mapping[{index}].value': {mapping.claim} {mapping.value!r} "
                f"is already mapped to {row.role} at {row.tenant_id} by {row.created_by!r}; "
                f"remove one of the two")
        if row is None:
            session.add(RoleMapping(claim=mapping.claim, value=mapping.value, role=mapping.role,
                                    tenant_id=mapping.tenant, created_by=FILE_SOURCE,
                                    created_at=datetime.now(UTC).replace(tzinfo=None)))
            changed += 1
        elif (row.role, row.tenant_id) != (mapping.role, mapping.tenant):
            row.role, row.tenant_id = mapping.role, mapping.tenant
            changed += 1
    for key, row in rows.items():
        if row.created_by == FILE_SOURCE and key not in wanted:
            session.delete(row)
            changed += 1
    return changed


def role_mapping_drift(session: Session, spec: RoleMappingFile) -> list[str]:
    """What differs between the file and the store's file-managed rows (empty: in sync)."""
    rows = {(r.claim, r.value): r for r in session.scalars(
        select(RoleMapping).where(RoleMapping.created_by == FILE_SOURCE))}
    wanted = {m.key: m for m in spec.mappings}
    drift = []
    for key, mapping in wanted.items():
        row = rows.get(key)
        if row is None:
            drift.append(f"{mapping.claim} {mapping.value!r} is not in the store")
        elif (row.role, row.tenant_id) != (mapping.role, mapping.tenant):
            drift.append(f"{mapping.claim} {mapping.value!r} is {row.role} at {row.tenant_id} "
                         f"in the store, {mapping.role} at {mapping.tenant} in the file")
    for key in rows.keys() - wanted.keys():
        drift.append(f"{key[0]} {key[1]!r} is in the store but no longer in the file")
    return sorted(drift)
