"""Cost showback per domain (issue 20, the DAS design's "operational transparency"): what each
domain of the catalog (its vertical: health, education, social protection) costs the tenant to
keep and to use — the rows it stores, the time its aggregates took to rebuild, and the privacy
budget its releases and exports drew — over a trailing window of days.

Storage is counted as it stands now (events or registrations, and aggregate cube rows); work
and spending within the window (materialisation runs, ingested rows, releases computed, exports
requested). ε is what the release log and the export records say each one charged: a view
served from a stored or published release, or derived from one, charged nothing and adds 0.
Everything is scoped to the principal's tenant inside the SQL; no released value is read.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import func, select

from data.errors import InvalidInput
from data.models import (VERTICAL_EVENT_MODELS, CubeMonthly, Export, IngestBatch, JobRun,
                         Registration)
from data.models import Release as ReleaseRow

from privacy.compliance._base import _Reads
from privacy.core import Principal

__all__ = ["DomainCost", "Showback", "_Showback"]

#: the longest trailing window a showback covers (a year and a day, like the budget usage)
MAX_DAYS = 366


@dataclass(frozen=True)
class DomainCost:
    """One domain's storage, work and privacy spending for the tenant."""

    domain: str                   # the catalog's vertical id
    title: str
    products: tuple[str, ...]     # product titles
    stored_rows: int              # events (or registrations) kept now
    cube_rows: int                # aggregate rows kept now
    rebuilds: int                 # materialisation runs started in the window
    rebuild_seconds: float        # their total duration (finished runs)
    failed_rebuilds: int
    rows_ingested: int            # rows of ingestion batches started in the window
    releases: int                 # releases computed in the window
    release_epsilon: float        # ε those releases charged
    exports: int                  # exports requested in the window
    export_epsilon: float         # ε those exports charged

    @property
    def epsilon(self) -> float:
        return self.release_epsilon + self.export_epsilon


@dataclass(frozen=True)
class Showback:
    """Cost per domain over the days ``start`` .. ``end`` (both included, UTC)."""

    start: date
    end: date
    domains: tuple[DomainCost, ...]

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def _per_product(session, statement) -> dict[str, tuple]:
    """``{product_id: (the row's other columns…)}`` of a statement grouped by product."""
    return {row[0]: tuple(row[1:]) for row in session.execute(statement)}


class _Showback(_Reads):
    def cost_showback(self, principal: Principal, *, days: int = 30) -> Showback:
        """Storage, rebuild time and ε spent per domain of the tenant over the last ``days``."""
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise InvalidInput(f"a cost showback covers 1 to {MAX_DAYS} days, got {days!r}")
        end = self._today()
        start = end - timedelta(days=days - 1)
        since = datetime.combine(start, time())
        tenant = principal.tenant
        with self._view(principal, "cost_showback", {"days": days}) as seen:
            with self._store.read() as session:
                stored: dict[str, int] = defaultdict(int)
                for model in VERTICAL_EVENT_MODELS.values():
                    for product, (n,) in _per_product(session, select(
                            model.product_id, func.count()).where(model.tenant_id == tenant)
                            .group_by(model.product_id)).items():
                        stored[product] += int(n)
                registrations = session.scalar(select(func.count()).select_from(Registration)
                                               .where(Registration.tenant_id == tenant))
                cubes = _per_product(session, select(CubeMonthly.product_id, func.count())
                                     .where(CubeMonthly.tenant_id == tenant)
                                     .group_by(CubeMonthly.product_id))
                rebuilds = _per_product(session, select(
                    JobRun.product_id, func.count(),
                    func.coalesce(func.sum(JobRun.duration_s), 0.0),
                    func.count().filter(JobRun.status == "failed"))
                    .where(JobRun.job == "materialize", JobRun.tenant_id == tenant,
                           JobRun.started_at >= since).group_by(JobRun.product_id))
                ingested = _per_product(session, select(
                    IngestBatch.product_id, func.coalesce(func.sum(IngestBatch.rows), 0))
                    .where(IngestBatch.tenant_id == tenant, IngestBatch.started_at >= since)
                    .group_by(IngestBatch.product_id))
                releases = _per_product(session, select(
                    ReleaseRow.product_id, func.count(),
                    func.coalesce(func.sum(ReleaseRow.epsilon), 0.0))
                    .where(ReleaseRow.tenant_id == tenant, ReleaseRow.created_at >= since)
                    .group_by(ReleaseRow.product_id))
                exports = _per_product(session, select(
                    Export.product_id, func.count(), func.coalesce(func.sum(Export.epsilon), 0.0))
                    .where(Export.tenant_id == tenant, Export.created_at >= since)
                    .group_by(Export.product_id))
            out = []
            verticals = dict.fromkeys(p.vertical for p in self._catalog.products)
            for vertical in verticals:
                products = [p for p in self._catalog.products if p.vertical == vertical]
                ids = [p.id for p in products]

                def total(table: dict[str, tuple], column: int, ids=ids) -> float:
                    return sum(float(table[i][column]) for i in ids if i in table)

                out.append(DomainCost(
                    domain=vertical, title=vertical.replace("_", " ").capitalize(),
                    products=tuple(p.title for p in products),
                    stored_rows=sum(stored.get(i, 0) for i in ids) + sum(
                        int(registrations or 0) for p in products if p.store == "registrations"),
                    cube_rows=int(total(cubes, 0)), rebuilds=int(total(rebuilds, 0)),
                    rebuild_seconds=total(rebuilds, 1), failed_rebuilds=int(total(rebuilds, 2)),
                    rows_ingested=int(total(ingested, 0)), releases=int(total(releases, 0)),
                    release_epsilon=total(releases, 1), exports=int(total(exports, 0)),
                    export_epsilon=total(exports, 1)))
            seen.update(domains=len(out))
        return Showback(start=start, end=end, domains=tuple(out))
