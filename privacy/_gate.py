"""The gate: the only way a number leaves Veil's stores.

Owns ``release``: authorise (role, tenant, level, fields), validate against the catalog's public
domains and limits, reuse an identical stored release at zero cost, otherwise reserve ε, read
the aggregate cube scoped to the principal's tenant, add OpenDP noise, apply the k-threshold to
the *noisy* counts, store the release and commit the charge in one transaction — refunding if
anything fails. It never returns a value that has not passed through this path.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from data.bootstrap import utcnow
from data.catalog import Catalog, ProductSpec, RoleSpec
from data.engine import Store
from data.errors import AccessDenied, QueryRefused, VeilError
from data.models import CubeMonthly, ProductVersion
from data.models import Release as ReleaseRow

from privacy._access import authenticate_demo, resolve_principal
from privacy._audit import audit
from privacy._budget import Ledger
from privacy._mechanisms import CountMechanism, discrete_laplace
from privacy._sensitivity import count_sensitivity, guarantee_text
from privacy._values import BudgetStatus, Cell, Epsilon, Preview, Principal, Query, Release

__all__ = ["FILTER_DIMENSIONS", "Gate"]

#: Public dimensions a query may filter on, with the catalog field that carries each.
FILTER_DIMENSIONS = {"state": "state", "district": "district", "age_bucket": "age_bucket",
                     "gender": "gender", "category": "category"}


class Gate:
    def __init__(self, store: Store, catalog: Catalog, *, demo_accounts: bool = False,
                 clock: Callable[[], datetime] = utcnow):
        self.demo_accounts = demo_accounts
        self._store = store
        self._catalog = catalog
        self._ledger = Ledger(store)
        self._clock = clock

    @property
    def catalog(self) -> Catalog:
        """The public catalog: products, domains, roles. Holds no private data."""
        return self._catalog

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

    def close(self) -> None:
        self._store.dispose()

    # --- budgets -----------------------------------------------------------------------------

    def budget(self, principal: Principal, *, product: str) -> BudgetStatus:
        role = self._role(principal)
        return self._ledger.status(tenant=principal.tenant, principal=principal.subject,
                                   product=self._catalog.product(product).id,
                                   cap=role.budget_epsilon, today=self._clock().date())

    # --- releases ----------------------------------------------------------------------------

    def preview(self, principal: Principal, query: Query) -> Preview:
        """What ``release`` would cost and how accurate it would be; spends nothing."""
        product, mechanism, epsilon = self._plan(principal, query)
        data_version = self._data_version(principal.tenant, product)
        key = self._query_key(principal, query, data_version)
        with self._store.read() as session:
            reused = session.scalar(select(ReleaseRow.id).where(ReleaseRow.query_key == key))
        status = self.budget(principal, product=product.id)
        return Preview(
            epsilon=Epsilon(0.0) if reused else epsilon, reused=reused is not None,
            mechanism=mechanism.name if mechanism else "none (k-threshold only)",
            noise_scale=mechanism.scale if mechanism else None,
            interval_half_width=mechanism.half_width if mechanism else None,
            remaining=status.remaining, cap=status.cap)

    def release(self, principal: Principal, query: Query) -> Release:
        """Answer ``query`` for ``principal`` through every privacy rule, or refuse and say why."""
        try:
            return self._release(principal, query)
        except VeilError as exc:
            audit(self._store, principal=principal.subject, tenant=principal.tenant,
                  role=principal.role, action="release", target=f"{query.product}.{query.metric}",
                  outcome="refused", detail={"reason": str(exc), "query": query.canonical()})
            raise

    def _release(self, principal: Principal, query: Query) -> Release:
        product, mechanism, epsilon = self._plan(principal, query)
        data_version = self._data_version(principal.tenant, product)
        key = self._query_key(principal, query, data_version)
        stored = self._stored(key)
        if stored is not None:
            return stored
        role = self._role(principal)
        entry = None
        if epsilon.value > 0:
            entry = self._ledger.reserve(
                tenant=principal.tenant, principal=principal.subject, role=principal.role,
                product=product.id, epsilon=epsilon, cap=role.budget_epsilon,
                today=self._clock().date())
        try:
            cells = self._compute(principal, query, product, mechanism)
            release_id = str(uuid.uuid4())
            digest = _digest(cells)
            created = self._clock()
            with self._store.write.begin() as session:
                session.add(ReleaseRow(
                    id=release_id, query_key=key, tenant_id=principal.tenant,
                    principal=principal.subject, role=principal.role, product_id=product.id,
                    query=query.canonical(), policy_version=self._catalog.version,
                    data_version=data_version,
                    mechanism=mechanism.name if mechanism else "none",
                    epsilon=epsilon.value, cells=[c.to_json() for c in cells], digest=digest,
                    published=False, created_at=created))
                if entry is not None:
                    self._ledger.commit(session, entry, release_id=release_id)
        except IntegrityError:
            # An identical query won the race and stored its release first: serve that one.
            if entry is not None:
                self._ledger.refund(entry)
            stored = self._stored(key)
            if stored is None:
                raise
            return stored
        except BaseException:
            if entry is not None:
                self._ledger.refund(entry)
            raise
        return Release(
            id=release_id, tenant=principal.tenant, product=product.id, query=query,
            cells=tuple(cells), epsilon=epsilon, charged=epsilon, reused=False,
            mechanism=mechanism.name if mechanism else "none", k=product.k,
            confidence=self._catalog.policy.interval_confidence,
            privacy_unit=product.privacy_unit, policy_version=self._catalog.version,
            data_version=data_version, digest=digest, created_at=created,
            guarantee=guarantee_text(product, epsilon.value))

    # --- internals ---------------------------------------------------------------------------

    def _role(self, principal: Principal) -> RoleSpec:
        role = self._catalog.roles.get(principal.role)
        if role is None:
            raise AccessDenied(f"role {principal.role!r} is not defined in the policy")
        return role

    def _plan(self, principal: Principal, query: Query
              ) -> tuple[ProductSpec, CountMechanism | None, Epsilon]:
        """Authorise and validate; return the product, its mechanism and the ε it will cost."""
        role = self._role(principal)
        self._catalog.tenant(principal.tenant)
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
        if query.level not in role.privacy_levels:
            raise AccessDenied(f"the {role.title} role may not request privacy level "
                               f"{query.level!r}; allowed: {list(role.privacy_levels) or 'none'}")
        if level.noisy and role.budget_epsilon <= 0:
            raise AccessDenied(f"the {role.title} role has no query budget; it reads published "
                               f"releases only")
        self._check_dimensions(principal, role, product, query)
        self._check_window(product, query)
        sensitivity = count_sensitivity(product, metric)
        if not level.noisy:
            return product, None, Epsilon(0.0)
        mechanism = discrete_laplace(sensitivity=sensitivity, epsilon=level.epsilon,
                                     confidence=self._catalog.policy.interval_confidence)
        return product, mechanism, Epsilon(mechanism.epsilon)

    def _check_dimensions(self, principal: Principal, role: RoleSpec, product: ProductSpec,
                          query: Query) -> None:
        if len(query.group_by) > self._catalog.policy.max_group_by:
            raise QueryRefused(f"at most {self._catalog.policy.max_group_by} group-by dimensions "
                               f"are allowed, got {len(query.group_by)}")
        if query.group_by != ("month",):
            raise QueryRefused(f"this release path groups by month only, got {query.group_by!r}")
        tenant_districts = self._catalog.districts_of(principal.tenant)
        domains = {
            "state": self._catalog.tenant(principal.tenant).states,
            "district": tuple(d.code for d in tenant_districts),
            "age_bucket": self._catalog.domains["age_bucket"],
            "gender": self._catalog.domains["gender"],
            "category": self._catalog.domains[product.category_domain],
        }
        for dimension, value in query.filters:
            if dimension not in FILTER_DIMENSIONS:
                raise QueryRefused(f"cannot filter on {dimension!r}; allowed: "
                                   f"{sorted(FILTER_DIMENSIONS)}")
            field = product.field(FILTER_DIMENSIONS[dimension])
            treatment = role.treatment[field.classification]
            if treatment not in {"show", "generalise"}:
                raise AccessDenied(f"the {role.title} role cannot see {field.title!r} "
                                   f"({field.classification}: {treatment}), so it cannot filter "
                                   f"on it")
            if value not in domains[dimension]:
                raise QueryRefused(f"{value!r} is not a {dimension} of tenant "
                                   f"{principal.tenant}; allowed: {list(domains[dimension])}")

    def _check_window(self, product: ProductSpec, query: Query) -> None:
        policy = self._catalog.policy
        months = len(query.months)
        if product.published_series:
            if months > policy.max_series_months:
                raise QueryRefused(f"{product.id} series are limited to {policy.max_series_months}"
                                   f" months per query, asked for {months}")
        elif months * 31 > policy.max_window_days + 31:
            # A monthly query on a non-series product may cover the months of one ad-hoc window.
            raise QueryRefused(f"{product.id} is not a published series: ad-hoc queries may "
                               f"cover at most {policy.max_window_days} days, asked for "
                               f"{months} months")

    def _data_version(self, tenant: str, product: ProductSpec) -> int:
        with self._store.read() as session:
            version = session.scalar(select(ProductVersion.data_version).where(
                ProductVersion.tenant_id == tenant, ProductVersion.product_id == product.id))
        if version is None:
            raise QueryRefused(f"{product.title} has no materialised data for this tenant yet; "
                               f"an operator must run `veil materialize`")
        return version

    def _query_key(self, principal: Principal, query: Query, data_version: int) -> str:
        material = json.dumps({
            "tenant": principal.tenant, "role": principal.role,
            "policy_version": self._catalog.version, "data_version": data_version,
            "query": query.canonical(),
        }, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(material.encode()).hexdigest()

    def _stored(self, key: str) -> Release | None:
        with self._store.read() as session:
            row = session.scalar(select(ReleaseRow).where(ReleaseRow.query_key == key))
        if row is None:
            return None
        product = self._catalog.product(row.product_id)
        q = row.query
        query = Query(product=q["product"], metric=q["metric"],
                      start=date.fromisoformat(q["start"]), end=date.fromisoformat(q["end"]),
                      level=q["level"], group_by=tuple(q["group_by"]),
                      filters=tuple(tuple(f) for f in q["filters"]))
        return Release(
            id=row.id, tenant=row.tenant_id, product=row.product_id, query=query,
            cells=tuple(Cell.from_json(c) for c in row.cells), epsilon=Epsilon(row.epsilon),
            charged=Epsilon(0.0), reused=True, mechanism=row.mechanism, k=product.k,
            confidence=self._catalog.policy.interval_confidence,
            privacy_unit=product.privacy_unit, policy_version=row.policy_version,
            data_version=row.data_version, digest=row.digest, created_at=row.created_at,
            guarantee=guarantee_text(product, row.epsilon))

    def _compute(self, principal: Principal, query: Query, product: ProductSpec,
                 mechanism: CountMechanism | None) -> list[Cell]:
        # Tenant lock: the tenant comes from the principal, never from the query.
        statement = (
            select(CubeMonthly.period, func.sum(CubeMonthly.n_events))
            .where(CubeMonthly.tenant_id == principal.tenant,
                   CubeMonthly.product_id == product.id,
                   CubeMonthly.metric == query.metric,
                   CubeMonthly.period >= query.start, CubeMonthly.period <= query.end)
            .group_by(CubeMonthly.period)
        )
        for dimension, value in query.filters:
            statement = statement.where(getattr(CubeMonthly, FILTER_DIMENSIONS[dimension]) == value)
        with self._store.read() as session:
            true_counts = {period: int(total) for period, total in session.execute(statement)}
        months = query.months  # public key set: zero-filled, never taken from the data
        counts = [true_counts.get(month, 0) for month in months]
        noisy = mechanism(counts) if mechanism else counts
        cells = []
        for month, value in zip(months, noisy):
            key = (month.isoformat()[:7],)
            if value < product.k:
                cells.append(Cell(key=key, value=None, lower=None, upper=None,
                                  noise_scale=mechanism.scale if mechanism else None,
                                  status="suppressed"))
            elif mechanism:
                cells.append(Cell(key=key, value=float(value),
                                  lower=float(max(value - mechanism.half_width, 0.0)),
                                  upper=float(value + mechanism.half_width),
                                  noise_scale=mechanism.scale, status="noisy"))
            else:
                cells.append(Cell(key=key, value=float(value), lower=float(value),
                                  upper=float(value), noise_scale=None, status="exact"))
        return cells


def _digest(cells: list[Cell]) -> str:
    payload = json.dumps([c.to_json() for c in cells], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()
