"""The gate: the only way a number leaves Veil's stores.

Owns ``release``: authorise (role, tenant, level, fields), validate against the catalog's public
domains and limits, reuse an identical stored release at zero cost, otherwise reserve ε, read
the aggregate cube scoped to the principal's tenant, add OpenDP noise, apply the k-threshold to
the *noisy* counts, store the release and commit the charge in one transaction — refunding if
anything fails. It never returns a value that has not passed through this path.

This module orchestrates one release; its parts live beside it: planning (authorise, validate,
mechanisms and cost) in ``privacy._plan``, the public key set and the cube read in
``privacy._cube``, the engine in ``privacy._engine``, the release log and stored periods in
``privacy._releases``, deriving from stored measurements in ``privacy._derivation`` (and
``privacy._derive``), the budget ledgers in ``privacy._budget``, the data clock in
``privacy._clock``.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Callable
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError

from data.bootstrap import utcnow
from data.catalog import Catalog, ProductSpec
from data.engine import Store
from data.errors import AccessDenied, QueryRefused, StoreError, VeilBug, VeilError
from data.geo import geography
from data.models import Release as ReleaseRow
from data.prepared import Batch

from privacy._settings import SettingsBook, SettingsChanged, policy_version
from privacy._access import (authenticate_demo, authorize_page, check_role_mappings, end_sign_ins,
                             resolve_principal)
from privacy._audit import STORE_ERRORS, audit, audit_best_effort, audit_in
from privacy._budget import Ledger, PeriodLedger, budget_terms, check_budgets
from privacy._clock import DataClocks
from privacy._cube import DIMENSIONS, Aggregates, Cube
from privacy._derivation import Derivation
from privacy._engine import Level, release_cells
from privacy._insights import Insight, correlate
from privacy._local import debias_cells
from privacy._plan import Plan, Planner
from privacy._records import RecordPage, RecordQuery, read_records
from privacy._releases import ReleaseLog, digest, query_of
from privacy._values import (BudgetStatus, Cell, DataClock, Delta, Epsilon, PeriodStatus, Preview,
                             Principal, Query, Release, Threshold)

__all__ = ["DIMENSIONS", "Gate"]


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
        self._build_parts()
        #: The tenant privacy settings in force (D8), read on every release. Exports (D6),
        #: compliance (D7) and administration (D8) are services beside the core (``privacy.Gate``).
        self.tenant_settings = SettingsBook(store, catalog)

    def _build_parts(self) -> None:
        """The parts of a release (see the module docstring), on the catalog in force; the
        tenant settings are read when used."""
        catalog = self._catalog
        self._cube = Cube(self._store, catalog, self._geography)
        self._planner = Planner(catalog, self._cube,
                                effective=lambda tenant: self.tenant_settings.effective(tenant))
        self._log = ReleaseLog(catalog, self._planner, lifetime=self._lifetime,
                               settings_at=lambda tenant, version:
                               self.tenant_settings.at_version(tenant, version))
        self._derivation = Derivation(catalog, self._cube, self._planner, self._log)
        self._clocks = DataClocks(self._store, catalog, clock=self._clock)

    @property
    def _catalog(self) -> Catalog:
        return self._catalog_in_force

    @_catalog.setter
    def _catalog(self, catalog: Catalog) -> None:
        # Tests change a built gate's catalog (a role's treatment, a policy value): its parts
        # are rebuilt on the new one, so none plans against the old.
        self._catalog_in_force = catalog
        if "_planner" in self.__dict__:
            self._build_parts()

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
        self._planner.role(principal)
        cap = self.tenant_settings.effective(principal.tenant).settings.cap(principal.role)
        return self._ledger.status(tenant=principal.tenant, principal=principal.subject,
                                   product=self._catalog.product(product).id,
                                   cap=cap, delta_cap=self._catalog.policy.delta_cap,
                                   today=self._clock().date())

    def lifetime(self, principal: Principal, *, product: str,
                 months: list[date]) -> tuple[PeriodStatus, ...]:
        """The lifetime budget of each of ``months`` of ``product`` in the principal's tenant:
        what every release about that month has spent, by anyone, against its lifetime cap."""
        self._planner.role(principal)
        return self._lifetime(principal.tenant, self._catalog.product(product).id, months)

    def _lifetime(self, tenant: str, product: str, months,
                  session=None) -> tuple[PeriodStatus, ...]:
        periods = self._catalog.policy.periods
        return tuple(self._periods.status(tenant=tenant, product=product, periods=list(months),
                                          cap=periods.epsilon, delta_cap=periods.delta,
                                          session=session).values())

    # --- public policy and the data's clock (no released value) -------------------------------

    def data_clock(self, principal: Principal, *, product: str) -> DataClock:
        """How far the principal's tenant's data of ``product`` reaches, and the window limit.

        Pages default to windows ending at its latest complete month, so nothing shown ages
        with the calendar. Spends nothing; operational metadata only (``privacy._clock``).
        """
        self._planner.role(principal)
        spec = self._catalog.product(product)
        self._planner.check_product(principal, spec)
        if spec.kind != "metric_set":
            raise QueryRefused(f"{spec.id} is a {spec.kind}, not a metric set")
        return self._clocks.read(principal.tenant, spec,
                                 max_months=self._planner.max_months(spec.id))

    def today(self) -> date:
        """The calendar day by the gate's clock: budget windows and audit periods follow it."""
        return self._clock().date()

    def max_months(self, product: str) -> int:
        """The most months one query of ``product`` may cover (public policy, no data)."""
        return self._planner.max_months(product)

    def aggregate_levels(self, principal: Principal, *,
                         switched_off: bool = False) -> tuple[str, ...]:
        """The privacy levels ``principal`` may release aggregates at now (public policy).

        Only noisy levels: no aggregate leaves exact. They are the role's, minus those its
        tenant switched off (kept with ``switched_off=True``: the role's right whatever the
        settings); none for a role without a query budget (it reads published releases, or
        records only).
        """
        return self._planner.aggregate_levels(principal, switched_off=switched_off)

    def products(self, principal: Principal) -> tuple[ProductSpec, ...]:
        """The data products ``principal``'s role may use, in catalog order: every product
        but those restricted to other roles (``allowed_roles``). Every product and metric
        picker, list and overview starts from this; the gate refuses the others (audited,
        nothing spent). Public policy, no data."""
        return self._planner.products(principal)

    def dimensions(self, principal: Principal, product: str) -> tuple[str, ...]:
        """The dimensions ``principal``'s role may group by or filter on in ``product``: those
        its treatment table shows as stored (what the pages offer; the gate refuses the rest)."""
        return self._planner.dimensions(principal, product)

    # --- published snapshots -----------------------------------------------------------------

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
        self._planner.role(principal)
        try:
            with self._store.read() as session:
                published = self._log.published_rows(session, principal.tenant,
                                                     product=product)
        except STORE_ERRORS as exc:
            raise _store_error(exc, doing="reading the published snapshots") from exc
        return self._log.snapshots(published)

    def _publisher(self, tenant: str) -> Principal:
        return Principal(subject=f"publication@{tenant}", display_name="Publication",
                         role="publisher", tenant=tenant, source="system")

    # --- releases ----------------------------------------------------------------------------

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
        tenant = principal.tenant
        with self._store.read() as session:
            data_version = self._log.data_version(session, tenant, plan.product)
            stored = self._log.stored_id(
                session, self._log.series_key(tenant, query, data_version, plan))
            period_keys = self._log.period_keys(tenant, query, data_version, plan)
            existing = self._log.existing_periods(session, period_keys)
            missing = [month for month, key in period_keys.items() if key not in existing]
            derived = (stored is None and bool(missing) and len(self._derive(
                session, principal, query, plan, data_version, missing)) == len(missing))
        free = stored is not None or not missing or derived
        status = self.budget(principal, product=plan.product.id)
        finest = plan.measured[0]
        main = finest.total if plan.metric.release_measure != "count" else finest.count
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
        plan: Plan | None = None
        tenant = principal.tenant
        # Storing fails with IntegrityError only when a concurrent release stored the same
        # series or some of the same periods first (its periods then stand, ours rolled back
        # with our charge). Each retry re-reads them, so each makes progress: the periods left
        # to compute shrink, or the series is found stored. A retry that finds nothing new was
        # no race: that store error is raised as it is.
        conflict: IntegrityError | None = None
        before: tuple[int, frozenset[str]] = (0, frozenset())
        for _attempt in range(_STORE_ATTEMPTS):
            with self._store.glance() as session:
                # One read (on PostgreSQL no transaction: READ COMMITTED gives each statement
                # its own snapshot either way): the settings in force (the plan), data version,
                # consent freshness, stored series, periods and the stored measurements the
                # missing periods may be derived from.
                if plan is None:
                    plan = self._plan(principal, query, session=session)
                data_version = self._log.current_version(session, tenant, plan.product)
                series_key = self._log.series_key(tenant, query, data_version, plan)
                stored = self._log.stored(session, series_key)
                if stored is None:
                    period_keys = self._log.period_keys(tenant, query, data_version, plan)
                    existing = self._log.existing_periods(session, period_keys)
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
                    lifetime = self._lifetime(tenant, plan.product.id,
                                              query_of(stored.query).months, session=session)
            if stored is not None:
                return self._log.to_release(stored, plan.product, charged=Epsilon(0.0),
                                            reused=True, k=plan.k,
                                            level_epsilon=plan.level_epsilon, lifetime=lifetime)
            seen = (data_version, frozenset(existing))
            if conflict is not None and seen[0] == before[0] and seen[1] <= before[1]:
                raise conflict
            try:
                return self._fresh(principal, query, plan, data_version, series_key,
                                   period_keys, existing, derived, prepared)
            except IntegrityError as exc:
                conflict, before = exc, seen
            except SettingsChanged:
                plan, conflict = None, None  # plan again under the settings now in force
        raise QueryRefused(
            f"Veil is busy: many releases of {query.product} overlapping this one were stored "
            f"at the same time. Nothing was spent; try again.")

    def _check_budgets(self, session, principal: Principal, query: Query, plan: Plan,
                       computed: list[date]) -> None:
        check_budgets(session, budget_terms(principal, query, plan.loss, computed,
                                            policy=self._catalog.policy,
                                            lookback_months=plan.metric.lookback_months),
                      ledger=self._ledger, periods=self._periods, policy=self._catalog.policy,
                      tenant=principal.tenant, principal=principal.subject,
                      product=plan.product.id, cap=plan.cap, today=self._clock().date())

    def _fresh(self, principal: Principal, query: Query, plan: Plan, data_version: int,
               series_key: str, period_keys: dict[date, str],
               existing: dict[str, list], derived: dict[date, list],
               prepared: Aggregates | None) -> Release:
        """Release the periods not stored: derived ones as they are, computed ones from the
        cube aggregates ``prepared`` (read with the early budget checks), then charge and
        store everything in one write transaction."""
        missing = [month for month, key in period_keys.items() if key not in existing]
        # periods derived from stored measurements cost nothing; the rest are computed
        computed = [month for month in missing if month not in derived]
        terms = budget_terms(principal, query, plan.loss, computed, policy=self._catalog.policy,
                             lookback_months=plan.metric.lookback_months)
        epsilon, delta = terms.epsilon, terms.delta
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
        measurements = self._derivation.measurements(query, plan, data_version, computed,
                                                     measured)
        cells_json = [c for key in period_keys.values()
                      for c in (existing[key] if key in existing else fresh[key])]
        cells = tuple(Cell.from_json(c) for c in cells_json)
        release_id = str(uuid.uuid4())
        values = dict(
            id=release_id, query_key=series_key, tenant_id=principal.tenant,
            principal=principal.subject, role=principal.role, product_id=plan.product.id,
            query=query.canonical(),
            policy_version=policy_version(self._catalog.version, plan.settings.version),
            data_version=data_version,
            mechanism=plan.mechanism if computed else f"derived: {plan.mechanism}"[:64],
            epsilon=epsilon.value, delta=delta.value, cells=cells_json, digest=digest(cells),
            published=False, created_at=self._clock())
        row = ReleaseRow(**values)
        source = self._derivation.source_key(principal, query, plan, data_version,
                                             query.filters)
        # One transaction: the ε charge, the release and its periods commit together or not at
        # all, so a failure anywhere spends nothing and leaves no half-stored release.
        drawn = set(terms.periods) if epsilon.value > 0 else set()
        # what every release about these months has spent, this one included: the months this
        # release draws on as their upsert returns them, the others read
        unread = sorted({month for month in query.months if month not in drawn})
        # One write transaction, its statements sent together (one round trip on PostgreSQL):
        # the settings still those planned under, the viewer's charge, the release and its
        # periods, and last the months' lifetime rows, which every release of these months
        # must lock (PostgreSQL), so they are held from their draw to the commit only. A check
        # that fails rolls everything back: nothing spent, nothing stored.
        batch = Batch()
        with self._store.write.begin() as session:
            read = (dict(zip(unread, self._lifetime(principal.tenant, plan.product.id, unread,
                                                    session=session))) if unread else {})
            if drawn:
                self.tenant_settings.expect(batch, plan.settings)
                self._ledger.charge(batch, session, tenant=principal.tenant,
                                    principal=principal.subject, role=principal.role,
                                    product=plan.product.id, epsilon=epsilon,
                                    cap=plan.cap, today=today, release_id=release_id,
                                    delta=delta, delta_cap=delta_cap)
            self._log.store(batch, values, [dict(
                period_key=period_keys[month], release_id=release_id,
                tenant_id=principal.tenant, product_id=plan.product.id, period=month,
                cells=fresh[period_keys[month]], measurement=measurements.get(month),
                source=source if month in measurements else None,
                derived=month in derived) for month in missing])
            months_at = (self._periods.charge(
                batch, session, tenant=principal.tenant, product=plan.product.id,
                periods=terms.periods, epsilon=epsilon, delta=delta, cap=terms.period_cap,
                viewer=terms.viewer, full_cap=period_policy.epsilon,
                delta_cap=period_policy.delta, release_id=release_id,
                principal=principal.subject, role=principal.role) if drawn else None)
            sent = batch.send(session)
            charged: dict[date, PeriodStatus] = sent[months_at] if months_at is not None else {}
            lifetime = tuple(charged[month] if month in charged else read[month]
                             for month in sorted(set(query.months)))
        return self._log.to_release(row, plan.product, charged=epsilon, reused=False,
                                    k=plan.k, level_epsilon=plan.level_epsilon,
                                    charged_delta=delta, derived=len(derived),
                                    lifetime=lifetime, cells=cells)

    def _compute(self, principal: Principal, query: Query, plan: Plan, *,
                 months: list[date], measurement: dict | None = None,
                 prepared: Aggregates | None = None) -> list[Cell]:
        """Release ``months`` through the engine from the cube's aggregates (``prepared``
        when the release's read transaction has already read them)."""
        keys, truth = (prepared if prepared is not None
                       else self._aggregate(principal, query, plan, months=months))
        return self._engine(principal, plan, keys=keys, truth=truth, measurement=measurement)

    def _engine(self, principal: Principal, plan: Plan, *, keys: list[tuple[str, ...]],
                truth: dict[tuple[str, ...], tuple[int, float]],
                measurement: dict | None = None) -> list[Cell]:
        """Release the true aggregates of the public key set (noise, thresholds, roll-up);
        a randomised product's categories jointly, then debiased (``privacy._local``)."""
        cells = release_cells(
            keys=keys, truth=truth, levels=self._cube.levels(principal.tenant, plan),
            measured=plan.measured, k=plan.k, measure=plan.metric.release_measure,
            bounds=plan.metric.value_bounds,
            empty_cell_rate=self._catalog.policy.empty_cell_rate, measurement=measurement,
            jointly=plan.category_at)
        if plan.randomised is None or plan.category_at is None:
            return cells
        return debias_cells(cells, plan.randomised, at=plan.category_at,
                            confidence=self._catalog.policy.interval_confidence)

    # --- the seams to the parts (tests and benchmarks replace or call them) --------------------

    def _plan(self, principal: Principal, query: Query, session=None) -> Plan:
        """The plan, with the tenant's settings in force read in ``session`` if given."""
        settings = (self.tenant_settings.active_in(session, principal.tenant)
                    if session is not None else None)
        return self._planner.plan(principal, query, settings=settings)

    def _derive(self, session, principal: Principal, query: Query, plan: Plan,
                data_version: int, months: list[date]) -> dict[date, list]:
        return self._derivation.derive(session, principal, query, plan, data_version, months)

    def _aggregate(self, principal: Principal, query: Query, plan: Plan, *,
                   months: list[date], session=None) -> Aggregates:
        return self._cube.aggregate(principal.tenant, query, plan, months=months,
                                    session=session)

    def _levels(self, principal: Principal, plan: Plan) -> list[Level]:
        return self._cube.levels(principal.tenant, plan)

    def _thresholds(self, product: ProductSpec, query: Query, *, k: int,
                    level_epsilon: float) -> tuple[Threshold, ...]:
        return self._planner.thresholds(product, query, k=k, level_epsilon=level_epsilon)


#: Attempts to store a release against concurrent ones. Each failed attempt means another
#: release stored part of this one (see ``_release``), so a window of n periods needs at most
#: n + 1 retries; this bound only guards against a loop, never meets a real race.
_STORE_ATTEMPTS = 64


def _error_kind(exc: BaseException) -> str:
    """The driver's error class, e.g. ``UndefinedTable``: names the failure, carries no SQL."""
    return type(getattr(exc, "orig", None) or exc).__name__


def _store_error(exc: BaseException, *, doing: str) -> StoreError:
    return StoreError(
        f"The store failed while {doing} ({_error_kind(exc)}); nothing was spent and nothing "
        f"was stored. Try again in a moment; if it keeps failing, an operator should check "
        f"the database (VEIL_DATABASE_URL) and the server's log.")
