"""Data products: their fields, metrics and KPI definition versions, and how they are loaded.

Owns the product value objects (``ProductSpec``, ``MetricSpec``, ``MetricVersion``,
``FieldSpec``) and reading them from ``products.toml``: each product's vertical, store, event
types and category domain (per event type, when declared: the ingestion whitelist), k,
contribution bounds (per subject and day, and per month when declared), noise, raw-event
retention and metrics with clamping bounds. It never touches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType

from data.catalog._policy import Policy
from data.catalog._toml import _File, _unique
from data.months import month_start


CLASSIFICATIONS = ("direct_identifier", "quasi_identifier", "sensitive", "public")
KINDS = ("metric_set", "operational_list", "compliance_dataset")
MEASURES = ("count", "sum", "mean", "distinct")
#: what a distinct metric counts each person once per: a month-aligned week or the month
DISTINCT_PER = ("week", "month")
#: the cells of a distinct metric with a lookback (materialize writes exactly these values)
LOOKBACK_DOMAIN = "learner_status"
VERTICALS = ("health", "education", "social_protection")
STORES = ("health_events", "education_events", "social_events", "registrations")
#: the shortest raw-event retention: a month stays open for late events at least this long
MIN_RETENTION_DAYS = 31


@dataclass(frozen=True)
class FieldSpec:
    name: str
    classification: str
    title: str
    generalise_to: str | None = None


@dataclass(frozen=True)
class MetricVersion:
    version: int
    effective_from: date
    definition: str


@dataclass(frozen=True)
class MetricSpec:
    id: str
    title: str
    measure: str
    event_type: str
    versions: tuple[MetricVersion, ...]
    category: str | None = None
    value_bounds: tuple[float, float] | None = None
    #: The domain of this metric's cube ``category`` column: the product's ``category_domain``
    #: unless the metric declares its own (``"none"``: the metric adds up every category of
    #: its events into the one value "-"). Always resolved by the loader.
    category_domain: str = "none"
    #: A ``distinct`` metric counts each person once per this period of a month: "week" (the
    #: month's four weeks, days 1–7, 8–14, 15–21 and 22 to its end, so a week never crosses
    #: the month of the privacy unit) or "month". None for every other measure.
    distinct_per: str | None = None
    #: How many months before each month a ``distinct`` metric's cells read (1: learner
    #: status, new / returning / churned against the month before). Its releases draw on the
    #: lifetime budget of those months too (``privacy._budget.budget_terms``).
    lookback_months: int = 0

    @property
    def release_measure(self) -> str:
        """How the gate releases this metric: "count" for a count of events or of distinct
        persons (integer counts: the same noise, thresholds, roll-up and derivation), else
        the measure itself ("sum", "mean")."""
        return "count" if self.measure == "distinct" else self.measure

    def version_at(self, day: date) -> MetricVersion:
        current = self.versions[0]
        for version in self.versions:
            if version.effective_from <= day:
                current = version
        return current


@dataclass(frozen=True)
class ProductSpec:
    id: str
    vertical: str
    title: str
    owner: str
    kind: str
    store: str
    event_types: tuple[str, ...]
    category_domain: str
    k: int
    max_events_per_subject_per_day: int
    privacy_unit: str
    freshness_slo_hours: int
    published_series: bool
    fields: tuple[FieldSpec, ...]
    metrics: tuple[MetricSpec, ...]
    noise: str = "laplace"   # laplace (pure ε) | gaussian (ρ-zCDP, charged as ε at policy δ)
    #: The person-month bound: at most this many events of one subject in one calendar month
    #: (UTC), enforced at ingestion beside the daily bound. Declared: the privacy unit is one
    #: person's month, and sensitivity follows from this bound. None: the unit is a person-day.
    max_events_per_subject_per_month: int | None = None
    #: Raw-event retention: events are kept this many days after their month ends. A month
    #: whose last day is older closes (ingestion refuses its events), and a day later a
    #: retention run purges its raw events; its aggregate cube rows are kept, final. None: raw
    #: events are kept for good.
    raw_retention_days: int | None = None
    #: The roles that may use this product at all (release, preview, export, list it in a
    #: picker), checked against roles.toml by the catalog loader. None: every role whose
    #: pages and levels allow it. The gate enforces it (``Gate.products``, the planner).
    allowed_roles: tuple[str, ...] | None = None
    #: Randomised at collection (``randomised = { epsilon = … }``): every report's category
    #: is k-ary randomised response over ``category_domain`` at this per-report ε, applied by
    #: the source before sending (``data.ingest.client``). The collector accepts only reports
    #: that declare this ε; the gate releases debiased estimates (``privacy._local``). None:
    #: categories are true answers.
    randomised_epsilon: float | None = None
    #: Event type → the category domain of its events (``[product.event_categories]``): the
    #: whitelist ingestion checks a category against, and each metric's default domain. A type
    #: not named here has the product's ``category_domain``. Left out of the hash: a mapping
    #: is not hashable, and the product's id already tells products apart.
    event_categories: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False)

    def domain_of(self, event_type: str) -> str:
        """The category domain of ``event_type``'s events: its entry in ``event_categories``,
        else the product's ``category_domain``."""
        return self.event_categories.get(event_type, self.category_domain)

    def first_open_month(self, today: date) -> date | None:
        """The oldest month whose raw events are still accepted and kept on ``today`` (None:
        no retention). A month is closed once its last day is more than
        ``raw_retention_days`` days before ``today``."""
        if self.raw_retention_days is None:
            return None
        return month_start(today - timedelta(days=self.raw_retention_days))

    def purge_before(self, today: date) -> date | None:
        """Months before this one are purged by a retention run on ``today``: closed a day
        earlier, so no ingestion run that began before they closed is still storing into them."""
        if self.raw_retention_days is None:
            return None
        return month_start(today - timedelta(days=self.raw_retention_days + 1))

    @property
    def unit_period(self) -> str:
        """The period the privacy unit covers: "month" or "day"."""
        return "day" if self.max_events_per_subject_per_month is None else "month"

    @property
    def unit_bound(self) -> int:
        """The most events one privacy unit (a person's day or month) holds."""
        return (self.max_events_per_subject_per_day if self.max_events_per_subject_per_month
                is None else self.max_events_per_subject_per_month)

    def metric(self, metric_id: str) -> MetricSpec:
        for metric in self.metrics:
            if metric.id == metric_id:
                return metric
        raise KeyError(metric_id)

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)


def _load_fields(f: _File, table: dict, where: str) -> tuple[FieldSpec, ...]:
    fields = []
    for name, spec in table.items():
        here = f"{where}.{name}"
        if not isinstance(spec, dict):
            raise f.fail(here, "must be a table with a classification")
        fields.append(FieldSpec(
            name=name,
            classification=f.one_of(spec, "classification", here, set(CLASSIFICATIONS)),
            title=f.get(spec, "title", here, str),
            generalise_to=f.get(spec, "generalise_to", here, str, None),
        ))
    return tuple(fields)


def _load_products(f: _File, domains: dict, policy: Policy) -> tuple[ProductSpec, ...]:
    event_fields = _load_fields(f, f.get(f.doc, "event_fields", "", dict), "event_fields")
    products = []
    for i, spec in enumerate(f.get(f.doc, "product", "", list)):
        where = f"product[{i}]"
        product_id = f.get(spec, "id", where, str)
        where = f"product[{product_id}]"
        store = f.one_of(spec, "store", where, set(STORES))
        fields = (
            _load_fields(f, f.get(spec, "fields", where, dict), f"{where}.fields")
            if store == "registrations" else event_fields
        )
        event_types = f.str_list(spec, "event_types", where)
        category_domain = f.one_of(spec, "category_domain", where, set(domains))
        event_categories = _event_categories(f, spec, where, event_types, domains)
        metrics = []
        for j, metric in enumerate(f.get(spec, "metric", where, list, [])):
            mwhere = f"{where}.metric[{j}]"
            metrics.append(_load_metric(f, metric, mwhere, event_types, domains,
                                        category_domain, event_categories))
        _unique(f, [m.id for m in metrics], f"{where}.metric[].id")
        for j, metric in enumerate(metrics):
            if metric.measure == "distinct" and "max_events_per_subject_per_month" not in spec:
                # a person-day unit would count a person again on every day of the period
                raise f.fail(f"{where}.metric[{j}].measure",
                             "a distinct metric counts persons per week or month: its product "
                             "needs a person-month unit (max_events_per_subject_per_month)")
        kind = f.one_of(spec, "kind", where, set(KINDS))
        if kind == "metric_set" and not metrics:
            raise f.fail(f"{where}.metric", "a metric_set product needs at least one metric")
        k = f.positive(spec, "k", where, int, 2, policy.k)
        if k < policy.k:
            raise f.fail(f"{where}.k", f"must be >= the policy's k={policy.k}, got {k}")
        products.append(ProductSpec(
            id=product_id,
            vertical=f.one_of(spec, "vertical", where, set(VERTICALS)),
            title=f.get(spec, "title", where, str),
            owner=f.get(spec, "owner", where, str),
            kind=kind,
            store=store,
            event_types=event_types,
            category_domain=category_domain,
            k=k,
            max_events_per_subject_per_day=f.positive(
                spec, "max_events_per_subject_per_day", where, int, 1),
            privacy_unit=f.get(spec, "privacy_unit", where, str),
            freshness_slo_hours=f.positive(spec, "freshness_slo_hours", where, int, 1),
            published_series=f.get(spec, "published_series", where, bool),
            fields=fields,
            metrics=tuple(metrics),
            noise=f.one_of(spec, "noise", where, {"laplace", "gaussian"}, "laplace"),
            max_events_per_subject_per_month=_monthly_bound(f, spec, where),
            raw_retention_days=_retention(f, spec, where, store),
            allowed_roles=_allowed_roles(f, spec, where),
            randomised_epsilon=_randomised(f, spec, where, domains[category_domain], metrics),
            event_categories=MappingProxyType(event_categories),
        ))
    _unique(f, [p.id for p in products], "product[].id")
    return tuple(products)


def _load_metric(f: _File, spec: dict, where: str, event_types, domains: dict,
                 product_domain: str, event_categories: Mapping[str, str] | None = None
                 ) -> MetricSpec:
    measure = f.one_of(spec, "measure", where, set(MEASURES))
    # The domain of the metric's events' categories: its event type's, when the product
    # declares per-type domains, else the product's. It is the metric's default domain.
    events_domain = product_domain
    if event_categories:
        event_type = f.one_of(spec, "event_type", where, set(event_types))
        events_domain = event_categories.get(event_type, product_domain)
    category_domain = f.one_of(spec, "category_domain", where, set(domains), events_domain)
    if event_categories and category_domain not in {events_domain, "none"}:
        raise f.fail(f"{where}.category_domain",
                     f"the events of {spec['event_type']!r} have categories from "
                     f"{events_domain!r} (event_categories): a metric of them may use that "
                     f"domain or \"none\", got {category_domain!r}")
    categories = domains[category_domain]
    bounds = f.get(spec, "value_bounds", where, list, None)
    if measure in {"sum", "mean"}:
        if bounds is None:
            raise f.fail(f"{where}.value_bounds",
                         f"a {measure} metric needs clamping bounds [lower, upper]")
    if bounds is not None:
        if (len(bounds) != 2 or not all(isinstance(b, (int, float)) for b in bounds)
                or not bounds[0] < bounds[1]):
            raise f.fail(f"{where}.value_bounds", f"must be [lower, upper] with lower < upper, "
                                                  f"got {bounds!r}")
        bounds = (float(bounds[0]), float(bounds[1]))
    distinct_per, lookback_months = _distinct(f, spec, where, measure, bounds, category_domain)
    category = f.get(spec, "category", where, str, None)
    if event_categories:
        # a fixed category selects events, so it is one of the events' categories (the
        # metric may still report them all as "-")
        categories = domains[events_domain]
    if category is not None and category not in categories:
        raise f.fail(f"{where}.category", f"must be one of {list(categories)}, got {category!r}")
    versions = []
    for j, version in enumerate(f.get(spec, "version", where, list)):
        vwhere = f"{where}.version[{j}]"
        effective = f.get(version, "effective_from", vwhere, (str, date))
        if isinstance(effective, str):
            try:
                effective = date.fromisoformat(effective)
            except ValueError:
                raise f.fail(f"{vwhere}.effective_from",
                             f"must be a date YYYY-MM-DD, got {effective!r}") from None
        versions.append(MetricVersion(
            version=f.positive(version, "version", vwhere, int, 1),
            effective_from=effective,
            definition=f.get(version, "definition", vwhere, str),
        ))
    if not versions:
        raise f.fail(f"{where}.version", "a metric needs at least one KPI definition version")
    numbers = [v.version for v in versions]
    if numbers != list(range(1, len(numbers) + 1)):
        raise f.fail(f"{where}.version", f"versions must be numbered 1, 2, … in order, "
                                         f"got {numbers}")
    dates = [v.effective_from for v in versions]
    if dates != sorted(dates) or len(set(dates)) != len(dates):
        raise f.fail(f"{where}.version", "effective_from dates must strictly increase")
    return MetricSpec(
        id=f.get(spec, "id", where, str),
        title=f.get(spec, "title", where, str),
        measure=measure,
        event_type=f.one_of(spec, "event_type", where, set(event_types)),
        versions=tuple(versions),
        category=category,
        value_bounds=bounds,
        category_domain=category_domain,
        distinct_per=distinct_per,
        lookback_months=lookback_months,
    )


def _distinct(f: _File, spec: dict, where: str, measure: str, bounds,
              category_domain: str) -> tuple[str | None, int]:
    """``distinct_per`` and ``lookback_months`` of a metric: required (and only allowed) for a
    ``distinct`` measure, which counts persons, so it has no value to clamp; a lookback only
    against whole months (a week never reaches into another month, the privacy unit), whose
    cells are the statuses of ``LOOKBACK_DOMAIN``."""
    if measure != "distinct":
        for key in ("distinct_per", "lookback_months"):
            if key in spec:
                raise f.fail(f"{where}.{key}", f"applies to measure = \"distinct\" only, this "
                                               f"metric's measure is {measure!r}")
        return None, 0
    if bounds is not None:
        raise f.fail(f"{where}.value_bounds", "a distinct metric counts persons; it has no "
                                              "value to clamp")
    per = f.one_of(spec, "distinct_per", where, set(DISTINCT_PER))
    lookback = f.get(spec, "lookback_months", where, int, 0)
    if lookback not in (0, 1):
        raise f.fail(f"{where}.lookback_months", f"must be 0 or 1, got {lookback!r}")
    if lookback and per != "month":
        raise f.fail(f"{where}.lookback_months", f"a lookback needs distinct_per = \"month\", "
                                                 f"got distinct_per = {per!r}")
    if lookback and category_domain != LOOKBACK_DOMAIN:
        raise f.fail(f"{where}.category_domain",
                     f"a metric with a lookback counts persons by status: it needs "
                     f"category_domain = {LOOKBACK_DOMAIN!r}, got {category_domain!r}")
    return per, lookback


def _event_categories(f: _File, spec: dict, where: str, event_types: tuple[str, ...],
                      domains: dict) -> dict[str, str]:
    """``[product.event_categories]`` if declared: event type → category domain, each key a
    declared event type and each value a known domain (empty: every type has the product's)."""
    if "event_categories" not in spec:
        return {}
    here = f"{where}.event_categories"
    table = f.get(spec, "event_categories", where, dict)
    if not table:
        raise f.fail(here, "must name at least one event type (leave the table out otherwise)")
    if "randomised" in spec:
        # randomised response is over the product's one category domain
        raise f.fail(here, "a product randomised at collection has one category domain "
                           "(category_domain); it cannot declare one per event type")
    for event_type in table:
        if event_type not in event_types:
            raise f.fail(f"{here}.{event_type}", f"is not one of the product's event_types "
                                                 f"{list(event_types)}")
        f.one_of(table, event_type, here, set(domains))
    return dict(table)


def _retention(f: _File, spec: dict, where: str, store: str) -> int | None:
    """``raw_retention_days`` if declared: at least MIN_RETENTION_DAYS, and only for products
    whose raw events are kept in an event store (registrations are records, not events)."""
    if "raw_retention_days" not in spec:
        return None
    if store == "registrations":
        raise f.fail(f"{where}.raw_retention_days",
                     "applies to event products only; registrations are kept as records")
    return f.positive(spec, "raw_retention_days", where, int, MIN_RETENTION_DAYS)


def _randomised(f: _File, spec: dict, where: str, categories: tuple[str, ...],
                metrics: list[MetricSpec]) -> float | None:
    """The per-report ε of a product randomised at collection, if declared.

    Randomised response needs a declared domain of at least two categories, and only plain
    event counts can be debiased: a count of every category of a cell group, jointly. So each
    metric counts events (no sum, mean or distinct; no fixed ``category``: one category's
    estimate needs the counts of all of them) over the product's domain or none.
    """
    if "randomised" not in spec:
        return None
    here = f"{where}.randomised"
    table = f.get(spec, "randomised", where, dict)
    unknown = set(table) - {"epsilon"}
    if unknown:
        raise f.fail(here, f"unknown keys {sorted(unknown)}; declare {{ epsilon = … }}")
    epsilon = table.get("epsilon")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
            or not 0 < epsilon < 50:
        raise f.fail(f"{here}.epsilon", f"must be a number in (0, 50), got {epsilon!r}")
    if len(categories) < 2:
        raise f.fail(here, f"randomised response needs a category domain of at least two "
                           f"values, got {list(categories)}")
    for metric in metrics:
        if metric.measure != "count" or metric.category is not None or \
                metric.category_domain not in {spec.get("category_domain"), "none"}:
            raise f.fail(f"{where}.metric[{metric.id}]",
                         "a randomised product's metrics count events over its category "
                         "domain (or none), with no fixed category: only those are debiased")
    return float(epsilon)


def _monthly_bound(f: _File, spec: dict, where: str) -> int | None:
    """``max_events_per_subject_per_month`` if declared: at least the daily bound (else the
    daily bound could never be reached and the declaration contradicts itself)."""
    if "max_events_per_subject_per_month" not in spec:
        return None
    monthly = f.positive(spec, "max_events_per_subject_per_month", where, int, 1)
    daily = spec.get("max_events_per_subject_per_day", 1)
    if isinstance(daily, int) and monthly < daily:
        raise f.fail(f"{where}.max_events_per_subject_per_month",
                     f"must be >= max_events_per_subject_per_day ({daily}), got {monthly}")
    return monthly


def _allowed_roles(f: _File, spec: dict, where: str) -> tuple[str, ...] | None:
    """``allowed_roles`` if declared: a non-empty list of distinct role names (checked against
    roles.toml by ``_check_allowed_roles`` once the roles are read). A restricted product is
    never a published series: donors read those, and the publication identity releases them."""
    if "allowed_roles" not in spec:
        return None
    roles = f.str_list(spec, "allowed_roles", where)
    if not roles:
        raise f.fail(f"{where}.allowed_roles", "must name at least one role (leave the key out "
                                               "to allow every role)")
    _unique(f, list(roles), f"{where}.allowed_roles")
    if spec.get("published_series") is True:
        raise f.fail(f"{where}.allowed_roles", "a product restricted to some roles cannot be a "
                                               "published series (set published_series = false)")
    return roles


def _check_allowed_roles(f: _File, products: tuple[ProductSpec, ...], roles) -> None:
    """Every role a product's ``allowed_roles`` names is defined in roles.toml, and no role
    reads a restricted product record by record (``record_products``) without being allowed."""
    for product in products:
        for role in product.allowed_roles or ():
            if role not in roles:
                raise f.fail(f"product[{product.id}].allowed_roles",
                             f"unknown role {role!r}; roles.toml defines {sorted(roles)}")
        for role in roles.values():
            if (product.allowed_roles is not None and product.id in role.record_products
                    and role.id not in product.allowed_roles):
                raise f.fail(f"product[{product.id}].allowed_roles",
                             f"role {role.id!r} reads {product.id} record by record "
                             f"(roles.toml record_products) but is not allowed to use it")
