"""Policy versions and KPI definitions for compliance: every catalog version ever run with the
tenant's releases and exports under each, a unified diff between any two, and every KPI
definition version with the one in effect.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select

from data.errors import InvalidInput
from data.models import Export, PolicySnapshot
from data.models import Release as ReleaseRow

from privacy.compliance._base import _Reads
from privacy.core import Principal

__all__ = ["FileDiff", "KpiDefinition", "PolicyDiff", "PolicyVersion", "_Policies"]


@dataclass(frozen=True)
class PolicyVersion:
    version: str
    recorded_at: datetime
    current: bool
    files: tuple[str, ...]
    releases: int        # releases of this tenant made under it
    exports: int         # exports of this tenant made under it


@dataclass(frozen=True)
class FileDiff:
    name: str
    status: str          # changed | added | removed | unchanged
    diff: str            # unified diff ("" when unchanged)
    added: int           # lines
    removed: int


@dataclass(frozen=True)
class PolicyDiff:
    old: str
    new: str
    files: tuple[FileDiff, ...]

    @property
    def changed(self) -> tuple[FileDiff, ...]:
        return tuple(f for f in self.files if f.status != "unchanged")


@dataclass(frozen=True)
class KpiDefinition:
    product: str
    product_title: str
    metric: str
    metric_title: str
    version: int
    effective_from: date
    until: date | None   # the day the next version took effect
    definition: str
    in_effect: bool


class _Policies(_Reads):
    def policy_versions(self, principal: Principal) -> tuple[PolicyVersion, ...]:
        """Every recorded policy version, newest first, with the tenant's use of each."""
        with self._view(principal, "policy_versions", {}) as seen:
            with self._store.read() as session:
                snapshots = session.execute(
                    select(PolicySnapshot.version, PolicySnapshot.recorded_at,
                           PolicySnapshot.files)
                    .order_by(PolicySnapshot.recorded_at.desc(),
                              PolicySnapshot.version)).all()
                releases = dict(session.execute(
                    select(ReleaseRow.policy_version, func.count())
                    .where(ReleaseRow.tenant_id == principal.tenant)
                    .group_by(ReleaseRow.policy_version)).all())
                exports = dict(session.execute(
                    select(Export.policy_version, func.count())
                    .where(Export.tenant_id == principal.tenant)
                    .group_by(Export.policy_version)).all())
            versions = tuple(PolicyVersion(
                version=s.version, recorded_at=s.recorded_at,
                current=s.version == self._catalog.version, files=tuple(sorted(s.files)),
                releases=int(releases.get(s.version, 0)), exports=int(exports.get(s.version, 0)))
                for s in snapshots)
            seen.update(versions=len(versions))
        return versions

    def policy_diff(self, principal: Principal, *, old: str, new: str) -> PolicyDiff:
        """A unified diff, file by file, from policy version ``old`` to ``new``."""
        with self._view(principal, "policy_diff", {"old": old, "new": new}) as seen:
            for name, value in (("old", old), ("new", new)):
                if not isinstance(value, str) or not value:
                    raise InvalidInput(f"{name} must be a policy version, got {value!r}")
            with self._store.read() as session:
                found = dict(session.execute(
                    select(PolicySnapshot.version, PolicySnapshot.files)
                    .where(PolicySnapshot.version.in_({old, new}))).all())
            for value in (old, new):
                if value not in found:
                    raise InvalidInput(f"policy version {value[:12]!r} is not on record; "
                                       f"choose one from the list of policy versions")
            before, after = found[old], found[new]
            files = tuple(_file_diff(name, before.get(name), after.get(name), old=old, new=new)
                          for name in sorted(set(before) | set(after)))
            seen.update(changed=[f.name for f in files if f.status != "unchanged"])
        return PolicyDiff(old=old, new=new, files=files)

    def kpi_history(self, principal: Principal) -> tuple[KpiDefinition, ...]:
        """Every KPI definition version of every metric in the catalog, and which is in effect."""
        today = self._today()
        with self._view(principal, "kpi_history", {}) as seen:
            out = []
            for product in self._catalog.products:
                for metric in product.metrics:
                    current = metric.version_at(today)
                    for i, version in enumerate(metric.versions):
                        following = metric.versions[i + 1] if i + 1 < len(metric.versions) \
                            else None
                        out.append(KpiDefinition(
                            product=product.id, product_title=product.title, metric=metric.id,
                            metric_title=metric.title, version=version.version,
                            effective_from=version.effective_from,
                            until=following.effective_from if following else None,
                            definition=version.definition,
                            in_effect=version == current and version.effective_from <= today))
            seen.update(definitions=len(out))
        return tuple(out)


def _file_diff(name: str, before: str | None, after: str | None, *, old: str,
               new: str) -> FileDiff:
    if before == after:
        return FileDiff(name=name, status="unchanged", diff="", added=0, removed=0)
    status = "added" if before is None else "removed" if after is None else "changed"
    lines = list(difflib.unified_diff(
        (before or "").splitlines(), (after or "").splitlines(),
        fromfile=f"{old[:12]}/{name}" if before is not None else "/dev/null",
        tofile=f"{new[:12]}/{name}" if after is not None else "/dev/null", lineterm=""))
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    return FileDiff(name=name, status=status, diff="\n".join(lines), added=added,
                    removed=removed)
