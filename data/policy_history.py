"""Policy history: the catalog's files as they were under each policy version (SPEC D7).

Owns recording one ``PolicySnapshot`` row per policy version — the SHA-256 of the catalog files
that ``load_catalog`` computes, which every release and export carries — with the text of each
file, so that the compliance page can show any two versions side by side. Recording is
idempotent: a version already on record is never rewritten (its text is history), and two
processes recording the same new version at once leave one row.

It must never record text that does not hash to the catalog's version: the files are re-read
and re-hashed, and a catalog edited after it was loaded is refused rather than recorded under
the wrong version.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from data.catalog import CATALOG_FILES, Catalog
from data.engine import Store
from data.errors import ConfigError, StoreError
from data.models import PolicySnapshot

__all__ = ["policy_files", "record_policy", "record_policy_snapshot"]


def policy_files(catalog: Catalog) -> dict[str, str]:
    """The catalog's files (name → text) exactly as hashed into ``catalog.version``."""
    raw = {}
    for name in CATALOG_FILES:
        try:
            raw[name] = (catalog.directory / name).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{catalog.directory / name}: cannot read the catalog file to "
                              f"record its policy version: {exc}") from exc
    digest = hashlib.sha256()
    for name in CATALOG_FILES:
        digest.update(name.encode() + b"\0" + raw[name] + b"\0")
    if digest.hexdigest() != catalog.version:
        raise ConfigError(f"{catalog.directory}: the catalog files changed after they were "
                          f"loaded (policy version {catalog.version[:12]} no longer matches); "
                          f"restart so that the new version is loaded and recorded")
    return {name: data.decode("utf-8") for name, data in raw.items()}


def record_policy_snapshot(session: Session, catalog: Catalog) -> bool:
    """Record the catalog's policy version inside the caller's transaction; True if new."""
    if session.get(PolicySnapshot, catalog.version) is not None:
        return False
    files = policy_files(catalog)
    try:
        with session.begin_nested():
            session.add(PolicySnapshot(version=catalog.version, files=files,
                                       recorded_at=datetime.now(UTC).replace(tzinfo=None)))
    except IntegrityError:
        return False  # a concurrent session recorded the same version first
    return True


def record_policy(store: Store, catalog: Catalog) -> bool:
    """Record the catalog's policy version in its own transaction, unless already on record.

    Checks with a read first, so that opening a gate on a store that already knows this
    version takes no write lock.
    """
    try:
        with store.read() as session:
            if session.get(PolicySnapshot, catalog.version) is not None:
                return False
        with store.write.begin() as session:
            return record_policy_snapshot(session, catalog)
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot record policy version {catalog.version[:12]}: {exc}") from exc
