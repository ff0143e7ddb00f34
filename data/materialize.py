"""Materialisation (SPEC B3, B4): rebuild the monthly aggregate cubes the privacy gate reads.

Owns building ``cube_monthly`` for a (tenant, product) from the record stores, bumping the
product's data version and keeping the job-run history. The aggregation is pushed down into
the database as one portable ``INSERT … SELECT … GROUP BY`` per metric (SQLAlchemy Core, the
same SQL on SQLite and PostgreSQL); no event row is ever pulled into Python.

Two modes. A *full* rebuild replaces the whole (tenant, product) cube. An *incremental* run
rebuilds only the months that changed since the last run: the months marked in
``cube_pending`` (written by ingestion and consent changes in the same transaction as the
change) plus the months of any subject whose consent changed since the last successful run
(so a consent change made by any path is applied). It deletes exactly the marks it read, so a
mark written while it runs survives for the next run. An incremental run with nothing to do
records a job with 0 rows and keeps the data version (so stored releases stay valid).

It must never count a subject whose consent for the product's vertical is withdrawn (the
subject is excluded entirely, not just from later months), never store an unclamped value in
``value_sum``, and never leave a half-built cube: delete and insert happen in one transaction,
and a failed run leaves the previous cube and data version untouched, with the failure recorded
in the job history. It applies no noise and no thresholds: that is the gate's job.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import (
    Float,
    String,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.catalog import Catalog, MetricSpec, ProductSpec
from data.engine import Store
from data.errors import InvalidInput, StoreError, VeilError
from data.models import (
    VERTICAL_EVENT_MODELS,
    CubeMonthly,
    CubePending,
    GeoArea,
    JobRun,
    ProductVersion,
    SubjectConsent,
)

__all__ = ["JobResult", "materialize"]

_JOB = "materialize"
#: Stored job errors are for people reading the history; driver errors can carry whole
#: statements and parameter lists.
_MAX_ERROR_CHARS = 2_000


@dataclass(frozen=True)
class JobResult:
    """One successful rebuild: the cube rows written and the data version they carry."""

    tenant: str
    product: str
    rows: int
    seconds: float
    data_version: int
    #: Months rebuilt by an incremental run (empty: nothing had changed); None: full rebuild.
    months: tuple[date, ...] | None = None

    @property
    def mode(self) -> str:
        return "full" if self.months is None else "incremental"


def materialize(store: Store, catalog: Catalog, *, tenant: str | None = None,
                product: str | None = None, incremental: bool = False) -> list[JobResult]:
    """Rebuild the cubes of every metric_set product for every tenant (or the one given).

    Runs one job per (tenant, product), each in its own transaction, and stops at the first
    failure: that job is recorded as failed, its previous cube stays, and StoreError (or the
    VeilError that caused it) is raised. With ``incremental`` only changed months are rebuilt
    (a cube never built before is built in full).
    """
    tenants = _tenants(catalog, tenant)
    products = _products(catalog, product)
    return [_run(store, catalog, t, p, incremental=incremental)
            for t in tenants for p in products]


def _tenants(catalog: Catalog, tenant: str | None) -> list[str]:
    known = [t.id for t in catalog.tenants]
    if tenant is None:
        return known
    if tenant not in known:
        raise InvalidInput(f"unknown tenant {tenant!r}; known tenants: {', '.join(known)}")
    return [tenant]


def _products(catalog: Catalog, product: str | None) -> list[ProductSpec]:
    metric_sets = [p for p in catalog.products if p.kind == "metric_set"]
    if product is None:
        return metric_sets
    for spec in metric_sets:
        if spec.id == product:
            return [spec]
    raise InvalidInput(f"{product!r} is not a metric_set product; cubes exist for: "
                       f"{', '.join(p.id for p in metric_sets)}")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _run(store: Store, catalog: Catalog, tenant: str, product: ProductSpec, *,
         incremental: bool = False) -> JobResult:
    clock = time.perf_counter()
    # The "running" row is committed first so the history shows a job in progress (and a
    # crash that kills the process leaves a visible trace).
    try:
        with store.write.begin() as session:
            run = JobRun(job=_JOB, tenant_id=tenant, product_id=product.id, status="running",
                         started_at=_utcnow())
            session.add(run)
            session.flush()
            run_id = run.id
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot start materialising {product.id} for tenant {tenant}: "
                         f"{_describe(exc)}") from exc
    try:
        with store.write.begin() as session:
            current = _lock_version(session, tenant=tenant, product=product.id)
            # The cube reflects every change committed before its rebuild started; this is the
            # time the gate compares consent withdrawals against.
            snapshot = _utcnow()
            months: tuple[date, ...] | None = None
            if incremental and current is not None:
                marks, months = _changed_months(session, tenant=tenant, product=product)
                if months:
                    rows = _rebuild_months(session, tenant=tenant, product=product,
                                           months=months)
                    version = _bump_version(session, current, tenant=tenant,
                                            product=product.id, rows=_cube_rows(
                                                session, tenant=tenant, product=product.id),
                                            at=snapshot)
                else:
                    rows = 0
                    current.refreshed_at = snapshot  # checked, current: same data version
                    version = current.data_version
            else:
                marks = _mark_ids(session, tenant=tenant, product=product.id)
                rows = _rebuild_cube(session, tenant=tenant, product=product)
                version = _bump_version(session, current, tenant=tenant, product=product.id,
                                        rows=rows, at=snapshot)
            _clear_marks(session, marks)
            seconds = time.perf_counter() - clock
            session.execute(update(JobRun).where(JobRun.id == run_id).values(
                status="succeeded", finished_at=_utcnow(), rows=rows, duration_s=seconds))
    except Exception as exc:  # any failure must reach the job history before it propagates
        seconds = time.perf_counter() - clock
        _record_failure(store, run_id, exc, seconds)
        if isinstance(exc, VeilError):
            raise
        raise StoreError(
            f"Materialising {product.id} for tenant {tenant} failed: "
            f"{_describe(exc).rstrip('. ')}. The "
            f"previous cube and data version are unchanged; the failure is in the job history "
            f"(job run {run_id})."
        ) from exc
    return JobResult(tenant=tenant, product=product.id, rows=rows, seconds=seconds,
                     data_version=version, months=months)


def _record_failure(store: Store, run_id: int, exc: BaseException, seconds: float) -> None:
    # A separate transaction: the job's own transaction has been rolled back with its work.
    with store.write.begin() as session:
        session.execute(update(JobRun).where(JobRun.id == run_id).values(
            status="failed", finished_at=_utcnow(), duration_s=seconds,
            error=_describe(exc)[:_MAX_ERROR_CHARS]))


def _describe(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _rebuild_cube(session: Session, *, tenant: str, product: ProductSpec) -> int:
    """Replace the (tenant, product) cube inside the caller's transaction; return its rows."""
    cube = CubeMonthly.__table__
    session.execute(delete(CubeMonthly).where(CubeMonthly.tenant_id == tenant,
                                              CubeMonthly.product_id == product.id))
    rows = 0
    for metric in product.metrics:
        select_cube = _cube_select(tenant=tenant, product=product, metric=metric)
        statement = insert(cube).from_select(_CUBE_COLUMNS, select_cube)
        # SQLAlchemy reports rowcount reliably only for UPDATE/DELETE unless asked to keep it.
        result = session.execute(statement.execution_options(preserve_rowcount=True))
        rows += result.rowcount
    return rows


def _rebuild_months(session: Session, *, tenant: str, product: ProductSpec,
                    months: tuple[date, ...]) -> int:
    """Replace the cube rows of ``months`` only; return the rows written."""
    cube = CubeMonthly.__table__
    session.execute(delete(CubeMonthly).where(CubeMonthly.tenant_id == tenant,
                                              CubeMonthly.product_id == product.id,
                                              CubeMonthly.period.in_(months)))
    rows = 0
    for metric in product.metrics:
        select_cube = _cube_select(tenant=tenant, product=product, metric=metric, months=months)
        statement = insert(cube).from_select(_CUBE_COLUMNS, select_cube)
        result = session.execute(statement.execution_options(preserve_rowcount=True))
        rows += result.rowcount
    return rows


def _cube_rows(session: Session, *, tenant: str, product: str) -> int:
    return session.scalar(select(func.count()).select_from(CubeMonthly).where(
        CubeMonthly.tenant_id == tenant, CubeMonthly.product_id == product)) or 0


def _mark_ids(session: Session, *, tenant: str, product: str) -> list[int]:
    return list(session.scalars(select(CubePending.id).where(
        CubePending.tenant_id == tenant, CubePending.product_id == product)))


def _clear_marks(session: Session, marks: list[int]) -> None:
    for start in range(0, len(marks), 5_000):
        session.execute(delete(CubePending).where(CubePending.id.in_(marks[start:start + 5_000])))


def _changed_months(session: Session, *, tenant: str,
                    product: ProductSpec) -> tuple[list[int], tuple[date, ...]]:
    """The marks to clear and the months to rebuild: marked months, plus the months holding
    events of subjects whose consent changed since the last successful run began."""
    marks = session.execute(select(CubePending.id, CubePending.month).where(
        CubePending.tenant_id == tenant, CubePending.product_id == product.id)).all()
    months = {month for _, month in marks}
    since = session.scalar(select(func.max(JobRun.started_at)).where(
        JobRun.job == _JOB, JobRun.tenant_id == tenant, JobRun.product_id == product.id,
        JobRun.status == "succeeded"))
    if since is not None:
        events = VERTICAL_EVENT_MODELS[product.vertical].__table__
        consent = SubjectConsent.__table__
        months.update(session.scalars(
            select(events.c.month).distinct()
            .select_from(events.join(consent, and_(
                consent.c.tenant_id == events.c.tenant_id,
                consent.c.pseudonym == events.c.pseudonym,
                consent.c.vertical == product.vertical)))
            .where(events.c.tenant_id == tenant, events.c.product_id == product.id,
                   consent.c.changed_at >= since)))
    return [mark_id for mark_id, _ in marks], tuple(sorted(months))


_CUBE_COLUMNS: Sequence[str] = (
    "tenant_id", "product_id", "metric", "period", "state", "district", "h3_cell",
    "age_bucket", "gender", "category", "n_events", "value_sum",
)


def _cube_select(*, tenant: str, product: ProductSpec, metric: MetricSpec,
                 months: tuple[date, ...] | None = None):
    """SELECT one metric's cube rows: consenting subjects' events grouped by the cube key."""
    events = VERTICAL_EVENT_MODELS[product.vertical].__table__
    geo = GeoArea.__table__
    consent = SubjectConsent.__table__
    withdrawn = exists().where(
        consent.c.tenant_id == events.c.tenant_id,
        consent.c.pseudonym == events.c.pseudonym,
        consent.c.vertical == product.vertical,
        consent.c.status == "withdrawn",
    )
    # Rendered inline, not as a bound parameter: PostgreSQL would see the SELECT-list and the
    # GROUP BY copies as two different parameters and refuse the grouping.
    category = func.coalesce(events.c.category, literal_column("'-'"))
    conditions = [
        events.c.tenant_id == tenant,
        events.c.product_id == product.id,
        events.c.event_type == metric.event_type,
        ~withdrawn,
    ]
    if months is not None:
        conditions.append(events.c.month.in_(months))
    if metric.category is not None:
        conditions.append(events.c.category == metric.category)
    if metric.measure in {"sum", "mean"} and metric.value_bounds is not None:
        lo, hi = metric.value_bounds
        # An event without a value says nothing about a sum or mean; counting it in n_events
        # would bias the mean towards zero.
        conditions.append(events.c.value.is_not(None))
        clamped = case(
            (events.c.value < lo, literal(lo, Float)),
            (events.c.value > hi, literal(hi, Float)),
            else_=events.c.value,
        )
        value_sum = func.coalesce(func.sum(clamped), literal(0.0, Float))
    else:
        value_sum = literal(0.0, Float)
    keys = (events.c.month, geo.c.parent_code, events.c.district, events.c.h3_cell,
            events.c.age_bucket, events.c.gender, category)
    return (
        select(
            literal(tenant, String), literal(product.id, String), literal(metric.id, String),
            *keys, func.count(), value_sum,
        )
        .select_from(events.join(geo, geo.c.code == events.c.district))
        .where(and_(*conditions))
        .group_by(*keys)
    )


def _lock_version(session: Session, *, tenant: str, product: str) -> ProductVersion | None:
    """Lock the product's version row before touching its cube.

    On PostgreSQL two rebuilds of the same cube would otherwise interleave: the second DELETE
    cannot see the first's uncommitted rows, and the cube would end up holding both. Waiting
    on this row lock makes the second job's DELETE run after the first commits, and see its
    rows. (FOR UPDATE renders as nothing on SQLite, whose write transactions lock the whole
    database up front.) A first-ever build has no row to lock; two racing first builds then
    collide on the version's primary key and one fails cleanly, rolled back whole.
    """
    return session.scalar(
        select(ProductVersion)
        .where(ProductVersion.tenant_id == tenant, ProductVersion.product_id == product)
        .with_for_update()
    )


def _bump_version(session: Session, current: ProductVersion | None, *, tenant: str,
                  product: str, rows: int, at: datetime | None = None) -> int:
    now = at or _utcnow()
    if current is None:
        current = ProductVersion(tenant_id=tenant, product_id=product, data_version=1,
                                 refreshed_at=now, cube_rows=rows)
        session.add(current)
    else:
        current.data_version += 1
        current.refreshed_at = now
        current.cube_rows = rows
    session.flush()
    return current.data_version
