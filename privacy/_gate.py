"""The gate: the only way a number leaves Veil's stores.

Owns ``release``: authorise (role, tenant, level, fields), validate against the catalog's public
domains and limits, reuse an identical stored release at zero cost, otherwise reserve ε, read
the aggregate cube scoped to the principal's tenant, add OpenDP noise, apply the k-threshold to
the *noisy* counts, store the release and commit the charge in one transaction — refunding if
anything fails. It never returns a value that has not passed through this path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import secrets
import uuid
from collections import defaultdict
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from data.bootstrap import utcnow
from data.catalog import Catalog, ProductSpec, RoleSpec
from data.engine import Store
from data.catalog import MetricSpec
from data.errors import (AccessDenied, BudgetExhausted, QueryRefused, StoreError, VeilBug,
                         VeilError)
from data.freshness import freshness, newest_events
from data.geo import geography
from data.models import CubeMonthly, ProductVersion, ReleasePeriod, SubjectConsent
from data.models import Release as ReleaseRow

from privacy._admin import Admin, SettingsVersion, policy_version, product_k, settings_version_of
from privacy._compliance import Compliance
from privacy._exports import Exports
from privacy._access import (authenticate_demo, authorize_page, check_role_mappings, end_sign_ins,
                             resolve_principal)
from privacy._audit import STORE_ERRORS, audit, audit_best_effort, audit_in
from privacy._budget import Ledger, PeriodBudgetExhausted, PeriodLedger
from privacy._derive import (accurate_enough, derive_cells, mechanism_of, mechanism_record,
                             noise_of)
from privacy._records import RecordPage, RecordQuery, read_records
from privacy._insights import Insight, correlate
from privacy._engine import (Level, Measured, release_cells, release_loss, split_epsilon,
                             thresholds)
from privacy._mechanisms import discrete_gaussian, discrete_laplace, float_laplace
from privacy._sensitivity import count_sensitivity, guarantee_text, sum_sensitivity
from privacy._values import (BudgetStatus, Cell, DataClock, Delta, Epsilon, PeriodStatus, Preview,
                             Principal, PrivacyLoss, Query, Release, Threshold, add_months)

__all__ = ["DIMENSIONS", "Gate"]

#: Dimensions a query may group by or filter on, with the catalog field (and cube column) of each.
DIMENSIONS = {"state": "state", "district": "district", "h3_cell": "h3_cell",
              "age_bucket": "age_bucket", "gender": "gender", "category": "category"}
#: Geography levels, finest first: a cell under k rolls up to the next level.
_GEO_LEVELS = ("h3_cell", "district", "state", "tenant")


@dataclass(frozen=True)
class _Plan:
    product: ProductSpec
    metric: MetricSpec
    geo: str                          # finest geography of the query
    levels: tuple[str, ...]           # geo levels from the finest up to the tenant
    measured: tuple[Measured, ...]    # mechanisms per level
    epsilon: Epsilon                  # what a fresh release costs: composed.map(d_in) (ε…
    mechanism: str
    settings: SettingsVersion         # the tenant's privacy settings in force (D8)
    k: int                            # the product's k under them
    level_epsilon: float              # the level's ε under them (0: anonymized)
    cap: float                        # the role's budget per window under them
    #: what stored releases and periods are keyed by besides the query: the k and ε when the
    #: tenant's settings changed them (empty otherwise, so keys match the catalog's)
    key_settings: dict = dataclasses.field(default_factory=dict)
    delta: Delta = Delta(0.0)         # …and δ: the policy's δ once for Gaussian noise, else 0


class Gate:
    def __init__(self, store: Store, catalog: Catalog, *, demo_accounts: bool = False,
                 secret: str | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.demo_accounts = demo_accounts
        self._store = store
        self._catalog = catalog
        self._ledger = Ledger(store, clock=clock)
        self._periods = PeriodLedger(store, clock=clock)
        self._geography = geography(catalog)
        # Without a deployment secret (tests, benchmarks) record pseudonyms are keyed per process.
        self._secret = secret or secrets.token_hex(32)
        self._clock = clock
        #: data clocks by (tenant, product, data versions), with when they were read
        self._data_clocks: dict[tuple, tuple[datetime, DataClock]] = {}
        #: Safe exports (D6), compliance reads (D7) and administration (D8): each a part of the
        #: gate with its own module, sharing its store, catalog, ledger and clock.
        self.exports = Exports(self, store, catalog, ledger=self._ledger, secret=self._secret,
                               clock=clock)
        self.compliance = Compliance(self, store, catalog, clock=clock)
        self.admin = Admin(self, store, catalog, clock=clock)

    @property
    def catalog(self) -> Catalog:
        """The public catalog: products, domains, roles. Holds no private data."""
        return self._catalog

    @property
    def geography(self):
        """Public geography: H3 cells per district, district → state. No private data."""
        return self._geography

    # --- identity ----------------------------------------------------------------------------

    def authenticate_demo(self, *, username: str, password: str) -> dict:
        if not self.demo_accounts:
            raise AccessDenied("Demo accounts are switched off in this deployment "
                               "(VEIL_DEMO_MODE=0); sign in with your organisation's account.")
        return authenticate_demo(self._store, username=username, password=password)

    def resolve(self, claims: dict, *, source: str) -> Principal:
        return resolve_principal(self._store, self._catalog, claims, source=source)

    def record_page_view(self, principal: Principal, *, page: str, allowed: bool) -> None:
        """Audit a page open; refused opens are how probing for other roles' pages shows up."""
        audit(self._store, principal=principal.subject, tenant=principal.tenant,
              role=principal.role, action="page_view", target=page,
              outcome="allowed" if allowed else "refused")

    def open_page(self, principal: Principal, *, page: str) -> None:
        """Authorise opening ``page``; raise AccessDenied and audit it if the role lacks it."""
        authorize_page(self._store, self._catalog, principal, page=page)

    def record_session_end(self, principal: Principal, *, reason: str) -> None:
        """Audit the end of a sign-in; ``reason`` is ``signed out`` or ``expired``."""
        if reason not in {"signed out", "expired"}:
            raise VeilBug(f"unknown session end reason {reason!r}")
        with self._store.write.begin() as session:
            ended = (end_sign_ins(session, subject=principal.subject, source=principal.source,
                                  at=utcnow()) if reason == "signed out" else 0)
            audit_in(session, principal=principal.subject, tenant=principal.tenant,
                     role=principal.role, action="logout", target=principal.source,
                     outcome="allowed", detail={"reason": reason, "sign_ins_ended": ended})

    def check_role_mappings(self, path) -> int:
        """Raise ConfigError unless the role mappings file is valid and applied to the store."""
        return check_role_mappings(self._store, self._catalog, path)

    def close(self) -> None:
        self._store.dispose()

    # --- budgets -----------------------------------------------------------------------------

    def budget(self, principal: Principal, *, product: str) -> BudgetStatus:
        self._role(principal)
        cap = self.admin.effective(principal.tenant).settings.cap(principal.role)
        return self._ledger.status(tenant=principal.tenant, principal=principal.subject,
                                   product=self._catalog.product(product).id,
                                   cap=cap, delta_cap=self._catalog.policy.delta_cap,
                                   today=self._clock().date())

    def lifetime(self, principal: Principal, *, product: str,
                 months: list[date]) -> tuple[PeriodStatus, ...]:
        """The lifetime budget of each of ``months`` of ``product`` in the principal's tenant:
        what every release about that month has spent, by anyone, against its lifetime cap."""
        self._role(principal)
        return self._lifetime(principal.tenant, self._catalog.product(product).id, months)

    def _lifetime(self, tenant: str, product: str, months,
                  session=None) -> tuple[PeriodStatus, ...]:
        periods = self._catalog.policy.periods
        return tuple(self._periods.status(tenant=tenant, product=product, periods=list(months),
                                          cap=periods.epsilon, delta_cap=periods.delta,
                                          session=session).values())

    # --- the data's clock --------------------------------------------------------------------

    def data_clock(self, principal: Principal, *, product: str) -> DataClock:
        """How far the principal's tenant's data of ``product`` reaches, and the window limit.

        Pages default to windows ending at its latest complete month, so nothing shown ages
        with the calendar. Spends nothing; operational metadata only.
        """
        self._role(principal)
        spec = self._catalog.product(product)
        if spec.kind != "metric_set":
            raise QueryRefused(f"{spec.id} is a {spec.kind}, not a metric set")
        now = self._clock()
        with self._store.read() as session:
            # What releases can read changes only with a data version, so the clock is kept
            # for a minute per (tenant, product, every data version of the tenant): reading the
            # newest events scans a month of each product's rows (≈30 ms at 1M events).
            versions = tuple(session.execute(
                select(ProductVersion.product_id, ProductVersion.data_version)
                .where(ProductVersion.tenant_id == principal.tenant)
                .order_by(ProductVersion.product_id)).all())
            key = (principal.tenant, spec.id, versions)
            cached = self._data_clocks.get(key)
            if cached is not None and timedelta(0) <= now - cached[0] < _CLOCK_TTL:
                return cached[1]
            [fresh] = freshness(session, self._catalog, tenant=principal.tenant,
                                product=spec.id, now=now)
            # The months releases can read are the cube's; the days are the record store's.
            first, last = session.execute(
                select(func.min(CubeMonthly.period), func.max(CubeMonthly.period))
                .where(CubeMonthly.tenant_id == principal.tenant,
                       CubeMonthly.product_id == spec.id)).one()
            # The tenant's data has reached the newest day any of its sources reached: a
            # product with no event on that month's last days (a weekend, a quiet source) still
            # has that month complete, as long as its own data reaches into the month.
            reached = newest_events(session, self._catalog, tenant=principal.tenant)
        limit = self.max_months(spec.id)
        if first is None:
            return DataClock(tenant=principal.tenant, product=spec.id, as_of=None, newest=None,
                             first_month=None, max_months=limit, breaches=fresh.breaches)
        # Events newer than the cube are not data a release can read yet (the freshness
        # breaches say they wait for `veil materialize`); a cube whose raw events are gone
        # counts as covering its last month.
        cube_end = add_months(last, 1) - timedelta(days=1)
        event = reached.get(spec.id)
        newest = min(event.date(), cube_end) if event is not None else cube_end
        as_of = max([newest, *(min(e.date(), cube_end) if p == spec.id else e.date()
                               for p, e in reached.items())])
        clock = DataClock(tenant=principal.tenant, product=spec.id, as_of=as_of, newest=newest,
                          first_month=first, max_months=limit, breaches=fresh.breaches)
        if len(self._data_clocks) > 10_000:  # bound memory: old data versions' entries
            self._data_clocks.clear()
        self._data_clocks[key] = (now, clock)
        return clock

    def today(self) -> date:
        """The calendar day by the gate's clock: budget windows and audit periods follow it."""
        return self._clock().date()

    def max_months(self, product: str) -> int:
        """The most months one query of ``product`` may cover (public policy, no data)."""
        spec = self._catalog.product(product)
        policy = self._catalog.policy
        if spec.published_series:
            return policy.max_series_months
        # A monthly query on a non-series product may cover the months of one ad-hoc window.
        return max(1, (policy.max_window_days + 31) // 31)

    def aggregate_levels(self, principal: Principal, *,
                         switched_off: bool = False) -> tuple[str, ...]:
        """The privacy levels ``principal`` may release aggregates at now (public policy).

        Only noisy levels: no aggregate leaves exact. They are the role's, minus those its
        tenant switched off (kept with ``switched_off=True``: the role's right whatever the
        settings); none for a role without a query budget (it reads published releases, or
        records only).
        """
        role = self._role(principal)
        settings = self.admin.effective(principal.tenant).settings
        if settings.cap(role.id) <= 0:
            return ()
        policy = self._catalog.policy
        return tuple(level for level in role.privacy_levels if policy.levels[level].noisy
                     and (switched_off or level not in settings.disabled_levels))

    # --- releases ----------------------------------------------------------------------------

    def publish(self, *, tenant: str, query: Query, requested_by: str) -> Release:
        """Release a donor snapshot once, under the tenant's publication identity and budget.

        Donors then read it through ``published`` any number of times at no cost, for as long
        as its data version is the product's current one.
        """
        publisher = self._publisher(tenant)
        release = self.release(publisher, query)
        try:
            with self._store.write.begin() as session:
                session.get(ReleaseRow, release.id).published = True
                audit_in(session, principal=requested_by, tenant=tenant, role="publisher",
                         action="publish", target=f"{query.product}.{query.metric}",
                         outcome="allowed", detail={"release": release.id,
                                                    "epsilon": release.charged.value,
                                                    "delta": release.charged_delta.value})
        except STORE_ERRORS as exc:
            # the release stands (and is reused at no cost when publishing is tried again)
            raise StoreError(
                f"The store failed while marking release {release.id} as published "
                f"({_error_kind(exc)}); donors do not see it yet. Run `veil publish` again: "
                f"it reuses the release at no further cost.") from exc
        return dataclasses.replace(release, published=True)

    def published(self, principal: Principal, *, product: str | None = None) -> list[Release]:
        """The newest current published snapshot per series of the principal's tenant.

        A snapshot is current while its data version is its product's (``ProductVersion``)
        and no consent withdrawal awaits a rebuild. Once the data moves on (a rebuild, e.g.
        after a withdrawal) a series with no current snapshot is left out here, never served
        stale, and listed by ``republishing`` until `veil publish` republishes it. Spends
        nothing.
        """
        return self._snapshots(principal, product=product)[0]

    def republishing(self, principal: Principal, *, product: str | None = None) -> list[Query]:
        """The published series of the principal's tenant that are being republished.

        Each is the query of the series' newest snapshot (product, metric, window, grouping,
        level), whose data has changed since it was published: its numbers are not shown any
        more (``published`` leaves the series out) until `veil publish` releases it again on
        the current data. Spends nothing; returns no values.
        """
        return self._snapshots(principal, product=product)[1]

    def _snapshots(self, principal: Principal, *,
                   product: str | None) -> tuple[list[Release], list[Query]]:
        """Per series: the newest current snapshot, or the query of the newest stale one."""
        self._role(principal)
        statement = (select(ReleaseRow)
                     .where(ReleaseRow.tenant_id == principal.tenant, ReleaseRow.published)
                     .order_by(ReleaseRow.created_at.desc(), ReleaseRow.id))
        if product is not None:
            statement = statement.where(ReleaseRow.product_id == product)
        try:
            with self._store.read() as session:
                rows = session.scalars(statement).all()
                current = self._current_versions(session, principal.tenant)
        except STORE_ERRORS as exc:
            raise _store_error(exc, doing="reading the published snapshots") from exc
        fresh: dict[str, Release] = {}
        stale: dict[str, ReleaseRow] = {}
        settings: dict[int, SettingsVersion] = {}
        for row in rows:
            q = dict(row.query)
            series = json.dumps([row.product_id, q["metric"], q["group_by"], q["filters"]])
            if series in fresh:
                continue
            if row.data_version != current.get(row.product_id):
                stale.setdefault(series, row)
                continue
            version = settings_version_of(row.policy_version)
            if version not in settings:
                settings[version] = self.admin.at_version(row.tenant_id, version)
            spec = self._catalog.product(row.product_id)
            applied = self._release_settings(settings[version], spec, q["level"])
            fresh[series] = self._to_release(
                row, spec, charged=Epsilon(0.0), reused=True, k=applied["k"],
                level_epsilon=applied["level_epsilon"])
        pending = [_query_of(row.query) for series, row in stale.items() if series not in fresh]
        return (sorted(fresh.values(), key=lambda r: (r.product, r.query.metric)),
                sorted(pending, key=lambda q: (q.product, q.metric)))

    def _current_versions(self, session, tenant: str) -> dict[str, int]:
        """The data version a snapshot of each product must have to be served: the product's
        current one, unless a consent withdrawal is newer than its cube (then none is)."""
        withdrawn = dict(session.execute(
            select(SubjectConsent.vertical, func.max(SubjectConsent.changed_at))
            .where(SubjectConsent.tenant_id == tenant, SubjectConsent.status == "withdrawn")
            .group_by(SubjectConsent.vertical)).all())
        vertical = {spec.id: spec.vertical for spec in self._catalog.products}
        current = {}
        for version in session.scalars(select(ProductVersion).where(
                ProductVersion.tenant_id == tenant)):
            latest = withdrawn.get(vertical.get(version.product_id))
            if latest is None or version.refreshed_at is None or latest <= version.refreshed_at:
                current[version.product_id] = version.data_version
        return current

    def _publisher(self, tenant: str) -> Principal:
        return Principal(subject=f"publication@{tenant}", display_name="Publication",
                         role="publisher", tenant=tenant, source="system")

    def insight(self, principal: Principal, x: Query, y: Query) -> Insight:
        """Release two district series of different verticals and correlate them (D5).

        Each side is an ordinary release (charged to its own product's budget, reused when
        stored); the join and the correlation are post-processing of released numbers.
        """
        product_x, product_y = self._catalog.product(x.product), self._catalog.product(y.product)
        if product_x.vertical == product_y.vertical:
            raise QueryRefused(f"an insight joins two verticals; both metrics are from "
                               f"{product_x.vertical}")
        return correlate(self.release(principal, x), self.release(principal, y))

    def records(self, principal: Principal, query: RecordQuery) -> RecordPage:
        """A page of an operational list with the role's field treatments; the view is audited."""
        try:
            return read_records(self._store, self._catalog, principal, query,
                                secret=self._secret)
        except VeilError as exc:
            audit(self._store, principal=principal.subject, tenant=principal.tenant,
                  role=principal.role, action="records_view", target=query.product,
                  outcome="refused", detail={"reason": str(exc)})
            raise

    def preview(self, principal: Principal, query: Query) -> Preview:
        """What ``release`` would cost and how accurate it would be; spends nothing. A refusal
        is audited like a release's: probing what the gate refuses is on record too."""
        try:
            return self._preview(principal, query)
        except VeilError as exc:
            if not isinstance(exc, StoreError):
                audit(self._store, principal=principal.subject, tenant=principal.tenant,
                      role=principal.role, action="preview",
                      target=f"{query.product}.{query.metric}", outcome="refused",
                      detail={"reason": str(exc), "query": query.canonical()})
            raise

    def _preview(self, principal: Principal, query: Query) -> Preview:
        plan = self._plan(principal, query)
        with self._store.read() as session:
            data_version = self._data_version(session, principal.tenant, plan.product)
            stored = session.scalar(select(ReleaseRow.id).where(
                ReleaseRow.query_key == self._series_key(principal, query, data_version, plan)))
            period_keys = self._period_keys(principal, query, data_version, plan)
            existing = self._existing_periods(session, period_keys)
            missing = [month for month, key in period_keys.items() if key not in existing]
            derived = (stored is None and bool(missing) and len(self._derive(
                session, principal, query, plan, data_version, missing)) == len(missing))
        free = stored is not None or not missing or derived
        status = self.budget(principal, product=plan.product.id)
        finest = plan.measured[0]
        main = finest.total if plan.metric.measure != "count" else finest.count
        return Preview(
            epsilon=Epsilon(0.0) if free else plan.epsilon, reused=free,
            mechanism=plan.mechanism,
            noise_scale=main.scale if main else None,
            interval_half_width=main.half_width if main else None,
            remaining=status.remaining, cap=status.cap,
            delta=Delta(0.0) if free else plan.delta, remaining_delta=status.remaining_delta,
            derived=derived)

    def release(self, principal: Principal, query: Query) -> Release:
        """Answer ``query`` for ``principal`` through every privacy rule, or refuse and say why.

        Every failure reaches the caller as a VeilError: a refusal as itself (audited
        "refused"), a failing store as StoreError (audited "error" if the store still takes
        the entry). Either way nothing was spent.
        """
        target = f"{query.product}.{query.metric}"
        try:
            return self._release(principal, query)
        except STORE_ERRORS as exc:
            error = _store_error(exc, doing=f"answering this {query.product} query")
            self._audit_error(principal, action="release", target=target, error=error,
                              cause=exc, detail={"query": query.canonical()})
            raise error from exc
        except StoreError as exc:
            self._audit_error(principal, action="release", target=target, error=exc,
                              cause=exc, detail={"query": query.canonical()})
            raise
        except VeilError as exc:
            try:
                audit(self._store, principal=principal.subject, tenant=principal.tenant,
                      role=principal.role, action="release", target=target,
                      outcome="refused",
                      detail={"reason": str(exc), "query": query.canonical()})
            except STORE_ERRORS as audit_exc:
                raise _store_error(audit_exc, doing="recording this refusal") from audit_exc
            raise

    def _audit_error(self, principal: Principal, *, action: str, target: str,
                     error: VeilError, cause: BaseException, detail: dict) -> None:
        audit_best_effort(self._store, principal=principal.subject, tenant=principal.tenant,
                          role=principal.role, action=action, target=target, outcome="error",
                          detail={"reason": str(error), "error": _error_kind(cause), **detail})

    def _release(self, principal: Principal, query: Query) -> Release:
        plan = self._plan(principal, query)
        # Storing fails with IntegrityError only when a concurrent release stored the same
        # series or some of the same periods first (its periods then stand, ours rolled back
        # with our charge). Each retry re-reads them, so each makes progress: the periods left
        # to compute shrink, or the series is found stored. A retry that finds nothing new was
        # no race: that store error is raised as it is.
        conflict: IntegrityError | None = None
        before: tuple[int, frozenset[str]] = (0, frozenset())
        for _attempt in range(_STORE_ATTEMPTS):
            with self._store.read() as session:
                # One read transaction: data version, consent freshness, stored series, periods
                # and the stored measurements the missing periods may be derived from.
                data_version = self._data_version(session, principal.tenant, plan.product)
                self._check_consent_applied(session, principal.tenant, plan.product)
                series_key = self._series_key(principal, query, data_version, plan)
                stored = session.scalar(select(ReleaseRow).where(
                    ReleaseRow.query_key == series_key))
                if stored is None:
                    period_keys = self._period_keys(principal, query, data_version, plan)
                    existing = self._existing_periods(session, period_keys)
                    missing = [month for month, key in period_keys.items()
                               if key not in existing]
                    derived = self._derive(session, principal, query, plan, data_version,
                                           missing)
                    computed = [month for month in missing if month not in derived]
                    if computed:  # refuse early, then read the cube, in the same transaction
                        self._check_budgets(session, principal, query, plan, computed)
                        prepared = self._aggregate(principal, query, plan, months=computed,
                                                   session=session)
                    else:
                        prepared = None
                else:
                    lifetime = self._lifetime(principal.tenant, plan.product.id,
                                              _query_of(stored.query).months, session=session)
            if stored is not None:
                return self._to_release(stored, plan.product, charged=Epsilon(0.0),
                                        reused=True, k=plan.k, level_epsilon=plan.level_epsilon,
                                        lifetime=lifetime)
            seen = (data_version, frozenset(existing))
            if conflict is not None and seen[0] == before[0] and seen[1] <= before[1]:
                raise conflict
            try:
                return self._fresh(principal, query, plan, data_version, series_key,
                                   period_keys, existing, derived, prepared)
            except IntegrityError as exc:
                conflict, before = exc, seen
        raise QueryRefused(
            f"Veil is busy: many releases of {query.product} overlapping this one were stored "
            f"at the same time. Nothing was spent; try again.")

    def _budget_terms(self, principal: Principal, query: Query, plan: _Plan,
                      computed: list[date]):
        """What a release computing ``computed`` costs and draws from: (ε, δ, the months
        whose lifetime it draws on, whether the asker is a viewer, the viewers' cap)."""
        epsilon = plan.epsilon if computed else Epsilon(0.0)
        delta = plan.delta if computed else Delta(0.0)
        # every data month this release reads afresh draws its ε once from that month's
        # lifetime budget (a window period reads all of its months in one measurement)
        periods = ((list(query.months) if query.period == "window" else computed)
                   if computed else [])
        viewer = not _reserved(principal)
        period_cap = self._catalog.policy.periods.cap(reserved_user=not viewer)
        return epsilon, delta, periods, viewer, period_cap

    def _check_budgets(self, session, principal: Principal, query: Query, plan: _Plan,
                       computed: list[date]) -> None:
        """Cheap early refusals, read in the release's read transaction; the authoritative
        checks are the conditional UPDATEs of the write transaction."""
        epsilon, delta, periods, viewer, period_cap = self._budget_terms(
            principal, query, plan, computed)
        if epsilon.value <= 0:
            return
        period_policy = self._catalog.policy.periods
        for status in self._periods.status(
                tenant=principal.tenant, product=plan.product.id, periods=periods,
                cap=period_cap, delta_cap=period_policy.delta, session=session).values():
            left = min(period_policy.epsilon - status.spent.value,
                       period_cap - status.viewer_spent.value if viewer
                       else period_policy.epsilon)
            if (epsilon.value > left + 1e-9
                    or status.delta_spent.value + delta.value > period_policy.delta + 1e-15):
                raise PeriodBudgetExhausted(
                    product=plan.product.id, period=status.period,
                    requested=epsilon.value, remaining=max(left, 0.0),
                    cap=period_cap, delta_requested=delta.value,
                    delta_remaining=(max(period_policy.delta - status.delta_spent.value, 0)
                                     if delta.value else None))
        delta_cap = self._catalog.policy.delta_cap
        status = self._ledger.status(tenant=principal.tenant, principal=principal.subject,
                                     product=plan.product.id, cap=plan.cap,
                                     delta_cap=delta_cap, today=self._clock().date(),
                                     session=session)
        if (status.spent.value + epsilon.value > status.cap.value + 1e-9
                or status.delta_spent.value + delta.value > delta_cap + 1e-15):
            raise BudgetExhausted(
                requested=epsilon.value, remaining=status.remaining.value,
                window=f"{status.window_start.isoformat()} – {status.window_end.isoformat()}",
                product=plan.product.id, delta_requested=delta.value,
                delta_remaining=status.remaining_delta.value)

    def _fresh(self, principal: Principal, query: Query, plan: _Plan, data_version: int,
               series_key: str, period_keys: dict[date, str],
               existing: dict[str, list], derived: dict[date, list],
               prepared: tuple | None) -> Release:
        """Release the periods not stored: derived ones as they are, computed ones from the
        cube aggregates ``prepared`` (read with the early budget checks), then charge and
        store everything in one write transaction."""
        missing = [month for month, key in period_keys.items() if key not in existing]
        # periods derived from stored measurements cost nothing; the rest are computed
        computed = [month for month in missing if month not in derived]
        epsilon, delta, periods, viewer, period_cap = self._budget_terms(
            principal, query, plan, computed)
        period_policy = self._catalog.policy.periods
        delta_cap = self._catalog.policy.delta_cap
        today = self._clock().date()
        measured: dict[tuple[str, ...], int] = {}
        new_cells = (self._compute(principal, query, plan, months=computed,
                                   measurement=measured, prepared=prepared)
                     if computed else [])
        fresh: dict[str, list] = {period_keys[month]: [] for month in computed}
        labels = query.periods
        label_to_key = {labels[month]: period_keys[month] for month in computed}
        for cell in new_cells:
            fresh[label_to_key[cell.key[0]]].append(cell.to_json())
        for month, cells_of_month in derived.items():
            fresh[period_keys[month]] = cells_of_month
        measurements = self._measurements(query, plan, data_version, computed, measured)
        cells_json = [c for key in period_keys.values()
                      for c in (existing[key] if key in existing else fresh[key])]
        cells = [Cell.from_json(c) for c in cells_json]
        release_id = str(uuid.uuid4())
        values = dict(
            id=release_id, query_key=series_key, tenant_id=principal.tenant,
            principal=principal.subject, role=principal.role, product_id=plan.product.id,
            query=query.canonical(),
            policy_version=policy_version(self._catalog.version, plan.settings.version),
            data_version=data_version,
            mechanism=plan.mechanism if computed else f"derived: {plan.mechanism}"[:64],
            epsilon=epsilon.value, delta=delta.value, cells=cells_json, digest=_digest(cells),
            published=False, created_at=self._clock())
        row = ReleaseRow(**values)
        source = self._source_key(principal, query, plan, data_version, query.filters)
        # One transaction: the ε charge, the release and its periods commit together or not at
        # all, so a failure anywhere spends nothing and leaves no half-stored release.
        with self._store.write.begin() as session:
            if epsilon.value > 0:
                # the cap as of this transaction: a cap an administrator changed since planning
                # holds for this charge too
                cap = self.admin.cap_in(session, principal=principal, product=plan.product.id,
                                        today=today)
                self._ledger.charge(session, tenant=principal.tenant,
                                    principal=principal.subject, role=principal.role,
                                    product=plan.product.id, epsilon=epsilon,
                                    cap=cap, today=today, release_id=release_id,
                                    delta=delta, delta_cap=delta_cap)
                self._periods.charge(
                    session, tenant=principal.tenant, product=plan.product.id,
                    periods=periods, epsilon=epsilon, delta=delta, cap=period_cap, viewer=viewer,
                    full_cap=period_policy.epsilon, delta_cap=period_policy.delta,
                    release_id=release_id, principal=principal.subject, role=principal.role)
            # Core inserts (no ORM flush); the periods reference the release, inserted first
            session.execute(insert(ReleaseRow.__table__).values(**values))
            if missing:
                session.execute(insert(ReleasePeriod.__table__), [dict(
                    period_key=period_keys[month], release_id=release_id,
                    tenant_id=principal.tenant, product_id=plan.product.id, period=month,
                    cells=fresh[period_keys[month]], measurement=measurements.get(month),
                    source=source if month in measurements else None,
                    derived=month in derived) for month in missing])
            # what every release about these months has spent, this one included
            lifetime = self._lifetime(principal.tenant, plan.product.id, query.months,
                                      session=session)
        return self._to_release(row, plan.product, charged=epsilon, reused=False, k=plan.k,
                                level_epsilon=plan.level_epsilon, charged_delta=delta,
                                derived=len(derived), lifetime=lifetime)

    # --- deriving from stored measurements (privacy._derive) -------------------------------------

    def _source_key(self, principal: Principal, query: Query, plan: _Plan, data_version: int,
                    filters) -> str:
        """Which measurements a view may be derived from: same metric, data, policy and
        tenant settings, and filters (a source's filters are a subset of the view's), so the
        planner reads only candidates (one key per subset of the view's few filters)."""
        return self._key(principal, data_version, plan, source=query.metric,
                         filters=sorted(list(f) for f in filters))

    def _source(self, query: Query, plan: _Plan, data_version: int) -> dict:
        """What a stored measurement was measured as: whether it can answer another view."""
        return {"data_version": data_version, "policy_version": self._catalog.version,
                "settings": plan.key_settings, "metric": query.metric, "level": query.level,
                "geo": plan.geo, "dims": [d for d in query.group_by[1:] if d not in _GEO_LEVELS],
                "filters": [list(f) for f in query.filters], "period": query.period,
                "months": [m.isoformat() for m in query.months]}

    def _measurements(self, query: Query, plan: _Plan, data_version: int, computed: list[date],
                      measured: dict[tuple[str, ...], int]) -> dict[date, dict]:
        """The finest level's noisy counts of each computed period, to derive from later."""
        count = plan.measured[0].count
        if not computed or count is None or plan.metric.measure != "count":
            return {}
        source = self._source(query, plan, data_version)
        mechanism = mechanism_record(count)
        by_label: dict[str, list] = defaultdict(list)
        for key, noisy in measured.items():
            by_label[key[0]].append([*key[1:], int(noisy)])
        labels = query.periods
        return {month: {"source": source, "mechanism": mechanism,
                        "counts": by_label.get(labels[month], [])} for month in computed}

    def _derive(self, session, principal: Principal, query: Query, plan: _Plan,
                data_version: int, months: list[date]) -> dict[date, list]:
        """The periods of ``months`` that stored measurements answer accurately enough, as
        cell JSON (free: post-processing). Empty when nothing qualifies."""
        planner = self._catalog.policy.planner
        fine = plan.measured[0].count
        if (not months or not planner.derive or fine is None
                or plan.metric.measure != "count"):
            return {}
        window = query.period == "window"
        read = list(query.months) if window else months
        role = self._role(principal)
        levels = {level for level in role.privacy_levels
                  if level not in plan.settings.settings.disabled_levels}
        rows = session.execute(select(ReleasePeriod.period, ReleasePeriod.measurement,
                                      ReleasePeriod.cells).where(
            ReleasePeriod.tenant_id == principal.tenant,
            ReleasePeriod.product_id == plan.product.id,
            ReleasePeriod.source.in_([
                self._source_key(principal, query, plan, data_version, subset)
                for size in range(len(query.filters) + 1)
                for subset in itertools.combinations(query.filters, size)]),
            ReleasePeriod.period.in_(read))).all()
        sources: dict[date, list[dict]] = defaultdict(list)
        totals: dict[date, list[list]] = defaultdict(list)
        for period, measurement, cells in rows:
            if not measurement:
                continue
            source = measurement["source"]
            if (source["data_version"] != data_version
                    or source["policy_version"] != self._catalog.version
                    or source["settings"] != plan.key_settings
                    or source["metric"] != query.metric or source["level"] not in levels
                    or not self._covers(source, query, plan)):
                continue
            if source["period"] == "window":
                if not window or source["months"] != [m.isoformat() for m in query.months]:
                    continue
                sources[query.start].append(measurement)
            elif source["period"] == "month":
                sources[period].append(measurement)
                if (plan.geo == "tenant" and source["geo"] != "tenant"
                        and source["dims"] == [d for d in query.group_by[1:]
                                               if d not in _GEO_LEVELS]
                        and {tuple(f) for f in source["filters"]} == set(query.filters)):
                    totals[period].append(cells)
        if not sources:
            return {}
        labels = query.periods
        dims = [d for d in query.group_by[1:] if d not in _GEO_LEVELS]
        fresh_cut = thresholds(plan.measured, k=plan.k,
                               empty_cell_rate=self._catalog.policy.empty_cell_rate)[0]
        out: dict[date, list] = {}
        targets = [query.start] if window else months
        for month in targets:
            if window:
                # a window only from a window of the same months: summed from its months, every
                # area's noise is √months × a fresh window's, and small areas a fresh window
                # shows would roll up (what insights need is one value per area)
                choices = [[m] for m in sources.get(query.start, ())
                           if m["source"]["period"] == "window"]
            else:
                choices = [[m] for m in sources.get(month, ())]
            label = labels[month]
            keys = self._keys(principal, query, plan, [label], dims)
            best: list | None = None
            # the tenant of a finer view of the same breakdown: its stored totals (which also
            # weigh in the top's own measurement) are the best estimate; then sums
            candidates = [(_as_totals(cells, keys, label), {})
                          for cells in totals.get(month, ())]
            candidates += [self._derived_cells(principal, query, plan, keys, label, measurements)
                           for measurements in sorted(choices, key=_noise_volume)[:_DERIVE_TRIES]]
            for cells, lowers in candidates:
                # areas it hides although their count is clearly above a fresh release's
                # threshold (its interval's lower end is): a fresh release would show them
                shown = {c.key for c in cells or () if c.value is not None}
                hidden = sum(1 for key, lower in lowers.items()
                             if key not in shown and lower >= fresh_cut)
                if cells is None or not accurate_enough(
                        cells, fresh_half_width=fine.half_width,
                        max_ratio=planner.max_width_ratio,
                        max_relative=planner.max_relative_half_width,
                        min_share=planner.min_share_accurate, hidden=hidden):
                    continue
                best = [c.to_json() for c in cells]
                break
            if best is not None:
                out[month] = best
        return out

    def _covers(self, source: dict, query: Query, plan: _Plan) -> bool:
        """Whether a source's keys determine every key of ``query``: a geography at least as
        fine, every breakdown (or the same filter), and every extra filter on what it carries."""
        if _GEO_LEVELS.index(source["geo"]) > _GEO_LEVELS.index(plan.geo):
            return False
        filters = {tuple(f) for f in source["filters"]}
        if not filters <= set(query.filters):
            return False
        pinned = dict(filters)
        for dimension in query.group_by[1:]:
            if dimension not in _GEO_LEVELS and dimension not in source["dims"] \
                    and dimension not in pinned:
                return False
        for dimension, _value in set(query.filters) - filters:
            if dimension in _GEO_LEVELS:
                if _GEO_LEVELS.index(source["geo"]) > _GEO_LEVELS.index(dimension):
                    return False
            elif dimension not in source["dims"]:
                return False
        return True

    def _derived_cells(self, principal: Principal, query: Query, plan: _Plan,
                       keys: list[tuple[str, ...]], label: str,
                       measurements: list[dict]) -> tuple[list[Cell] | None, dict]:
        """The view's cells for one period summed from ``measurements``, and the lower end of
        each finest key's derived count (noisy − its noise's half-width); (None, {}) if some
        key of the public key set has nothing measured under it."""
        wanted = {key: [0, 0] for key in keys}
        filters = dict(query.filters)
        dims = [d for d in query.group_by[1:] if d not in _GEO_LEVELS]
        for measurement in measurements:
            source = measurement["source"]
            pinned = {d: v for d, v in source["filters"]}
            for row in measurement["counts"]:
                area, values, noisy = row[0], dict(zip(source["dims"], row[1:-1])), row[-1]
                chain = self._chain(principal, area, source["geo"])
                if any((chain.get(d) if d in _GEO_LEVELS else values.get(d, pinned.get(d)))
                       != v for d, v in filters.items()):
                    continue
                key = (label, chain[plan.geo],
                       *(values[d] if d in values else pinned[d] for d in dims))
                slot = wanted.get(key)
                if slot is None:
                    return None, {}  # a key outside the public key set: the sets disagree
                slot[0] += noisy
                slot[1] += 1
        if any(many == 0 for _, many in wanted.values()):
            return None, {}
        base = mechanism_of(measurements[0]["mechanism"])
        cells = derive_cells(keys=keys, derived={k: (v[0], v[1]) for k, v in wanted.items()},
                             levels=self._levels(principal, plan), base=base, k=plan.k,
                             empty_cell_rate=self._catalog.policy.empty_cell_rate)
        return cells, {key: noisy - noise_of(base, many).half_width
                       for key, (noisy, many) in wanted.items()}

    def _chain(self, principal: Principal, area: str, geo: str) -> dict[str, str]:
        """An area's code at its own geography level and every coarser one."""
        chain = {geo: area}
        if geo == "h3_cell":
            area = chain["district"] = self._district_of(area)
            geo = "district"
        if geo == "district":
            area = chain["state"] = self._geography.state_of[area]
            geo = "state"
        if geo == "state":
            chain["tenant"] = principal.tenant
        return chain

    # --- internals ---------------------------------------------------------------------------

    def _role(self, principal: Principal) -> RoleSpec:
        role = self._catalog.roles.get(principal.role)
        if role is None:
            raise AccessDenied(f"role {principal.role!r} is not defined in the policy")
        return role

    def _plan(self, principal: Principal, query: Query) -> _Plan:
        """Authorise and validate; return the mechanisms per level and the ε it will cost."""
        role = self._role(principal)
        self._catalog.tenant(principal.tenant)
        settings = self.admin.effective(principal.tenant)
        try:
            product = self._catalog.product(query.product)
        except VeilError:
            raise QueryRefused(f"unknown data product {query.product!r}") from None
        if product.kind != "metric_set":
            raise QueryRefused(f"{product.id} is a {product.kind}, not a metric set; "
                               f"it cannot be queried for aggregates")
        try:
            metric = product.metric(query.metric)
        except KeyError:
            raise QueryRefused(f"{product.id} has no metric {query.metric!r}; available: "
                               f"{[m.id for m in product.metrics]}") from None
        level = self._catalog.policy.levels.get(query.level)
        if level is None:
            raise QueryRefused(f"unknown privacy level {query.level!r}")
        if not level.noisy:
            # An exact count behind a k-threshold is given away by the difference of two
            # allowed queries (district minus district-and-female): no aggregate leaves exact.
            raise QueryRefused(
                f"privacy level {query.level!r} adds no noise, and Veil releases no exact "
                f"aggregates: two exact counts differenced give away the small groups a "
                f"threshold hides. Ask at a differential-privacy level "
                f"({', '.join(self.aggregate_levels(principal)) or 'none open to your role'}); "
                f"{query.level!r} is for operational lists. Nothing was spent.")
        if query.level not in role.privacy_levels:
            raise AccessDenied(f"the {role.title} role may not request privacy level "
                               f"{query.level!r}; allowed: {list(role.privacy_levels) or 'none'}")
        if query.level in settings.settings.disabled_levels:
            raise QueryRefused(f"privacy level {query.level!r} is switched off in the privacy "
                               f"settings of {principal.tenant} (version {settings.version})")
        applied = self._release_settings(settings, product, query.level)
        cap = settings.settings.cap(role.id)
        if level.noisy and cap <= 0:
            raise AccessDenied(f"the {role.title} role has no query budget; it reads published "
                               f"releases only")
        geo = self._check_dimensions(principal, role, product, query)
        self._check_window(product, query)
        levels = _GEO_LEVELS[_GEO_LEVELS.index(geo):]
        measured = self._mechanisms(product, metric, applied["level_epsilon"], len(levels))
        loss = release_loss(measured, delta=self._catalog.policy.delta)
        mechanism = measured[0].count.name + (
            f" + {measured[0].total.name}" if measured[0].total else "")
        return _Plan(product=product, metric=metric, geo=geo, levels=levels,
                     measured=measured, epsilon=loss.epsilon, delta=loss.delta,
                     mechanism=mechanism, settings=settings, cap=cap, **applied)

    def _mechanisms(self, product: ProductSpec, metric: MetricSpec, epsilon: float,
                    levels: int) -> tuple[Measured, ...]:
        """The mechanisms of each geography level for a level ε (0: exact, no noise)."""
        if epsilon <= 0:
            return tuple(Measured(count=None, total=None) for _ in range(levels))
        confidence = self._catalog.policy.interval_confidence
        measured = []
        for share in split_epsilon(epsilon, levels):
            if metric.measure == "count":
                measured.append(Measured(count=self._count_mechanism(product, metric, share),
                                         total=None))
            else:
                # Half for the count that drives the k-threshold and the mean's denominator,
                # half for the clamped sum.
                count = discrete_laplace(sensitivity=count_sensitivity(product, metric),
                                         epsilon=share / 2, confidence=confidence)
                total = float_laplace(sensitivity=sum_sensitivity(product, metric),
                                      epsilon=share / 2, confidence=confidence)
                measured.append(Measured(count=count, total=total))
        return tuple(measured)

    def _query_mechanisms(self, product: ProductSpec, query: Query, *,
                          level_epsilon: float) -> tuple[tuple[str, ...], tuple[Measured, ...]]:
        """The geography levels of ``query`` and their mechanisms (public: no data)."""
        geo = next((d for d in query.group_by[1:] if d in _GEO_LEVELS), "tenant")
        levels = _GEO_LEVELS[_GEO_LEVELS.index(geo):]
        level = self._catalog.policy.levels.get(query.level)
        noisy = level.noisy if level is not None else level_epsilon > 0
        return levels, self._mechanisms(product, product.metric(query.metric),
                                        level_epsilon if noisy else 0.0, len(levels))

    def _query_loss(self, product: ProductSpec, query: Query, *,
                    level_epsilon: float) -> PrivacyLoss:
        """What one fresh release of ``query`` costs: the composed (ε, δ) it protects at."""
        _levels, measured = self._query_mechanisms(product, query, level_epsilon=level_epsilon)
        if all(m.count is None for m in measured):
            return PrivacyLoss(Epsilon(0.0))
        return release_loss(measured, delta=self._catalog.policy.delta)

    def _thresholds(self, product: ProductSpec, query: Query, *, k: int,
                    level_epsilon: float) -> tuple[Threshold, ...]:
        """The release threshold of each geography level of ``query`` (public: mechanisms only)."""
        levels, measured = self._query_mechanisms(product, query, level_epsilon=level_epsilon)
        cuts = thresholds(measured, k=k, empty_cell_rate=self._catalog.policy.empty_cell_rate)
        counts = product.metric(query.metric).measure == "count"
        confidence = self._catalog.policy.interval_confidence
        return tuple(Threshold(level=name, count=cut,
                               empty_cell_rate=m.count.tail(cut) if m.count else 0.0,
                               coverage=(m.count.coverage if counts else confidence)
                               if m.count else 1.0)
                     for name, cut, m in zip(levels, cuts, measured))

    def _release_settings(self, settings: SettingsVersion, product: ProductSpec,
                          level: str) -> dict:
        """The product's k and the level's ε under the tenant's settings, and what of them
        keys stored releases (only what differs from the catalog: unchanged settings keep the
        keys, and so the stored releases, they always had)."""
        k = product_k(settings.settings.k, product, policy_k=self._catalog.policy.k)
        default = self._catalog.policy.levels[level].epsilon
        tenant_epsilon = settings.settings.levels.get(level)
        epsilon = tenant_epsilon.value if tenant_epsilon is not None else default
        changed = k != product.k or epsilon != default
        return {"k": k, "level_epsilon": epsilon,
                "key_settings": {"k": k, "epsilon": epsilon} if changed else {}}

    def _count_mechanism(self, product: ProductSpec, metric: MetricSpec, epsilon: float):
        confidence = self._catalog.policy.interval_confidence
        sensitivity = count_sensitivity(product, metric)
        if product.noise == "gaussian":
            # L2 bound of the count vector: at worst all N events of a person-day in one cell
            return discrete_gaussian(sensitivity=sensitivity, epsilon=epsilon,
                                     delta=self._catalog.policy.delta, confidence=confidence)
        return discrete_laplace(sensitivity=sensitivity, epsilon=epsilon, confidence=confidence)

    def _check_dimensions(self, principal: Principal, role: RoleSpec, product: ProductSpec,
                          query: Query) -> str:
        """Check group-by and filters against role, catalog and limits; return the finest geo."""
        policy = self._catalog.policy
        if len(query.group_by) > policy.max_group_by:
            raise QueryRefused(f"at most {policy.max_group_by} group-by dimensions are allowed, "
                               f"got {len(query.group_by)}")
        geo = "tenant"
        for dimension in query.group_by[1:]:
            if dimension not in DIMENSIONS:
                raise QueryRefused(f"cannot group by {dimension!r}; allowed: "
                                   f"{sorted(DIMENSIONS)}")
            self._visible(role, product, dimension, use="group by")
            if dimension in _GEO_LEVELS:
                if geo != "tenant":
                    raise QueryRefused(f"group by one geography at a time, got {geo!r} and "
                                       f"{dimension!r}")
                geo = dimension
        domains = self._domains(principal, product)
        for dimension, value in query.filters:
            if dimension not in DIMENSIONS:
                raise QueryRefused(f"cannot filter on {dimension!r}; allowed: "
                                   f"{sorted(DIMENSIONS)}")
            self._visible(role, product, dimension, use="filter on")
            if value not in domains[dimension]:
                raise QueryRefused(f"{value!r} is not a {dimension} of tenant "
                                   f"{principal.tenant}; allowed: "
                                   f"{_shorten(domains[dimension])}")
        return geo

    def dimensions(self, principal: Principal, product: str) -> tuple[str, ...]:
        """The dimensions ``principal``'s role may group by or filter on in ``product``: those
        its treatment table shows as stored (what the pages offer; the gate refuses the rest)."""
        role = self._role(principal)
        spec = self._catalog.product(product)
        return tuple(d for d in DIMENSIONS if self._treatment(role, spec, d) == "show")

    @staticmethod
    def _treatment(role: RoleSpec, product: ProductSpec, dimension: str) -> str:
        return role.treatment[product.field(DIMENSIONS[dimension]).classification]

    def _visible(self, role: RoleSpec, product: ProductSpec, dimension: str, *, use: str) -> None:
        """Group-by and filter rights follow the treatment table that decides what is shown:
        only a field the role sees as stored. A generalised field (H3 cell → district) is
        seen only in its coarser form, so grouping by the raw one would undo it."""
        field = product.field(DIMENSIONS[dimension])
        treatment = self._treatment(role, product, dimension)
        if treatment == "show":
            return
        coarser = field.generalise_to
        instead = (f"; {use} {coarser} instead" if treatment == "generalise"
                   and coarser in DIMENSIONS else "")
        seen = {"generalise": "sees {} only generalised", "mask": "sees {} only masked",
                "pseudonymise": "sees {} only pseudonymised"}.get(treatment, "cannot see {}")
        raise AccessDenied(f"the {role.title} role {seen.format(repr(field.title))} "
                           f"({field.classification}: {treatment}), so it cannot {use} it"
                           f"{instead}")

    def _domains(self, principal: Principal, product: ProductSpec) -> dict[str, tuple[str, ...]]:
        """The public key set per dimension for this tenant: declared, never read from data."""
        districts = tuple(d.code for d in self._catalog.districts_of(principal.tenant))
        cells = self._geography.cells_by_district
        return {
            "state": self._catalog.tenant(principal.tenant).states,
            "district": districts,
            "h3_cell": tuple(c for d in districts for c in cells[d]),
            "age_bucket": self._catalog.domains["age_bucket"],
            "gender": self._catalog.domains["gender"],
            "category": self._catalog.domains[product.category_domain],
        }

    def _check_window(self, product: ProductSpec, query: Query) -> None:
        policy = self._catalog.policy
        months, longest = len(query.months), self.max_months(product.id)
        if months <= longest:
            return
        if product.published_series:
            raise QueryRefused(f"{product.id} series are limited to {longest} months per "
                               f"query, asked for {months}")
        raise QueryRefused(f"{product.id} is not a published series: ad-hoc queries may "
                           f"cover at most {policy.max_window_days} days ({longest} months), "
                           f"asked for {months} months")

    def _data_version(self, session, tenant: str, product: ProductSpec) -> int:
        version = session.scalar(select(ProductVersion.data_version).where(
            ProductVersion.tenant_id == tenant, ProductVersion.product_id == product.id))
        if version is None:
            raise QueryRefused(f"{product.title} has no materialised data for this tenant yet; "
                               f"an operator must run `veil materialize`")
        return version

    def _check_consent_applied(self, session, tenant: str, product: ProductSpec) -> None:
        """Refuse while a consent withdrawal is newer than the cube: never release its subject."""
        refreshed = session.scalar(select(ProductVersion.refreshed_at).where(
            ProductVersion.tenant_id == tenant, ProductVersion.product_id == product.id))
        latest = session.scalar(select(func.max(SubjectConsent.changed_at)).where(
            SubjectConsent.tenant_id == tenant, SubjectConsent.vertical == product.vertical,
            SubjectConsent.status == "withdrawn"))
        if latest is not None and refreshed is not None and latest > refreshed:
            raise QueryRefused(
                f"a consent withdrawal ({latest:%Y-%m-%d %H:%M} UTC) is not yet applied to "
                f"{product.title}; its aggregates are being rebuilt (`veil materialize`). "
                f"Nothing was spent; try again shortly.")

    def _key(self, principal: Principal, data_version: int, plan: _Plan, **extra) -> str:
        """What was computed, not who asked: tenant, query, level and settings, data and
        policy. Two roles allowed the same query (group-by and filter rights follow the
        treatment table, so an allowed query means the same computation for any role) share
        one release and pay once; every one of its months was drawn once from its lifetime."""
        settings = {"tenant_settings": plan.key_settings} if plan.key_settings else {}
        material = json.dumps({
            "tenant": principal.tenant,
            "policy_version": self._catalog.version, "data_version": data_version,
            **settings, **extra,
        }, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(material.encode()).hexdigest()

    def _series_key(self, principal: Principal, query: Query, data_version: int,
                    plan: _Plan) -> str:
        return self._key(principal, data_version, plan, query=query.canonical())

    def _period_keys(self, principal: Principal, query: Query, data_version: int,
                     plan: _Plan) -> dict[date, str]:
        """The key of each atomic period of the series: the query without its window."""
        atomic = query.canonical()
        if query.period == "window":  # the whole window is the one atomic period
            return {query.start: self._key(principal, data_version, plan, atomic=atomic)}
        del atomic["start"], atomic["end"]
        return {month: self._key(principal, data_version, plan, atomic=atomic,
                                 month=month.isoformat())
                for month in query.months}

    def _existing_periods(self, session, period_keys: dict[date, str]) -> dict[str, list]:
        """Cells of the periods already released, by period key."""
        return dict(session.execute(select(ReleasePeriod.period_key, ReleasePeriod.cells).where(
            ReleasePeriod.period_key.in_(list(period_keys.values())))).all())

    def _to_release(self, row: ReleaseRow, product: ProductSpec, *, charged: Epsilon,
                    reused: bool, k: int, level_epsilon: float,
                    charged_delta: Delta = Delta(0.0), derived: int = 0,
                    lifetime: tuple[PeriodStatus, ...] | None = None) -> Release:
        query = _query_of(row.query)
        # k and ε as the tenant's settings made them (the release is keyed by them)
        product = dataclasses.replace(product, k=k)
        return Release(
            id=row.id, tenant=row.tenant_id, product=row.product_id, query=query,
            cells=tuple(Cell.from_json(c) for c in row.cells), epsilon=Epsilon(row.epsilon),
            charged=charged, reused=reused, mechanism=row.mechanism, k=k,
            confidence=self._catalog.policy.interval_confidence,
            privacy_unit=product.privacy_unit, policy_version=row.policy_version,
            data_version=row.data_version, digest=row.digest, created_at=row.created_at,
            delta=Delta(row.delta), charged_delta=charged_delta,
            lifetime=(lifetime if lifetime is not None
                      else self._lifetime(row.tenant_id, row.product_id, query.months)),
            guarantee=guarantee_text(product, self._query_loss(product, query,
                                                               level_epsilon=level_epsilon)),
            published=row.published,
            measure=product.metric(query.metric).measure,
            thresholds=self._thresholds(product, query, k=k, level_epsilon=level_epsilon),
            empty_cell_bound=self._catalog.policy.empty_cell_rate, derived=derived)

    def _compute(self, principal: Principal, query: Query, plan: _Plan, *,
                 months: list[date], measurement: dict | None = None,
                 prepared: tuple | None = None) -> list[Cell]:
        """Release ``months`` through the engine from the cube's aggregates (``prepared``
        when the release's read transaction has already read them)."""
        keys, truth = (prepared if prepared is not None
                       else self._aggregate(principal, query, plan, months=months))
        return self._engine(principal, plan, keys=keys, truth=truth, measurement=measurement)

    def _engine(self, principal: Principal, plan: _Plan, *, keys: list[tuple[str, ...]],
                truth: dict[tuple[str, ...], tuple[int, float]],
                measurement: dict | None = None) -> list[Cell]:
        """Release the true aggregates of the public key set (noise, thresholds, roll-up)."""
        return release_cells(
            keys=keys, truth=truth, levels=self._levels(principal, plan), measured=plan.measured,
            k=plan.k, measure=plan.metric.measure, bounds=plan.metric.value_bounds,
            empty_cell_rate=self._catalog.policy.empty_cell_rate, measurement=measurement)

    def _aggregate(self, principal: Principal, query: Query, plan: _Plan, *,
                   months: list[date], session=None) -> tuple[list[tuple[str, ...]],
                                                dict[tuple[str, ...], tuple[int, float]]]:
        """The public key set for the periods starting at ``months`` and the cube's true
        aggregates by key."""
        labels = query.periods
        keys_of = [labels[month] for month in months]
        if query.period == "window":  # one period: every month of the window, one label
            months = list(query.months)
            labels = dict.fromkeys(months, keys_of[0])
        dims = [d for d in query.group_by[1:] if d not in _GEO_LEVELS]
        geo_column = (None if plan.geo == "tenant"
                      else getattr(CubeMonthly, DIMENSIONS[plan.geo]))
        # On an H3 map, events placed only by district (cell "-") count in that district's
        # "unplaced" cell, so they are measured and rolled up like any cell, never dropped.
        placed_by = [CubeMonthly.district] if plan.geo == "h3_cell" else []
        columns = [CubeMonthly.period] + placed_by + (
            [geo_column] if geo_column is not None else []) + [
            getattr(CubeMonthly, DIMENSIONS[d]) for d in dims]
        # Tenant lock: the tenant comes from the principal, never from the query.
        statement = (
            select(*columns, func.sum(CubeMonthly.n_events), func.sum(CubeMonthly.value_sum))
            .where(CubeMonthly.tenant_id == principal.tenant,
                   CubeMonthly.product_id == plan.product.id,
                   CubeMonthly.metric == query.metric,
                   # a range lets the index seek on period (PostgreSQL leaves an IN list of
                   # dates to a filter, and SQLite plans range-plus-IN worse than either)
                   CubeMonthly.period >= min(months), CubeMonthly.period <= max(months))
            .group_by(*columns))
        if not _contiguous(months):  # gaps: keep exactly the months not yet released
            statement = statement.where(CubeMonthly.period.in_(months))
        for dimension, value in query.filters:
            statement = statement.where(getattr(CubeMonthly, DIMENSIONS[dimension]) == value)
        truth: dict[tuple[str, ...], tuple[int, float]] = {}
        with (nullcontext(session) if session is not None else self._store.read()) as session:
            for row in session.execute(statement):
                month = labels[row[0]]
                rest = [str(v) for v in row[1:len(columns)]]
                if geo_column is None:
                    rest.insert(0, principal.tenant)
                if placed_by:
                    district, cell = rest.pop(0), rest[0]
                    rest[0] = cell if cell in self._geography.cells else unplaced(district)
                key = (month, *rest)
                n, total = truth.get(key, (0, 0.0))
                truth[key] = (n + int(row[-2]), total + float(row[-1] or 0.0))
        return self._keys(principal, query, plan, keys_of, dims), truth

    def _keys(self, principal: Principal, query: Query, plan: _Plan, periods: list[str],
              dims: list[str]) -> list[tuple[str, ...]]:
        """The public key set: periods × declared areas × declared categories, after filters."""
        domains = self._domains(principal, plan.product)
        filters = dict(query.filters)
        if plan.geo == "tenant":
            areas: tuple[str, ...] = (principal.tenant,)
        else:
            candidates = domains[plan.geo]
            if plan.geo == "h3_cell" and "h3_cell" not in filters:
                candidates = candidates + tuple(unplaced(d) for d in domains["district"])
            areas = tuple(a for a in candidates if self._area_matches(a, plan.geo, filters))
        dim_values = [((filters[d],) if d in filters else domains[d]) for d in dims]
        return [(period, area, *combo) for period in periods for area in areas
                for combo in itertools.product(*dim_values)]

    def _area_matches(self, code: str, level: str, filters: dict[str, str]) -> bool:
        district = self._district_of(code) if level == "h3_cell" else (
            code if level == "district" else None)
        state = self._geography.state_of[district] if district else code
        if "district" in filters and district is not None and district != filters["district"]:
            return False
        if "h3_cell" in filters and level == "h3_cell" and code != filters["h3_cell"]:
            return False
        return "state" not in filters or state == filters["state"]

    def _district_of(self, cell: str) -> str:
        return cell[:-len(_UNPLACED)] if cell.endswith(_UNPLACED) else self._geography.cells[cell]

    def _levels(self, principal: Principal, plan: _Plan) -> list[Level]:
        parents = {
            "h3_cell": self._district_of,
            "district": lambda district: self._geography.state_of[district],
            "state": lambda _state: principal.tenant,
            "tenant": None,
        }
        return [Level(name=name, parent=parents[name]) for name in plan.levels]


_UNPLACED = ":unplaced"
#: how long a data clock is reused while no data version changes (its SLO breaches may lag)
_CLOCK_TTL = timedelta(seconds=60)
#: Attempts to store a release against concurrent ones. Each failed attempt means another
#: release stored part of this one (see ``_release``), so a window of n periods needs at most
#: n + 1 retries; this bound only guards against a loop, never meets a real race.
_STORE_ATTEMPTS = 64
#: stored sources tried per derived period, least noisy first (each try is post-processing)
_DERIVE_TRIES = 3


def unplaced(district: str) -> str:
    """The pseudo-cell of a district's events that carry no H3 cell (placed by district only)."""
    return district + _UNPLACED


def _reserved(principal: Principal) -> bool:
    """Whether ``principal`` may draw on the reserved share of a month's lifetime budget: the
    tenant's publication identity and the umbrella-export identities (``source="system"``)."""
    return principal.source == "system" and (principal.role == "publisher"
                                             or principal.subject.startswith("umbrella:"))


def _query_of(q: dict) -> Query:
    """The query a stored release answered, from its canonical form."""
    return Query(product=q["product"], metric=q["metric"],
                 start=date.fromisoformat(q["start"]), end=date.fromisoformat(q["end"]),
                 level=q["level"], group_by=tuple(q["group_by"]),
                 filters=tuple(tuple(f) for f in q["filters"]), period=q.get("period", "month"))


def _error_kind(exc: BaseException) -> str:
    """The driver's error class, e.g. ``UndefinedTable``: names the failure, carries no SQL."""
    return type(getattr(exc, "orig", None) or exc).__name__


def _store_error(exc: BaseException, *, doing: str) -> StoreError:
    return StoreError(
        f"The store failed while {doing} ({_error_kind(exc)}); nothing was spent and nothing "
        f"was stored. Try again in a moment; if it keeps failing, an operator should check "
        f"the database (VEIL_DATABASE_URL) and the server's log.")


def _as_totals(cells: list[dict], keys: list[tuple[str, ...]],
               label: str) -> list[Cell] | None:
    """A finer view's stored total cells as the cells of its tenant view (keys ``keys``):
    the same estimates and intervals; a stratum the finer view suppressed stays suppressed."""
    found = {tuple(c["key"][1:]): Cell.from_json(c) for c in cells if c["status"] == "total"}
    out = []
    for key in keys:
        total = found.get(tuple(key[1:]))
        out.append(Cell(key=key, value=None, lower=None, upper=None, noise_scale=None,
                        status="suppressed") if total is None else
                   dataclasses.replace(total, key=key, status="noisy", members=()))
    return out if any(c.value is not None for c in out) else None


def _noise_volume(measurements: list[dict]) -> float:
    """How noisy a derivation from ``measurements`` is at most, before looking at any count:
    the variance of one measured count times how many are measured (what is summed)."""
    return sum(mechanism_of(m["mechanism"]).variance * max(len(m["counts"]), 1)
               for m in measurements)


def _contiguous(months: list[date]) -> bool:
    ordinals = sorted(m.year * 12 + m.month for m in months)
    return ordinals[-1] - ordinals[0] + 1 == len(ordinals)


def _shorten(values: tuple[str, ...]) -> str:
    shown = list(values[:12])
    return f"{shown}{' …' if len(values) > 12 else ''}"


def _digest(cells: list[Cell]) -> str:
    payload = json.dumps([c.to_json() for c in cells], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()
