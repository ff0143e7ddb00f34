"""Data products: their fields, metrics and KPI definition versions, and how they are loaded.

Owns the product value objects (``ProductSpec``, ``MetricSpec``, ``MetricVersion``,
``FieldSpec``) and reading them from ``products.toml``: each product's vertical, store, event
types, category domain, k, contribution bounds (per subject and day, and per month when
declared), noise, raw-event retention and metrics with clamping bounds. It never touches the
database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from data.catalog._policy import Policy
from data.catalog._toml import _File, _unique
from data.months import month_start


CLASSIFICATIONS = ("direct_identifier", "quasi_identifier", "sensitive", "public")
KINDS = ("metric_set", "operational_list", "compliance_dataset")
MEASURES = ("count", "sum", "mean")
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
        metrics = []
        for j, metric in enumerate(f.get(spec, "metric", where, list, [])):
            mwhere = f"{where}.metric[{j}]"
            metrics.append(_load_metric(f, metric, mwhere, event_types, domains,
                                        category_domain))
        _unique(f, [m.id for m in metrics], f"{where}.metric[].id")
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
        ))
    _unique(f, [p.id for p in products], "product[].id")
    return tuple(products)


def _load_metric(f: _File, spec: dict, where: str, event_types, domains: dict,
                 product_domain: str) -> MetricSpec:
    measure = f.one_of(spec, "measure", where, set(MEASURES))
    category_domain = f.one_of(spec, "category_domain", where, set(domains), product_domain)
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
    category = f.get(spec, "category", where, str, None)
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
    )


def _retention(f: _File, spec: dict, where: str, store: str) -> int | None:
    """``raw_retention_days`` if declared: at least MIN_RETENTION_DAYS, and only for products
    whose raw events are kept in an event store (registrations are records, not events)."""
    if "raw_retention_days" not in spec:
        return None
    if store == "registrations":
        raise f.fail(f"{where}.raw_retention_days",
                     "applies to event products only; registrations are kept as records")
    return f.positive(spec, "raw_retention_days", where, int, MIN_RETENTION_DAYS)


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
