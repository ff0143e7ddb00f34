"""Planning one release: who may ask what, at which level, with which mechanisms, for what ε.

Owns authorising and validating a query against the role, the tenant's privacy settings in
force and the catalog's public domains and limits, and choosing the mechanisms of each
geography level and the (ε, δ) a fresh release costs (``Plan``). Public policy only: it never
reads a store, a private value or a released number.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from data.catalog import Catalog, MetricSpec, ProductSpec, RoleSpec
from data.errors import AccessDenied, QueryRefused, VeilError

from privacy._settings import SettingsVersion, product_k
from privacy._cube import DIMENSIONS, GEO_LEVELS, Cube, breakdowns
from privacy._engine import Measured, release_loss, split_epsilon, thresholds
from privacy._local import LocalRandomizer
from privacy._mechanisms import discrete_gaussian, discrete_laplace, float_laplace
from privacy._sensitivity import count_sensitivity, sum_sensitivity
from privacy._values import Delta, Epsilon, Principal, PrivacyLoss, Query, Threshold

__all__ = ["Applied", "Plan", "Planner"]


class Applied(NamedTuple):
    """A product's k and a level's ε under a tenant's settings, and what of them keys stored
    releases: only what differs from the catalog (empty otherwise, so keys match the
    catalog's and unchanged settings keep the stored releases they always had)."""

    k: int
    level_epsilon: float
    key_settings: dict


class Mechanisms(NamedTuple):
    """The geography levels of a query, finest first, and the mechanisms of each."""

    levels: tuple[str, ...]
    measured: tuple[Measured, ...]


@dataclass(frozen=True)
class Plan:
    """An authorised, validated query: its mechanisms per level and what a fresh release costs."""

    product: ProductSpec
    metric: MetricSpec
    geo: str                          # finest geography of the query
    levels: tuple[str, ...]           # geo levels from the finest up to the tenant
    measured: tuple[Measured, ...]    # mechanisms per level
    loss: PrivacyLoss                 # what a fresh release costs: its composition's map(d_in)
    mechanism: str
    settings: SettingsVersion         # the tenant's privacy settings in force (D8)
    k: int                            # the product's k under them
    level_epsilon: float              # the level's ε under them (0: anonymized)
    cap: float                        # the role's budget per window under them
    #: what stored releases and periods are keyed by besides the query (``Applied``)
    key_settings: dict = dataclasses.field(default_factory=dict)
    #: a product randomised at collection, grouped by category: the reports' randomiser and
    #: the category's key position; its cells are released jointly and debiased
    randomised: LocalRandomizer | None = None
    category_at: int | None = None

    @property
    def epsilon(self) -> Epsilon:
        return self.loss.epsilon

    @property
    def delta(self) -> Delta:
        """The policy's δ once for Gaussian noise, else 0."""
        return self.loss.delta


class Planner:
    """Plans releases from the catalog and the tenant's settings in force (``effective``)."""

    def __init__(self, catalog: Catalog, cube: Cube, *,
                 effective: Callable[[str], SettingsVersion]):
        self._catalog = catalog
        self._cube = cube
        self._effective = effective

    def role(self, principal: Principal) -> RoleSpec:
        role = self._catalog.roles.get(principal.role)
        if role is None:
            raise AccessDenied(f"role {principal.role!r} is not defined in the policy")
        return role

    def max_months(self, product: str) -> int:
        """The most months one query of ``product`` may cover (public policy, no data)."""
        spec = self._catalog.product(product)
        policy = self._catalog.policy
        if spec.published_series:
            return policy.max_series_months
        # A monthly query on a non-series product may cover the months of one ad-hoc window.
        return max(1, (policy.max_window_days + 31) // 31)

    def products(self, principal: Principal) -> tuple[ProductSpec, ...]:
        """The catalog's products ``principal``'s role may use, in catalog order: those
        without ``allowed_roles`` and those that list the role (``Gate.products``)."""
        role = self.role(principal)
        return tuple(p for p in self._catalog.products if _may_use(role, p))

    def check_product(self, principal: Principal, product: ProductSpec) -> None:
        """Raise AccessDenied unless ``principal``'s role may use ``product``."""
        role = self.role(principal)
        if _may_use(role, product):
            return
        titles = [self._catalog.roles[r].title for r in product.allowed_roles or ()]
        raise AccessDenied(f"the {role.title} role may not use {product.title} "
                           f"({product.id}): it is open to the {' and '.join(titles)} role"
                           f"{'s' if len(titles) > 1 else ''} only. Nothing was spent.")

    def aggregate_levels(self, principal: Principal, *,
                         switched_off: bool = False) -> tuple[str, ...]:
        """The privacy levels ``principal`` may release aggregates at now (``Gate``)."""
        role = self.role(principal)
        settings = self._effective(principal.tenant).settings
        if settings.cap(role.id) <= 0:
            return ()
        policy = self._catalog.policy
        return tuple(level for level in role.privacy_levels if policy.levels[level].noisy
                     and (switched_off or level not in settings.disabled_levels))

    def plan(self, principal: Principal, query: Query, *,
             settings: SettingsVersion | None = None) -> Plan:
        """Authorise and validate; return the mechanisms per level and the ε it will cost.
        ``settings``: the tenant's settings in force when the caller has read them already
        (the release's own read transaction), else they are read here."""
        role = self.role(principal)
        self._catalog.tenant(principal.tenant)
        if settings is None:
            settings = self._effective(principal.tenant)
        try:
            product = self._catalog.product(query.product)
        except VeilError:
            raise QueryRefused(f"unknown data product {query.product!r}") from None
        self.check_product(principal, product)
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
        applied = self.applied(settings, product, query.level)
        cap = settings.settings.cap(role.id)
        if level.noisy and cap <= 0:
            raise AccessDenied(f"the {role.title} role has no query budget; it reads published "
                               f"releases only")
        geo = self._check_dimensions(principal, role, product, query)
        self._check_window(product, query)
        randomised, category_at = self._randomised(product, metric, query)
        levels = GEO_LEVELS[GEO_LEVELS.index(geo):]
        measured = self._mechanisms(product, metric, applied.level_epsilon, len(levels))
        mechanism = measured[0].count.name + (
            f" + {measured[0].total.name}" if measured[0].total else "") + (
            " on randomised reports, debiased" if randomised else "")
        loss = release_loss(measured, delta=self._catalog.policy.delta)
        return Plan(product=product, metric=metric, geo=geo, levels=levels,
                    measured=measured, loss=loss, mechanism=mechanism, settings=settings,
                    k=applied.k, level_epsilon=applied.level_epsilon, cap=cap,
                    key_settings=applied.key_settings, randomised=randomised,
                    category_at=category_at)

    def _randomised(self, product: ProductSpec, metric: MetricSpec,
                    query: Query) -> tuple[LocalRandomizer | None, int | None]:
        """The randomiser of a product randomised at collection, and the category's key
        position, when the release estimates its categories (grouped by category).

        Without a category breakdown nothing needs debiasing: randomised response changes
        which category a report names, never how many reports there are. A filter on one
        category is refused: its estimate needs the counts of every category.
        """
        if (product.randomised_epsilon is None
                or metric.category_domain != product.category_domain):
            return None, None
        if any(dimension == "category" for dimension, _ in query.filters):
            raise QueryRefused(
                f"{product.id} is randomised at collection: one category's estimate needs the "
                f"reported counts of all of them, so group by category instead of filtering "
                f"on it. Nothing was spent.")
        dims = breakdowns(query)
        if "category" not in dims:
            return None, None
        return (LocalRandomizer(categories=self._catalog.domains[product.category_domain],
                                epsilon=product.randomised_epsilon),
                2 + dims.index("category"))

    def applied(self, settings: SettingsVersion, product: ProductSpec, level: str) -> Applied:
        """The product's k and the level's ε under the tenant's settings (``Applied``)."""
        k = product_k(settings.settings.k, product, policy_k=self._catalog.policy.k)
        default = self._catalog.policy.levels[level].epsilon
        tenant_epsilon = settings.settings.levels.get(level)
        epsilon = tenant_epsilon.value if tenant_epsilon is not None else default
        changed = k != product.k or epsilon != default
        return Applied(k=k, level_epsilon=epsilon,
                       key_settings={"k": k, "epsilon": epsilon} if changed else {})

    # --- mechanisms and what they cost (public: no data) ------------------------------------

    def _mechanisms(self, product: ProductSpec, metric: MetricSpec, epsilon: float,
                    levels: int) -> tuple[Measured, ...]:
        """The mechanisms of each geography level for a level ε (0: exact, no noise)."""
        if epsilon <= 0:
            return tuple(Measured(count=None, total=None) for _ in range(levels))
        confidence = self._catalog.policy.interval_confidence
        measured = []
        for share in split_epsilon(epsilon, levels):
            if metric.release_measure == "count":
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

    def query_mechanisms(self, product: ProductSpec, query: Query, *,
                         level_epsilon: float) -> Mechanisms:
        """The geography levels of ``query`` and their mechanisms (public: no data)."""
        geo = next((d for d in query.group_by[1:] if d in GEO_LEVELS), "tenant")
        levels = GEO_LEVELS[GEO_LEVELS.index(geo):]
        level = self._catalog.policy.levels.get(query.level)
        noisy = level.noisy if level is not None else level_epsilon > 0
        return Mechanisms(levels, self._mechanisms(product, product.metric(query.metric),
                                                   level_epsilon if noisy else 0.0, len(levels)))

    def query_loss(self, product: ProductSpec, query: Query, *,
                   level_epsilon: float) -> PrivacyLoss:
        """What one fresh release of ``query`` costs: the composed (ε, δ) it protects at."""
        measured = self.query_mechanisms(product, query, level_epsilon=level_epsilon).measured
        return release_loss(measured, delta=self._catalog.policy.delta)

    def thresholds(self, product: ProductSpec, query: Query, *, k: int,
                   level_epsilon: float) -> tuple[Threshold, ...]:
        """The release threshold of each geography level of ``query`` (public: mechanisms only)."""
        levels, measured = self.query_mechanisms(product, query, level_epsilon=level_epsilon)
        cuts = thresholds(measured, k=k, empty_cell_rate=self._catalog.policy.empty_cell_rate)
        counts = product.metric(query.metric).release_measure == "count"
        if counts and product.randomised_epsilon is not None and "category" in breakdowns(query):
            counts = False  # debiased estimates: their interval is at the policy's level
        confidence = self._catalog.policy.interval_confidence
        return tuple(Threshold(level=name, count=cut,
                               empty_cell_rate=m.count.tail(cut) if m.count else 0.0,
                               coverage=(m.count.coverage if counts else confidence)
                               if m.count else 1.0)
                     for name, cut, m in zip(levels, cuts, measured))

    def _count_mechanism(self, product: ProductSpec, metric: MetricSpec, epsilon: float):
        confidence = self._catalog.policy.interval_confidence
        sensitivity = count_sensitivity(product, metric)
        if product.noise == "gaussian":
            # L2 bound of the count vector: at worst all N events of a person-day in one cell
            return discrete_gaussian(sensitivity=sensitivity, epsilon=epsilon,
                                     delta=self._catalog.policy.delta, confidence=confidence)
        return discrete_laplace(sensitivity=sensitivity, epsilon=epsilon, confidence=confidence)

    # --- what a role may group by and filter on -------------------------------------------

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
            if dimension in GEO_LEVELS:
                if geo != "tenant":
                    raise QueryRefused(f"group by one geography at a time, got {geo!r} and "
                                       f"{dimension!r}")
                geo = dimension
        domains = self._cube.domains(principal.tenant, product, product.metric(query.metric))
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
        """The dimensions ``principal``'s role may group by or filter on in ``product``."""
        role = self.role(principal)
        spec = self._catalog.product(product)
        return tuple(d for d in DIMENSIONS if _treatment(role, spec, d) == "show")

    def _visible(self, role: RoleSpec, product: ProductSpec, dimension: str, *, use: str) -> None:
        """Group-by and filter rights follow the treatment table that decides what is shown:
        only a field the role sees as stored. A generalised field (H3 cell → district) is
        seen only in its coarser form, so grouping by the raw one would undo it."""
        field = product.field(DIMENSIONS[dimension])
        treatment = _treatment(role, product, dimension)
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


def _may_use(role: RoleSpec, product: ProductSpec) -> bool:
    """A product restricted to some roles (``allowed_roles``) is theirs only."""
    return product.allowed_roles is None or role.id in product.allowed_roles


def _treatment(role: RoleSpec, product: ProductSpec, dimension: str) -> str:
    return role.treatment[product.field(DIMENSIONS[dimension]).classification]


def _shorten(values: tuple[str, ...]) -> str:
    shown = list(values[:12])
    return f"{shown}{' …' if len(values) > 12 else ''}"
