"""Materialisation (SPEC B3, B4): rebuild the monthly aggregate cubes the privacy gate reads.

Owns building ``cube_monthly`` for a (tenant, product) from the record stores, bumping the
product's data version and keeping the job-run history. The aggregation is pushed down into
the database (SQLAlchemy Core, the same SQL on SQLite and PostgreSQL); no event row is ever
pulled into Python. The product's events are read ONCE per rebuild: one ``GROUP BY`` over the
cube key plus the event type, with the count and, for each value metric's bounds, the count of
events with a value and their clamped sum, into a temporary *base* table (a few rows per cube
row); every metric's cube rows are then selected from the base, not from the events. So a
metric that counts a subset of another's events (``days_present`` — attendance marked present —
of ``attendance_records``) or a mean beside a count costs no second scan of the events.

Two modes. A *full* rebuild replaces the whole (tenant, product) cube. An *incremental* run
rebuilds only the months that changed since the last run: the months marked in
``cube_pending`` (written by ingestion and consent changes in the same transaction as the
change) plus the months of any subject whose consent changed since the last successful run
(so a consent change made by any path is applied). It deletes exactly the marks it read, so a
mark written while it runs survives for the next run. An incremental run with nothing to do
records a job with 0 rows and keeps the data version (so stored releases stay valid).

A ``distinct`` metric counts persons, not events (learners active per week; learners new,
returning or churned against the month before): it cannot be read from the base, which has
lost who is who, so each is read from the events (``_distinct_counts``: ``ROW_NUMBER()``
picks each person's first event of a week or month, or last of the month before, which places
them in one cell). Metrics that keep all or one of the same statuses (``learner_status`` and the
new, returning and churned learners) share one such read (``_insert_statuses``). A metric with
a lookback reads month M−1 for month M,
so rebuilding a month rebuilds the month after it too, and after a retention purge the first
month still held keeps its rows final like the purged ones (its month before is gone).

It must never count a subject whose consent for the product's vertical is withdrawn (the
subject is excluded entirely, not just from later months), never store an unclamped value in
``value_sum``, and never leave a half-built cube: delete and insert happen in one transaction,
and a failed run leaves the previous cube and data version untouched, with the failure recorded
in the job history. It applies no noise and no thresholds: that is the gate's job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.catalog import Catalog, MetricSpec, ProductSpec
from data.engine import Store
from data.errors import InvalidInput, StoreError, VeilError
from data.months import add_months
from data.models import (
    VERTICAL_EVENT_MODELS,
    CubeMonthly,
    CubePending,
    GeoArea,
    JobRun,
    ProductVersion,
    RetentionPurge,
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
                product: str | None = None, incremental: bool = False,
                workers: int | None = None) -> list[JobResult]:
    """Rebuild the cubes of every metric_set product for every tenant (or the one given).

    Runs one job per (tenant, product), each in its own transaction, and stops at the first
    failure: that job is recorded as failed, its previous cube stays, no job not yet started
    starts, and StoreError (or the VeilError that caused it) is raised. With ``incremental``
    only changed months are rebuilt (a cube never built before is built in full). Results come
    in catalog order.

    On PostgreSQL ``workers`` jobs run at once (default ``POSTGRES_WORKERS``), each on its own
    connection: a job is one ``INSERT … SELECT`` after another, all of it one server process's
    work, so one job at a time leaves the server's other cores idle. The biggest cubes (by
    their last build) start first, so a long job does not start last. SQLite takes one writer
    at a time: its jobs run one after another (a full rebuild reads on two cores itself).
    """
    tenants = _tenants(catalog, tenant)
    products = _products(catalog, product)
    jobs = [(t, p) for t in tenants for p in products]
    if workers is None:
        workers = POSTGRES_WORKERS if store.dialect == "postgresql" else 1
    if workers < 1:
        raise InvalidInput(f"workers must be at least 1, not {workers}")
    if workers == 1 or len(jobs) == 1 or store.dialect != "postgresql":
        return [_run(store, catalog, t, p, incremental=incremental) for t, p in jobs]
    return _run_concurrently(store, catalog, jobs, workers=workers, incremental=incremental)


#: Jobs at once on PostgreSQL: the server's cores this deployment may use for a rebuild.
POSTGRES_WORKERS = 2


def _run_concurrently(store: Store, catalog: Catalog, jobs: list[tuple[str, ProductSpec]], *,
                      workers: int, incremental: bool) -> list[JobResult]:
    with store.read() as session:
        last = {(v.tenant_id, v.product_id): v.cube_rows or 0
                for v in session.scalars(select(ProductVersion))}
    order = sorted(range(len(jobs)), key=lambda i: -last.get((jobs[i][0], jobs[i][1].id), 0))
    failed = threading.Event()
    results: list[JobResult | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def job(index: int) -> None:
        if failed.is_set():  # stop at the first failure: a job not started does not start
            return
        tenant, product = jobs[index]
        try:
            results[index] = _run(store, catalog, tenant, product, incremental=incremental)
        except BaseException as exc:
            failed.set()
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="veil-materialize") as pool:
        for _ in pool.map(job, order):
            pass
    if errors:
        raise errors[0]
    return list(results)


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
                kept = (_purged_through(session, tenant=tenant, product=product.id)
                        is not None)  # purged months' rows were kept, not rewritten
                version = _bump_version(session, current, tenant=tenant, product=product.id,
                                        rows=_cube_rows(session, tenant=tenant,
                                                        product=product.id) if kept else rows,
                                        at=snapshot)
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
    """Replace the (tenant, product) cube inside the caller's transaction — all but the months
    a retention run purged, whose cube rows are final (data/retention.py); return its rows."""
    purged = _purged_through(session, tenant=tenant, product=product.id)
    for metrics, _back, kept in _final_through(product, purged):
        session.execute(delete(CubeMonthly).where(
            CubeMonthly.tenant_id == tenant, CubeMonthly.product_id == product.id, metrics,
            *(() if kept is None else (CubeMonthly.period > kept,))))
    return _build(session, tenant=tenant, product=product, after=purged)


def _lookback(metric: MetricSpec) -> int:
    return metric.lookback_months if metric.measure == "distinct" else 0


def _final_through(product: ProductSpec, purged: date | None) -> list[tuple]:
    """The cube's metrics grouped by lookback: (a condition on ``CubeMonthly.metric``, the
    lookback, the last month whose rows a rebuild keeps or None). Kept: the purged months,
    and for a metric with a lookback as many months more (their cells read a purged month's
    events, which are gone). The group without a lookback is every other metric, so a full
    rebuild still drops the rows of a metric the catalog no longer has."""
    groups: dict[int, list[str]] = {}
    for metric in product.metrics:
        groups.setdefault(_lookback(metric), []).append(metric.id)
    looking = [m for back, ids in groups.items() if back for m in ids]
    out = [(~CubeMonthly.metric.in_(looking) if looking else true(), 0, purged)]
    out += [(CubeMonthly.metric.in_(ids), back,
             None if purged is None else add_months(purged, back))
            for back, ids in sorted(groups.items()) if back]
    return out


def _purged_through(session: Session, *, tenant: str, product: str) -> date | None:
    """The last month whose raw events a retention run purged (they are purged oldest first,
    so every month before it is purged too), or None."""
    last = session.scalar(select(func.max(RetentionPurge.month)).where(
        RetentionPurge.tenant_id == tenant, RetentionPurge.product_id == product))
    return None if last is None else date.fromisoformat(str(last)[:10])


def _rebuild_months(session: Session, *, tenant: str, product: ProductSpec,
                    months: tuple[date, ...]) -> int:
    """Replace the cube rows of ``months`` only — and, for a metric with a lookback, of the
    month after each too (its cells read the changed month) — and return the rows written."""
    purged = _purged_through(session, tenant=tenant, product=product.id)
    for metrics, back, kept in _final_through(product, purged):
        these = _with_following(months, back, kept)
        if these:
            session.execute(delete(CubeMonthly).where(
                CubeMonthly.tenant_id == tenant, CubeMonthly.product_id == product.id,
                metrics, CubeMonthly.period.in_(these)))
    return _build(session, tenant=tenant, product=product, months=months, after=purged)


def _with_following(months: tuple[date, ...], lookback: int,
                    kept: date | None) -> tuple[date, ...]:
    """``months`` and the ``lookback`` months after each, less those kept final."""
    out = {add_months(month, ahead) for month in months for ahead in range(lookback + 1)}
    return tuple(sorted(m for m in out if kept is None or m > kept))


def _build(session: Session, *, tenant: str, product: ProductSpec,
           months: tuple[date, ...] | None = None, after: date | None = None) -> int:
    """Insert the cube rows of every metric of the product (of ``months`` only, or of the
    months after ``after``, if given) from one read of its events, plus one statement per
    distinct metric (of the month after each of ``months`` too, for a lookback); return the
    rows written."""
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        # Enough memory for the grouping to stay a hash in memory (the default 4 MB made a
        # medium product's aggregate spill to disk in five batches); this transaction only.
        connection.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    # A full rebuild on an SQLite file reads on two cores (``_fill_in_two``): the store's
    # engine, for a second connection (an in-memory database has no second connection to it).
    database = connection.engine.url.database or ":memory:"
    in_two = (session.get_bind() if not postgres and months is None
              and database != ":memory:" and "mode=memory" not in database else None)
    rows = 0
    counted = [m for m in product.metrics if m.measure != "distinct"]
    if counted:
        base = _Base(product, anti_join=postgres)
        base.table.drop(connection, checkfirst=True)  # a leftover of this connection's last build
        base.table.create(connection)
        try:
            if in_two is None:
                connection.execute(insert(base.table).from_select(
                    [c.name for c in base.table.columns],
                    base.select(tenant=tenant, product=product, months=months, after=after)))
            else:
                _fill_base_in_two(connection, in_two, base, tenant=tenant, product=product,
                                  after=after)
            for metric in counted:
                statement = insert(CubeMonthly.__table__).from_select(
                    _CUBE_COLUMNS, base.metric_select(tenant=tenant, product=product,
                                                      metric=metric))
                rows += _inserted(connection, statement)
        finally:
            base.table.drop(connection)
    shared = _shared_statuses(product)
    for metric in product.metrics:
        if metric.measure != "distinct":
            continue
        back = _lookback(metric)
        reads = dict(tenant=tenant, product=product, anti_join=postgres,
                     months=None if months is None else _with_following(
                         months, back, None if after is None else add_months(after, back)),
                     after=after)
        group = shared.get((metric.event_type, back))
        if group is not None:
            if metric is group[0]:  # the group's statuses once, for all of its metrics
                rows += _insert_statuses(connection, metrics=group, in_two=in_two, **reads)
            continue
        if in_two is not None:
            rows += _insert_statuses(connection, metrics=[metric], in_two=in_two, **reads)
            continue
        statement = insert(CubeMonthly.__table__).from_select(
            _CUBE_COLUMNS, _distinct_select(metric=metric, **reads))
        rows += _inserted(connection, statement)
    return rows


def _shared_statuses(product: ProductSpec) -> dict[tuple[str, int], list[MetricSpec]]:
    """Distinct metrics with a lookback that share their event type and lookback, by (event
    type, lookback), where there are two or more: they count the same statuses (new,
    returning, churned), each keeping all of them or one (``learner_status`` and the new,
    returning and churned learners)."""
    groups: dict[tuple[str, int], list[MetricSpec]] = {}
    for metric in product.metrics:
        if metric.measure == "distinct" and _lookback(metric):
            groups.setdefault((metric.event_type, _lookback(metric)), []).append(metric)
    return {key: group for key, group in groups.items() if len(group) > 1}


#: The statuses table's columns: a cube row's key with its count.
_STATUS_COLUMNS = ("period", "state", "district", "h3_cell", "age_bucket", "gender", "category")


def _insert_statuses(connection, *, tenant: str, product: ProductSpec,
                     metrics: list[MetricSpec], anti_join: bool,
                     months: tuple[date, ...] | None, after: date | None,
                     in_two=None) -> int:
    """The cube rows of ``metrics`` — one ``_shared_statuses`` group, or one distinct metric:
    the persons counted once into a temporary table (for a group, one pass of the window
    functions over the events, where each metric's own statement made one) and each metric's
    rows selected from it (a group's metric: all statuses, or those of its one status), exactly
    the rows its own statement gives. Returns the rows written.

    With ``in_two`` (the store's engine; SQLite, full rebuild) the months are cut in two where
    half the product's events fall on each side, and the halves counted at once
    (``_fill_in_two``): the earlier half's periods from its own months, the later half's from
    its months and the ``lookback`` months before them, which it reads but does not write (as
    after a purge: ``after``). A period's persons are all counted in the half that writes it,
    so the halves' rows are the whole's."""
    cube = CubeMonthly.__table__
    table = Table("veil_cube_statuses", MetaData(),
                  *(Column(name, cube.c[name].type) for name in _STATUS_COLUMNS),
                  Column("n", Integer), prefixes=["TEMPORARY"])
    table.drop(connection, checkfirst=True)  # a leftover of this connection's last build
    table.create(connection)
    shared = len(metrics) > 1
    counts = dict(tenant=tenant, product=product, metric=metrics[0], anti_join=anti_join,
                  months=months, every_status=shared)
    columns = [c.name for c in table.columns]
    split = (_split_month(connection, tenant=tenant, product=product, after=after)
             if in_two is not None and after is None else None)
    rows = 0
    try:
        if split is None:
            connection.execute(insert(table).from_select(
                columns, _distinct_counts(**counts, after=after)))
        else:
            _fill_in_two(connection, in_two, table.name, columns,
                         _distinct_counts(**counts, after=None, through=split),
                         _distinct_counts(**counts, after=add_months(
                             split, -_lookback(metrics[0]))))
        for metric in metrics:
            kept = ([table.c.category == metric.category]
                    if shared and metric.category is not None else [])
            rows += _inserted(connection, insert(cube).from_select(_CUBE_COLUMNS, select(
                literal(tenant, String), literal(product.id, String), literal(metric.id, String),
                *(table.c[name] for name in _STATUS_COLUMNS), table.c.n,
                literal_column("0.0")).where(*kept)))
    finally:
        table.drop(connection)
    return rows


def _split_month(connection, *, tenant: str, product: ProductSpec,
                 after: date | None) -> date | None:
    """The month that ends the earlier half of the product's events (after ``after``): where
    half of them fall on each side, counted from the (tenant, product, month) index alone (a
    tenth of a second for a product of 1.7M events) — a growing programme has more events in
    its later months. None for a product with fewer than two months."""
    events = VERTICAL_EVENT_MODELS[product.vertical].__table__
    per_month = connection.execute(
        select(events.c.month, func.count()).where(
            events.c.tenant_id == tenant, events.c.product_id == product.id,
            *(() if after is None else (events.c.month > after,)))
        .group_by(events.c.month).order_by(events.c.month)).all()
    if len(per_month) < 2:
        return None
    half, seen = sum(n for _, n in per_month) / 2, 0
    for month, n in per_month[:-1]:  # the last month always goes to the later half
        seen += n
        split = month
        if seen >= half:
            break
    return date.fromisoformat(str(split)[:10])


def _fill_base_in_two(connection, engine, base: _Base, *, tenant: str, product: ProductSpec,
                      after: date | None) -> None:
    """Fill the base for a full rebuild on SQLite, on two cores.

    SQLite runs a statement on one core, and grouping a large product's events was a large
    part of a rebuild. So the product's months are cut in two where half its events fall on
    each side (``_split_month``), and the halves are grouped at once (``_fill_in_two``).
    Groups never span months, so the halves' groups are the whole product's.
    """
    split = _split_month(connection, tenant=tenant, product=product, after=after)
    columns = [c.name for c in base.table.columns]
    if split is None:
        connection.execute(insert(base.table).from_select(
            columns, base.select(tenant=tenant, product=product, months=None, after=after)))
        return
    _fill_in_two(connection, engine, base.NAME, columns,
                 base.select(tenant=tenant, product=product, months=None, after=after,
                             through=split),
                 base.select(tenant=tenant, product=product, months=None, after=split))


def _fill_in_two(connection, engine, table: str, columns: list[str], first, second) -> None:
    """Insert the rows of ``first`` and ``second`` into the temporary ``table`` (SQLite), the
    two SELECTs running at once: ``second`` on a connection of its own in a thread while
    ``first`` fills the table here (Python's sqlite3 lets go of the GIL while a statement
    runs), then ``second``'s rows inserted here. Called inside a write transaction, which
    holds the write lock (``BEGIN IMMEDIATE``): nothing can commit between the two reads, so
    the second connection reads what this transaction reads, as long as the SELECTs read no
    table this transaction wrote (they read events, consent and areas; it wrote the cube)."""
    compiled = second.compile(dialect=connection.dialect,
                              compile_kwargs={"render_postcompile": True})
    params = [_driver_value(compiled.params[name]) for name in compiled.positiontup]
    with ThreadPoolExecutor(1, thread_name_prefix="veil-materialize") as pool:
        fetched = pool.submit(_fetch_all, engine, compiled.string, params)
        try:
            connection.execute(insert(Table(table, MetaData(), *(Column(c) for c in columns)))
                               .from_select(columns, first))
        finally:
            rows = fetched.result()
    if rows:
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                               f"VALUES ({', '.join('?' * len(columns))})", rows)
        finally:
            cursor.close()


def _driver_value(value):
    """A bound value as the SQLite driver takes it: dates as the ISO text SQLAlchemy's Date
    type stores (the driver's own date adapter is deprecated)."""
    return value.isoformat() if type(value) is date else value


def _fetch_all(engine, statement: str, params: list) -> list[tuple]:
    """Every row of ``statement``, run on a connection of its own (autocommit: one read
    transaction for the one statement)."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(statement, params)
            return cursor.fetchall()
        finally:
            cursor.close()
    finally:
        raw.close()


def _inserted(connection, statement) -> int:
    # SQLAlchemy reports rowcount reliably only for UPDATE/DELETE unless asked to.
    rowcount = connection.execute(statement.execution_options(preserve_rowcount=True)).rowcount
    if rowcount >= 0:
        return rowcount
    # SQLite's driver gives no row count (-1) for a statement that starts with WITH, which is
    # how an INSERT … SELECT with CTEs is rendered there: ask SQLite what it just inserted.
    return connection.exec_driver_sql("SELECT changes()").scalar_one()


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
        # The subjects whose consent changed first (few, read from the consent table), then
        # their events, through the (tenant, pseudonym, day) index. Joined the other way round,
        # SQLite read every event of the product and looked each one up in the consent table:
        # 13.7 s of a 14.6 s month rebuild of the large demo's attendance.
        events = VERTICAL_EVENT_MODELS[product.vertical].__table__
        consent = SubjectConsent.__table__
        changed = select(consent.c.pseudonym).where(
            consent.c.tenant_id == tenant, consent.c.vertical == product.vertical,
            consent.c.changed_at >= since)
        postgres = session.get_bind().dialect.name == "postgresql"
        months.update(session.scalars(
            select(events.c.month).distinct()
            .where(events.c.tenant_id == tenant, events.c.pseudonym.in_(changed),
                   _unindexed(events.c.product_id, postgres=postgres) == product.id)))
    purged = _purged_through(session, tenant=tenant, product=product.id)
    if purged is not None:  # final: their raw events are gone (data/retention.py)
        months = {month for month in months if month > purged}
    return [mark_id for mark_id, _ in marks], tuple(sorted(months))


_CUBE_COLUMNS: Sequence[str] = (
    "tenant_id", "product_id", "metric", "period", "state", "district", "h3_cell",
    "age_bucket", "gender", "category", "n_events", "value_sum",
)


#: The base table's grouping key: the cube key without the state (joined from the district
#: after grouping, once per base row instead of once per event) plus the event type;
#: ``category`` is the stored value (None for a product without categories), as metrics filter
#: on it.
_BASE_KEYS = ("event_type", "month", "district", "h3_cell", "age_bucket", "gender", "category")


def _value_metric(metric: MetricSpec) -> bool:
    return metric.measure in {"sum", "mean"} and metric.value_bounds is not None


class _Base:
    """The temporary table one build groups a product's events into, and the SELECTs that fill
    it and read every metric's cube rows from it.

    A base row is one (event type, cube key) group of consenting subjects' events: ``n`` events,
    and for each distinct value bounds of the product's value metrics, ``n_value_i`` events with
    a value and ``value_sum_i`` their values clamped to those bounds. A metric's cube rows are
    then exactly the rows its own ``GROUP BY`` over the events gave: the base rows of its event
    type (and category), with ``n`` — or, for a sum or mean, ``n_value_i`` where it is above 0,
    because an event without a value says nothing about a sum or mean and counting it would
    bias the mean towards zero — and ``value_sum_i`` (0.0 for a count).
    """

    NAME = "veil_cube_base"

    def __init__(self, product: ProductSpec, *, anti_join: bool):
        self.bounds = list(dict.fromkeys(m.value_bounds for m in product.metrics
                                         if _value_metric(m)))
        self.anti_join = anti_join
        self.table = Table(
            self.NAME, MetaData(),
            Column("event_type", String(32)), Column("month", CubeMonthly.period.type),
            Column("district", String(16)), Column("h3_cell", String(15)),
            Column("age_bucket", String(8)), Column("gender", String(8)),
            Column("category", String(32)), Column("n", Integer),
            Column("state", String(16)),
            *(column for i in range(len(self.bounds)) for column in (
                Column(f"n_value_{i}", Integer), Column(f"value_sum_{i}", Float))),
            prefixes=["TEMPORARY"])

    def select(self, *, tenant: str, product: ProductSpec, months: tuple[date, ...] | None,
               after: date | None = None, through: date | None = None):
        """The product's consenting events, grouped (all months, or ``months``; after
        ``after`` and through ``through`` if given), with the state of each group's district
        (an event whose district the geography does not know is left out, as the cube always
        did)."""
        events = VERTICAL_EVENT_MODELS[product.vertical].__table__
        consenting = _consenting(events, tenant=tenant, product=product,
                                 anti_join=self.anti_join)
        conditions = [events.c.tenant_id == tenant, events.c.product_id == product.id,
                      events.c.event_type.in_(sorted({m.event_type for m in product.metrics
                                                      if m.measure != "distinct"})),
                      consenting]
        if months is not None:
            conditions.append(events.c.month.in_(months))
        if after is not None:
            conditions.append(events.c.month > after)
        if through is not None:
            conditions.append(events.c.month <= through)
        values = []
        for lo, hi in self.bounds:
            clamped = case((events.c.value < lo, literal(lo, Float)),
                           (events.c.value > hi, literal(hi, Float)),
                           else_=events.c.value)
            values += [func.count(events.c.value), func.sum(clamped)]
        keys = [getattr(events.c, name) for name in _BASE_KEYS]
        grouped = (select(*keys, func.count().label("n"), *(
                       value.label(f"v{i}") for i, value in enumerate(values)))
                   .where(and_(*conditions))
                   .group_by(*keys)).subquery()
        geo = GeoArea.__table__
        return (select(*(grouped.c[name] for name in _BASE_KEYS), grouped.c.n,
                       geo.c.parent_code,
                       *(grouped.c[f"v{i}"] for i in range(len(values))))
                .select_from(grouped.join(geo, geo.c.code == grouped.c.district)))

    def metric_select(self, *, tenant: str, product: ProductSpec, metric: MetricSpec):
        """One metric's cube rows, read from the base."""
        base = self.table
        conditions = [base.c.event_type == metric.event_type]
        if metric.category is not None:
            conditions.append(base.c.category == metric.category)
        if _value_metric(metric):
            slot = self.bounds.index(metric.value_bounds)
            n = base.c[f"n_value_{slot}"]
            conditions.append(n > 0)
            value_sum = func.coalesce(base.c[f"value_sum_{slot}"], literal(0.0, Float))
        else:
            n, value_sum = base.c.n, literal(0.0, Float)
        # Rendered inline, not as a bound parameter, like the cube's other constant columns.
        category = func.coalesce(base.c.category, literal_column("'-'"))
        keys = (base.c.month, base.c.state, base.c.district, base.c.h3_cell, base.c.age_bucket,
                base.c.gender)
        constants = (literal(tenant, String), literal(product.id, String),
                     literal(metric.id, String))
        if metric.category_domain == "none" and product.domain_of(metric.event_type) != "none":
            # A metric without categories over events that have them: one row per key with
            # every category's events added up, as "-".
            return (select(*constants, *keys, literal_column("'-'"), func.sum(n),
                           func.sum(value_sum))
                    .where(and_(*conditions)).group_by(*keys))
        return select(*constants, *keys, category, n, value_sum).where(and_(*conditions))


def _consenting(events, *, tenant: str, product: ProductSpec, anti_join: bool):
    """The condition on ``events`` that keeps consenting subjects only: a subject whose
    consent for the product's vertical is withdrawn is left out of every month."""
    consent = SubjectConsent.__table__
    if anti_join:  # PostgreSQL: a hash anti-join, whatever the number of withdrawals
        return ~exists().where(
            consent.c.tenant_id == events.c.tenant_id,
            consent.c.pseudonym == events.c.pseudonym,
            consent.c.vertical == product.vertical, consent.c.status == "withdrawn")
    # SQLite: the withdrawn subjects as one set built once (NOT IN), not a primary-key
    # probe per event (a correlated NOT EXISTS: measured 2.5× slower on the grouping).
    return events.c.pseudonym.not_in(select(consent.c.pseudonym).where(
        consent.c.tenant_id == tenant, consent.c.vertical == product.vertical,
        consent.c.status == "withdrawn"))


#: The statuses of a metric with a lookback, in its category column (the catalog's
#: ``learner_status`` domain declares exactly these; a test pins that they agree).
STATUSES = ("new", "returning", "churned")


def _week_of_month(day):
    """The month's week of ``day``: 1 for days 1–7, 2 for 8–14, 3 for 15–21, 4 for 22 to the
    month's end: a week never crosses a month, the privacy unit (privacy._sensitivity's
    ``count_sensitivity`` counts on these four)."""
    day_of_month = func.extract("day", day)
    return case((day_of_month <= 7, 1), (day_of_month <= 14, 2), (day_of_month <= 21, 3),
                else_=4)


def _month_index(month):
    """Months counted from year 0, so that "the month before" is index − 1 on both stores."""
    return func.extract("year", month) * 12 + func.extract("month", month)


def _distinct_select(*, tenant: str, product: ProductSpec, metric: MetricSpec, anti_join: bool,
                     months: tuple[date, ...] | None, after: date | None):
    """One distinct metric's cube rows (``_distinct_counts`` under the cube's constant
    columns)."""
    counts = _distinct_counts(tenant=tenant, product=product, metric=metric,
                              anti_join=anti_join, months=months, after=after).subquery()
    return select(literal(tenant, String), literal(product.id, String),
                  literal(metric.id, String), *(counts.c[name] for name in _STATUS_COLUMNS),
                  counts.c.n, literal_column("0.0"))


def _distinct_counts(*, tenant: str, product: ProductSpec, metric: MetricSpec, anti_join: bool,
                     months: tuple[date, ...] | None, after: date | None,
                     every_status: bool = False, through: date | None = None):
    """One distinct metric's cube keys and counts: persons counted once per period, each in
    one cell.

    ``distinct_per = "week"`` (or "month" without a lookback): a person's first event of each
    of the month's weeks (or of the month) places them (its area, age group, gender, and
    category unless the metric has none). With ``lookback_months = 1``: for each month M with
    any person active, "new" (active in M, not M−1) and "returning" (both) placed by their
    first event of M, and "churned" (active in M−1, not in M) by their last event of M−1; a
    metric with a ``category`` keeps that status only (its category filters statuses, not
    events).

    ``months``: the months to write (else every month after ``after``, less the lookback
    months whose month before is purged); events are read from those months and the months
    they look back on. Consenting subjects only, like every metric. ``every_status``: with a
    lookback, every status whatever the metric's category (``_insert_statuses``).
    ``through``: the months up to it only.
    """
    events = VERTICAL_EVENT_MODELS[product.vertical].__table__
    geo = GeoArea.__table__
    back = metric.lookback_months
    conditions = _distinct_conditions(events, tenant=tenant, product=product, metric=metric,
                                      anti_join=anti_join, months=months, after=after)
    if through is not None:
        conditions.append(events.c.month <= through)
    place = (events.c.district, events.c.h3_cell, events.c.age_bucket, events.c.gender)
    order = (events.c.ts, events.c.event_id)
    # The windows are per person. SQLite would read the events in person order through the
    # (tenant, pseudonym, day) index to spare the sort — every event of the tenant's vertical,
    # each a lookup in the table, to keep one product's (sessions: 3.1M read for 0.39M).
    person = _unindexed(events.c.pseudonym, postgres=anti_join)
    if back == 0:
        period = [events.c.month] + ([_week_of_month(events.c.day)]
                                     if metric.distinct_per == "week" else [])
        category = (literal_column("'-'") if metric.category_domain == "none"
                    else func.coalesce(events.c.category, literal_column("'-'")))
        ranked = (select(events.c.month.label("period"), *place, category.label("category"),
                         func.row_number().over(partition_by=[person, *period],
                                                order_by=order).label("rn"))
                  .where(*conditions).subquery("ranked"))
        placed = select(*(ranked.c[name] for name in _PLACED)).where(ranked.c.rn == 1)
    else:
        # One row per person-month: where their first and their last event of it were (one
        # window over the events, in event order, its frame the whole person-month: one sort),
        # then each person's month before and after among their active months (LAG/LEAD over
        # those rows): no self-join of the events, no correlated lookup.
        spots = _PLACED[1:-1]
        month_of_person = dict(partition_by=[person, events.c.month],
                               order_by=order, rows=(None, None))
        ranked = (select(events.c.pseudonym, events.c.month,
                         _month_index(events.c.month).label("midx"),
                         *(func.first_value(events.c[k]).over(**month_of_person)
                           .label(f"first_{k}") for k in spots),
                         *(func.last_value(events.c[k]).over(**month_of_person)
                           .label(f"last_{k}") for k in spots),
                         func.row_number().over(**month_of_person).label("rn"))
                  .where(*conditions).subquery("ranked"))
        person_months = (
            select(ranked.c.pseudonym, ranked.c.month, ranked.c.midx,
                   *(ranked.c[f"{end}_{k}"] for end in ("first", "last") for k in spots))
            .where(ranked.c.rn == 1)
            .cte("person_months"))
        by_person = dict(partition_by=person_months.c.pseudonym, order_by=person_months.c.midx)
        sequence = select(person_months,
                          func.lag(person_months.c.midx).over(**by_person).label("prev"),
                          func.lead(person_months.c.midx).over(**by_person).label("next")
                          ).cte("sequence")
        active = select(person_months.c.month, person_months.c.midx).distinct().cte("active")
        status = case((sequence.c.prev == sequence.c.midx - back,
                       literal_column("'returning'")), else_=literal_column("'new'"))
        joined = select(sequence.c.month.label("period"),
                        *(sequence.c[f"first_{k}"].label(k) for k in spots),
                        status.label("category"))
        churned = (select(active.c.month.label("period"),
                          *(sequence.c[f"last_{k}"].label(k) for k in spots),
                          literal_column("'churned'").label("category"))
                   .select_from(sequence.join(active, active.c.midx == sequence.c.midx + back))
                   .where(or_(sequence.c.next.is_(None),
                              sequence.c.next != sequence.c.midx + back)))
        union = joined.union_all(churned).subquery("statuses")
        written = ([union.c.period.in_(months)] if months is not None else
                   [union.c.period > add_months(after, back)] if after is not None else [])
        if through is not None:  # (implied: a month after it is neither read nor active)
            written.append(union.c.period <= through)
        if metric.category is not None and not every_status:  # one status of its own
            written.append(union.c.category == metric.category)
        placed = select(*(union.c[name] for name in _PLACED)).where(*written)
    placed = placed.subquery("placed")
    keys = (placed.c.period, geo.c.parent_code.label("state"), placed.c.district,
            placed.c.h3_cell, placed.c.age_bucket, placed.c.gender, placed.c.category)
    return (select(*keys, func.count().label("n"))
            .select_from(placed.join(geo, geo.c.code == placed.c.district))
            .group_by(*keys))


def _unindexed(column, *, postgres: bool):
    """``column`` as SQLite can use no index for (``column || ''``: the same text), to keep
    its planner, which has no statistics here, off an index that would read far more rows
    than the one it should take; unchanged on PostgreSQL, which plans from its statistics."""
    return column if postgres else column + literal_column("''")


def _distinct_conditions(events, *, tenant: str, product: ProductSpec, metric: MetricSpec,
                         anti_join: bool, months: tuple[date, ...] | None,
                         after: date | None) -> list:
    """The events a distinct metric reads: its type, consenting subjects, its category (without
    a lookback), ``months`` and the months they look back on, the months after ``after``."""
    back = metric.lookback_months
    conditions = [events.c.tenant_id == tenant, events.c.product_id == product.id,
                  events.c.event_type == metric.event_type,
                  _consenting(events, tenant=tenant, product=product, anti_join=anti_join)]
    if metric.category is not None and back == 0:
        conditions.append(events.c.category == metric.category)
    if months is not None:
        conditions.append(events.c.month.in_(sorted(
            {add_months(m, -b) for m in months for b in range(back + 1)})))
    if after is not None:
        conditions.append(events.c.month > after)
    return conditions


#: the columns of one placed person (a person-week, person-month or status) before grouping
_PLACED = ("period", "district", "h3_cell", "age_bucket", "gender", "category")


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
