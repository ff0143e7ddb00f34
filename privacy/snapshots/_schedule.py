"""The default donor snapshots and the schedule that keeps them current (see the package)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError

from data.catalog import Catalog
from data.engine import Store
from data.errors import InvalidInput, StoreError, VeilError
from data.models import JobRun

from privacy.core import Gate, Principal, Query, Release

__all__ = ["SnapshotRun", "Snapshots"]

_log = logging.getLogger("veil.snapshots")
JOB = "snapshot"
#: a run still "running" this long after it started is taken for dead (a killed process)
_STALE_RUN = timedelta(minutes=30)
_MAX_ERROR_CHARS = 2_000


@dataclass(frozen=True)
class SnapshotRun:
    """One scheduled run: the job run's id, what was due and what it published."""

    id: int
    due: int
    published: tuple[Release, ...]
    errors: tuple[str, ...]
    seconds: float

    @property
    def failed(self) -> bool:
        return bool(self.errors)


def _publisher(tenant: str) -> Principal:
    return Principal(subject=f"publication@{tenant}", display_name="Publication",
                     role="publisher", tenant=tenant, source="system")


def _series_key(query: Query) -> tuple:
    return query.product, query.metric, query.group_by, query.filters


class Snapshots:
    """``Snapshots(gate, store, catalog, clock=…)``, where ``gate`` is the core gate."""

    def __init__(self, gate: Gate, store: Store, catalog: Catalog, *,
                 clock: Callable[[], datetime]):
        self._gate, self._store, self._catalog, self._clock = gate, store, catalog, clock

    # --- what is published ---------------------------------------------------------------------

    def series(self, *, months: int = 12, level: str = "dp_high") -> list[tuple[str, Query]]:
        """(tenant, query) of every snapshot the defaults publish: every count metric of every
        published series, by state, over the ``months`` latest complete months with data, for
        every tenant; then every other published series whose data has changed since it was
        published (``gate.republishing``), with its metric, level, grouping, filters and window
        length over the latest complete months."""
        out: list[tuple[str, Query]] = []
        for tenant in self._catalog.tenants:
            publisher = _publisher(tenant.id)
            done = set()
            for product in self._catalog.products:
                if product.kind != "metric_set" or not product.published_series:
                    continue
                for metric in product.metrics:
                    if metric.measure != "count":
                        continue
                    query = self._gate.data_clock(publisher, product=product.id).query(
                        metric=metric.id, level=level, months=months,
                        group_by=("month", "state"))
                    out.append((tenant.id, query))
                    done.add(_series_key(query))
            for stale in self._gate.republishing(publisher):
                if _series_key(stale) in done:
                    continue
                query = self._gate.data_clock(publisher, product=stale.product).query(
                    metric=stale.metric, level=stale.level, months=len(stale.months),
                    group_by=stale.group_by, filters=stale.filters)
                if stale.period != query.period:
                    query = dataclasses.replace(query, period=stale.period)
                out.append((tenant.id, query))
        return out

    def due(self, *, months: int = 12, level: str = "dp_high") -> list[tuple[str, Query]]:
        """The default snapshots not currently published (a new complete month, a rebuild
        after a consent withdrawal, a series never published). Spends nothing."""
        current = {tenant.id: {r.query for r in self._gate.published(_publisher(tenant.id))}
                   for tenant in self._catalog.tenants}
        return [(tenant, query) for tenant, query in self.series(months=months, level=level)
                if query not in current[tenant]]

    def publish_defaults(self, *, months: int = 12, level: str = "dp_high",
                         requested_by: str = "veil publish") -> list[Release]:
        """Publish every default snapshot (``series``), current or not (`veil publish`)."""
        return [self._gate.publish(tenant=tenant, query=query, requested_by=requested_by)
                for tenant, query in self.series(months=months, level=level)]

    # --- the schedule --------------------------------------------------------------------------

    def run_scheduled(self, *, every: timedelta = timedelta(days=1), months: int = 12,
                      level: str = "dp_high", requested_by: str = "veil snapshots",
                      force: bool = False) -> SnapshotRun | None:
        """Publish what is due, as one job run; None when nothing is due and a run succeeded
        within ``every`` (unless ``force``), or another run is in progress.

        A series that cannot be published (e.g. the publisher's budget is spent) does not stop
        the others: the run publishes the rest and fails with every error named.
        """
        if every <= timedelta(0):
            raise InvalidInput(f"a snapshot schedule needs a positive interval, got {every}")
        now = self._clock()
        try:
            with self._store.read() as session:
                last = session.scalar(select(func.max(JobRun.started_at)).where(
                    JobRun.job == JOB, JobRun.status == "succeeded"))
                running = session.scalar(select(func.count()).select_from(JobRun).where(
                    JobRun.job == JOB, JobRun.status == "running",
                    JobRun.started_at > now - _STALE_RUN))
        except SQLAlchemyError as exc:
            raise StoreError(f"Cannot read the snapshot job history: "
                             f"{type(exc).__name__}") from exc
        if running:
            return None
        due = self.due(months=months, level=level)
        if not due and not force and last is not None and now - last < every:
            return None
        run_id = self._start(now)
        clock, published, errors = time.perf_counter(), [], []
        for tenant, query in due:
            try:
                published.append(self._gate.publish(tenant=tenant, query=query,
                                                    requested_by=requested_by))
            except VeilError as exc:
                errors.append(f"{tenant} {query.product}.{query.metric}: {exc}")
        seconds = time.perf_counter() - clock
        self._finish(run_id, rows=len(published), seconds=seconds, errors=errors)
        return SnapshotRun(id=run_id, due=len(due), published=tuple(published),
                           errors=tuple(errors), seconds=seconds)

    def run_worker(self, *, stop: threading.Event, check_seconds: float = 300.0,
                   every: timedelta = timedelta(days=1)) -> None:
        """Check every ``check_seconds`` until ``stop`` is set; log errors and carry on (a
        failed run is in the job history, where the alerts find it)."""
        while not stop.is_set():
            try:
                self.run_scheduled(every=every)
            except Exception:
                _log.exception("snapshot scheduler: unexpected error; carrying on")
            stop.wait(check_seconds)

    def _start(self, now: datetime) -> int:
        try:
            with self._store.write.begin() as session:
                run = JobRun(job=JOB, status="running", started_at=now)
                session.add(run)
                session.flush()
                return run.id
        except SQLAlchemyError as exc:
            raise StoreError(f"Cannot start a snapshot run: {type(exc).__name__}") from exc

    def _finish(self, run_id: int, *, rows: int, seconds: float, errors: list[str]) -> None:
        with self._store.write.begin() as session:
            session.execute(update(JobRun).where(JobRun.id == run_id).values(
                status="failed" if errors else "succeeded", finished_at=self._clock(),
                rows=rows, duration_s=seconds,
                error="; ".join(errors)[:_MAX_ERROR_CHARS] if errors else None))
