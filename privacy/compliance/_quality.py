"""Data quality for compliance: each metric product's freshness (``data.freshness``) and
completeness against its SLO. Completeness is month coverage of the product's cube: the months
of the longest window a series query may cover (``max_series_months`` complete months up to
last month), from the product's first month of data, that have any cube rows. A missing month
is a breach (there is no declared completeness SLO, so the implied one is "no gaps"). The
ingestion quarantine rate over the same window is shown beside it as information, not as an
SLO. ``month_coverage`` and ``completeness_window`` are shared with the alerts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time

from sqlalchemy import func, select

from data.freshness import freshness
from data.models import CubeMonthly, IngestBatch
from data.months import add_months

from privacy.compliance._base import _months, _Reads
from privacy.core import Principal

__all__ = ["MonthCoverage", "ProductQuality", "completeness_window", "month_coverage",
           "_Quality"]


@dataclass(frozen=True)
class ProductQuality:
    """Freshness and completeness of one product of the tenant against its SLO."""

    product: str
    title: str
    slo_hours: int
    last_refresh: datetime | None
    refresh_age_hours: float | None
    newest_event: datetime | None
    data_age_hours: float | None
    pending_months: int
    last_job_status: str | None
    window_start: date
    window_end: date
    expected_months: int
    months_with_data: int
    missing_months: tuple[str, ...]
    batches: int
    rows_ingested: int
    rows_quarantined: int
    breaches: tuple[str, ...]

    @property
    def breached(self) -> bool:
        return bool(self.breaches)

    @property
    def completeness(self) -> float | None:
        return None if not self.expected_months else self.months_with_data / self.expected_months

    @property
    def quarantine_rate(self) -> float | None:
        return None if not self.rows_ingested else self.rows_quarantined / self.rows_ingested


@dataclass(frozen=True)
class MonthCoverage:
    """Which months of a completeness window have cube rows (see the module docstring)."""

    start: date                  # the window's first month: ``first`` or the product's first
    expected: int                # months expected from ``start`` to the window's last month
    missing: tuple[str, ...]     # YYYY-MM of the expected months without data
    has_data: bool

    @property
    def breach(self) -> str | None:
        if not self.has_data:
            return "no months of data in its aggregates"
        if self.missing:
            return (f"{len(self.missing)} of {self.expected} months have no data "
                    f"({', '.join(self.missing[:6])}{' …' if len(self.missing) > 6 else ''})")
        return None


def month_coverage(session, *, tenant: str, product: str, first: date,
                   last: date) -> MonthCoverage:
    """Month coverage of a (tenant, product) cube between ``first`` and ``last`` (months)."""
    periods = set(session.scalars(
        select(CubeMonthly.period).distinct()
        .where(CubeMonthly.tenant_id == tenant, CubeMonthly.product_id == product)).all())
    months = {date.fromisoformat(str(p)[:10]) for p in periods}
    start = max(first, min(months)) if months else first
    expected = _months(start, last)
    missing = tuple(m.isoformat()[:7] for m in expected if m not in months)
    return MonthCoverage(start=start, expected=len(expected), missing=missing,
                         has_data=bool(months))


def completeness_window(today: date, *, max_series_months: int) -> tuple[date, date]:
    """The completeness window: ``max_series_months`` complete months up to last month."""
    last = add_months(today.replace(day=1), -1)
    return add_months(last, -(max_series_months - 1)), last


class _Quality(_Reads):
    def data_quality(self, principal: Principal) -> tuple[ProductQuality, ...]:
        """Freshness and completeness of every metric product of the tenant against its SLO."""
        now = self._clock()
        first, last = completeness_window(
            now.date(), max_series_months=self._catalog.policy.max_series_months)
        with self._view(principal, "data_quality", {}) as seen:
            out = []
            with self._store.read() as session:
                for fresh in freshness(session, self._catalog, tenant=principal.tenant, now=now):
                    coverage = month_coverage(session, tenant=principal.tenant,
                                              product=fresh.product, first=first, last=last)
                    batches, rows, rejected = session.execute(
                        select(func.count(), func.coalesce(func.sum(IngestBatch.rows), 0),
                               func.coalesce(func.sum(IngestBatch.rejected), 0))
                        .where(IngestBatch.tenant_id == principal.tenant,
                               IngestBatch.product_id == fresh.product,
                               IngestBatch.started_at >= datetime.combine(first, time()))
                    ).one()
                    start, expected, missing = coverage.start, coverage.expected, coverage.missing
                    breaches = list(fresh.breaches)
                    if coverage.breach:
                        breaches.append(coverage.breach)
                    out.append(ProductQuality(
                        product=fresh.product, title=fresh.title, slo_hours=fresh.slo_hours,
                        last_refresh=fresh.last_refresh,
                        refresh_age_hours=fresh.refresh_age_hours,
                        newest_event=fresh.newest_event, data_age_hours=fresh.data_age_hours,
                        pending_months=fresh.pending_months,
                        last_job_status=fresh.last_job_status, window_start=start,
                        window_end=last, expected_months=expected,
                        months_with_data=expected - len(missing), missing_months=missing,
                        batches=int(batches), rows_ingested=int(rows),
                        rows_quarantined=int(rejected), breaches=tuple(breaches)))
            seen.update(breached=[q.product for q in out if q.breached])
        return tuple(out)
