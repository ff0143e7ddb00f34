"""The release log and its stored periods: keys, reads, writes and published snapshots.

Owns how a release is keyed (what was computed, not who asked), reading stored series and
periods, the data version and consent freshness a release must see, storing a release with its
periods, and turning a stored row back into a ``Release``. It never computes a value: what it
stores has passed the engine, and what it returns was stored so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import namedtuple
from collections.abc import Callable, Sequence
from datetime import date
from typing import NamedTuple

from sqlalchemy import bindparam, func, insert, select

from data.catalog import Catalog, ProductSpec
from data.prepared import Batch, Prepared
from data.errors import QueryRefused, VeilBug
from data.models import ProductVersion, ReleasePeriod, SubjectConsent
from data.models import Release as ReleaseRow

from privacy._settings import SettingsVersion, settings_version_of
from privacy._plan import Plan, Planner
from privacy._sensitivity import guarantee_text
from privacy._values import Cell, Delta, Epsilon, PeriodStatus, Query, Release

__all__ = ["Published", "ReleaseLog", "digest", "query_of"]

#: Stands for the value that differs in one text of many keys (``ReleaseLog.keys``).
_MARKER = "\u0000veil-key\u0000"
_MARKER_JSON = json.dumps(_MARKER)


def _hashed(material: str) -> str:
    return hashlib.sha256(material.encode()).hexdigest()


#: A stored release row as the release path reads it: the ``releases`` columns, in order.
StoredRelease = namedtuple("StoredRelease", [column.key for column in ReleaseRow.__table__.columns])


class Published(NamedTuple):
    """A tenant's published release rows, newest first, and each product's current version."""

    rows: list[ReleaseRow]
    current: dict[str, int]


class ReleaseLog:
    """Stored releases and periods of one store, read and written in the caller's sessions."""

    def __init__(self, catalog: Catalog, planner: Planner, *,
                 lifetime: Callable[..., tuple[PeriodStatus, ...]],
                 settings_at: Callable[[str, int], SettingsVersion]):
        self._catalog = catalog
        self._planner = planner
        self._lifetime = lifetime
        self._settings_at = settings_at

    # --- keys --------------------------------------------------------------------------------

    def key(self, tenant: str, data_version: int, plan: Plan, **extra) -> str:
        """What was computed, not who asked: tenant, query, level and settings, data and
        policy. Two roles allowed the same query (group-by and filter rights follow the
        treatment table, so an allowed query means the same computation for any role) share
        one release and pay once; every one of its months was drawn once from its lifetime."""
        return _hashed(self._material(tenant, data_version, plan, **extra))

    def keys(self, tenant: str, data_version: int, plan: Plan, *, vary: str, values: list,
             **extra) -> list[str]:
        """``key(tenant, data_version, plan, **extra, <vary>=value)`` for each of ``values``
        (JSON values), with the same bytes: the text is built once with a marker where the
        value goes. The marker is a control character's escape, which nothing keyed holds (a
        query refuses one); if it were found elsewhere the keys could be wrong: a bug, raised."""
        material = self._material(tenant, data_version, plan, **extra, **{vary: _MARKER})
        if material.count(_MARKER_JSON) != 1:
            raise VeilBug(f"a release key's text holds its marker more than once: {material!r}")
        before, _, after = material.partition(_MARKER_JSON)
        return [_hashed(before + json.dumps(value, sort_keys=True, separators=(",", ":"),
                                            default=str) + after) for value in values]

    def _material(self, tenant: str, data_version: int, plan: Plan, **extra) -> str:
        settings = {"tenant_settings": plan.key_settings} if plan.key_settings else {}
        return json.dumps({
            "tenant": tenant,
            "policy_version": self._catalog.version, "data_version": data_version,
            **settings, **extra,
        }, sort_keys=True, separators=(",", ":"), default=str)

    def series_key(self, tenant: str, query: Query, data_version: int, plan: Plan) -> str:
        return self.key(tenant, data_version, plan, query=query.canonical())

    def period_keys(self, tenant: str, query: Query, data_version: int,
                    plan: Plan) -> dict[date, str]:
        """The key of each atomic period of the series: the query without its window."""
        atomic = query.canonical()
        if query.period == "window":  # the whole window is the one atomic period
            return {query.start: self.key(tenant, data_version, plan, atomic=atomic)}
        del atomic["start"], atomic["end"]
        months = query.months
        return dict(zip(months, self.keys(tenant, data_version, plan, vary="month",
                                          values=[month.isoformat() for month in months],
                                          atomic=atomic)))

    # --- reads -------------------------------------------------------------------------------

    @staticmethod
    def stored_id(session, series_key: str) -> str | None:
        return session.scalar(select(ReleaseRow.id).where(ReleaseRow.query_key == series_key))

    @staticmethod
    def stored(session, series_key: str) -> StoredRelease | None:
        row = _STORED.first(session, {"key": series_key})
        return None if row is None else StoredRelease(*row)

    @staticmethod
    def existing_periods(session, period_keys: dict[date, str]) -> dict[str, list]:
        """Cells of the periods already released, by period key."""
        return dict(_EXISTING.rows(session, {"keys": list(period_keys.values())}))

    @staticmethod
    def data_version(session, tenant: str, product: ProductSpec) -> int:
        version = session.scalar(select(ProductVersion.data_version).where(
            ProductVersion.tenant_id == tenant, ProductVersion.product_id == product.id))
        if version is None:
            raise QueryRefused(f"{product.title} has no materialised data for this tenant yet; "
                               f"an operator must run `veil materialize`")
        return version

    @staticmethod
    def current_version(session, tenant: str, product: ProductSpec) -> int:
        """The product's data version, refused while a consent withdrawal is newer than its
        cube (``data_version`` and ``check_consent_applied`` in one prebuilt read)."""
        params = {"tenant": tenant, "product": product.id, "vertical": product.vertical}
        row = _VERSION.first(session, params)
        if row is None:
            raise QueryRefused(f"{product.title} has no materialised data for this tenant yet; "
                               f"an operator must run `veil materialize`")
        version, refreshed, latest = row
        _refuse_unapplied(product, latest, refreshed)
        return version

    @staticmethod
    def check_consent_applied(session, tenant: str, product: ProductSpec) -> None:
        """Refuse while a consent withdrawal is newer than the cube: never release its subject."""
        refreshed = session.scalar(select(ProductVersion.refreshed_at).where(
            ProductVersion.tenant_id == tenant, ProductVersion.product_id == product.id))
        latest = session.scalar(select(func.max(SubjectConsent.changed_at)).where(
            SubjectConsent.tenant_id == tenant, SubjectConsent.vertical == product.vertical,
            SubjectConsent.status == "withdrawn"))
        _refuse_unapplied(product, latest, refreshed)

    # --- writes ------------------------------------------------------------------------------

    @staticmethod
    def store(batch: Batch, release: dict, periods: list[dict]) -> None:
        """Queue on ``batch`` (the caller's write transaction's statements) the insert of a
        release row (``release``: its column values) and of its new periods, which reference
        the release, inserted first."""
        batch.add(_INSERT_RELEASE, release)
        batch.add(_INSERT_PERIODS, periods, many=True)

    # --- published snapshots -----------------------------------------------------------------

    def published_rows(self, session, tenant: str, *, product: str | None) -> Published:
        """The tenant's published rows, newest first, and the data version a snapshot of each
        product must have to be served (read in one read transaction)."""
        statement = (select(ReleaseRow)
                     .where(ReleaseRow.tenant_id == tenant, ReleaseRow.published)
                     .order_by(ReleaseRow.created_at.desc(), ReleaseRow.id))
        if product is not None:
            statement = statement.where(ReleaseRow.product_id == product)
        return Published(rows=list(session.scalars(statement).all()),
                         current=self._current_versions(session, tenant))

    def snapshots(self, published: Published) -> tuple[list[Release], list[Query]]:
        """Per series: the newest current snapshot, or the query of the newest stale one."""
        rows, current = published
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
                settings[version] = self._settings_at(row.tenant_id, version)
            spec = self._catalog.product(row.product_id)
            applied = self._planner.applied(settings[version], spec, q["level"])
            fresh[series] = self.to_release(
                row, spec, charged=Epsilon(0.0), reused=True, k=applied.k,
                level_epsilon=applied.level_epsilon)
        pending = [query_of(row.query) for series, row in stale.items() if series not in fresh]
        return (sorted(fresh.values(), key=lambda r: (r.product, r.query.metric)),
                sorted(pending, key=lambda q: (q.product, q.metric)))

    def _current_versions(self, session, tenant: str) -> dict[str, int]:
        """The data version a snapshot of each product must have to be served: the product's
        current one, unless a consent withdrawal is newer than its cube (then none is)."""
        withdrawn = {row.vertical: row.latest for row in session.execute(
            select(SubjectConsent.vertical, func.max(SubjectConsent.changed_at).label("latest"))
            .where(SubjectConsent.tenant_id == tenant, SubjectConsent.status == "withdrawn")
            .group_by(SubjectConsent.vertical))}
        vertical = {spec.id: spec.vertical for spec in self._catalog.products}
        current = {}
        for version in session.scalars(select(ProductVersion).where(
                ProductVersion.tenant_id == tenant)):
            latest = withdrawn.get(vertical.get(version.product_id))
            if latest is None or version.refreshed_at is None or latest <= version.refreshed_at:
                current[version.product_id] = version.data_version
        return current

    # --- a stored row as a Release -----------------------------------------------------------

    def to_release(self, row: ReleaseRow, product: ProductSpec, *, charged: Epsilon,
                   reused: bool, k: int, level_epsilon: float,
                   charged_delta: Delta = Delta(0.0), derived: int = 0,
                   lifetime: tuple[PeriodStatus, ...] | None = None,
                   cells: tuple[Cell, ...] | None = None) -> Release:
        """``row`` as a Release; ``cells`` are its cells when the caller already holds them
        (a fresh release built them from the same JSON), else read from the row."""
        query = query_of(row.query)
        # k and ε as the tenant's settings made them (the release is keyed by them)
        product = dataclasses.replace(product, k=k)
        return Release(
            id=row.id, tenant=row.tenant_id, product=row.product_id, query=query,
            cells=(cells if cells is not None
                   else tuple(Cell.from_json(c) for c in row.cells)),
            epsilon=Epsilon(row.epsilon),
            charged=charged, reused=reused, mechanism=row.mechanism, k=k,
            confidence=self._catalog.policy.interval_confidence,
            privacy_unit=product.privacy_unit, policy_version=row.policy_version,
            data_version=row.data_version, digest=row.digest, created_at=row.created_at,
            delta=Delta(row.delta), charged_delta=charged_delta,
            lifetime=(lifetime if lifetime is not None
                      else self._lifetime(row.tenant_id, row.product_id, query.months)),
            guarantee=guarantee_text(product, self._planner.query_loss(
                product, query, level_epsilon=level_epsilon)),
            published=row.published,
            measure=product.metric(query.metric).release_measure,
            thresholds=self._planner.thresholds(product, query, k=k,
                                                level_epsilon=level_epsilon),
            empty_cell_bound=self._catalog.policy.empty_cell_rate, derived=derived)


def query_of(q: dict) -> Query:
    """The query a stored release answered, from its canonical form."""
    return Query(product=q["product"], metric=q["metric"],
                 start=date.fromisoformat(q["start"]), end=date.fromisoformat(q["end"]),
                 level=q["level"], group_by=tuple(q["group_by"]),
                 filters=tuple(tuple(f) for f in q["filters"]), period=q.get("period", "month"))


def digest(cells: Sequence[Cell]) -> str:
    payload = json.dumps([c.to_json() for c in cells], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _refuse_unapplied(product: ProductSpec, latest, refreshed) -> None:
    """Refuse while a consent withdrawal is newer than the cube: never release its subject."""
    if latest is not None and refreshed is not None and latest > refreshed:
        raise QueryRefused(
            f"a consent withdrawal ({latest:%Y-%m-%d %H:%M} UTC) is not yet applied to "
            f"{product.title}; its aggregates are being rebuilt (`veil materialize`). "
            f"Nothing was spent; try again shortly.")


#: The release path's statements, prebuilt once (not per release) and sent on the driver's
#: cursor (``data.prepared``).
_releases = ReleaseRow.__table__
_STORED = Prepared(select(_releases).where(_releases.c.query_key == bindparam("key")))
_EXISTING = Prepared(select(ReleasePeriod.period_key, ReleasePeriod.cells).where(
    ReleasePeriod.period_key.in_(bindparam("keys", expanding=True))), expanding=("keys",))
_INSERT_RELEASE = Prepared(insert(_releases).values(
    {column.key: bindparam(column.key, type_=column.type) for column in _releases.columns}))
_INSERT_PERIODS = Prepared(insert(ReleasePeriod.__table__).values(
    {name: bindparam(name, type_=ReleasePeriod.__table__.c[name].type)
     for name in ("period_key", "release_id", "tenant_id", "product_id", "period", "cells",
                  "measurement", "source", "derived")}))
_LATEST_WITHDRAWAL = select(func.max(SubjectConsent.changed_at)).where(
    SubjectConsent.tenant_id == bindparam("tenant"),
    SubjectConsent.vertical == bindparam("vertical"), SubjectConsent.status == "withdrawn")
#: The data version, when the cube was built and the latest withdrawal: one round trip.
_VERSION = Prepared(select(ProductVersion.data_version, ProductVersion.refreshed_at,
                           _LATEST_WITHDRAWAL.scalar_subquery()).where(
    ProductVersion.tenant_id == bindparam("tenant"),
    ProductVersion.product_id == bindparam("product")))
