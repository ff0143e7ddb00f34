"""One demo generation: the population, then every product's events, in one transaction.

Owns ``generate`` and its run: validating the size, seed and secret, replacing the demo tenants'
records (``_clear``) with freshly drawn people and events, each purpose drawn from its own
seeded random stream, loaded through ``data.bulk`` with the embedded store's bulk page cache,
and the report of what was loaded. It never builds cubes (``data.materialize`` does, after it).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType

import numpy as np
import psycopg
from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.bulk import SQLITE_BULK_CACHE_KIB, bulk_insert
from data.catalog import Catalog, TenantSpec
from data.demo._calendar import _calendar, demo_window
from data.demo._events import (
    _EVENT_COLUMNS,
    _draw_chunk,
    _event_counts,
    _event_rows,
    _plan,
    _randomise_reports,
    _subject_chunks,
)
from data.demo._people import _load_people, _make_subjects, _Subjects
from data.demo._places import _geo
from data.engine import Store
from data.errors import InvalidInput, StoreError
from data.models import (
    VERTICAL_EVENT_MODELS,
    ConsentEvent,
    CubeMonthly,
    Registration,
    Subject,
    SubjectConsent,
)

#: Target number of events (all tenants, all products) per size, before contribution bounding
#: trims a percent or so.
SIZES: Mapping[str, int] = {"small": 64_000, "medium": 1_000_000, "large": 10_400_000}

#: Subjects per event: about eight events per person over two years across all products keeps
#: a realistic spread of active and barely active people.
_EVENTS_PER_SUBJECT = 8

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoReport:
    """What ``generate`` loaded: row counts per table and per tenant, and how long it took."""

    size: str
    seed: int
    start: date  # first day of the events' window
    end: date    # last day of the events' window (the day before the as-of day)
    tables: Mapping[str, int]
    tenants: Mapping[str, Mapping[str, int]]
    products: Mapping[str, int]
    seconds: float

    @property
    def events(self) -> int:
        return sum(self.tables[m.__tablename__] for m in VERTICAL_EVENT_MODELS.values())

    def __repr__(self) -> str:
        return (f"DemoReport(size={self.size!r}, seed={self.seed}, "
                f"window={self.start.isoformat()}..{self.end.isoformat()}, "
                f"events={self.events:,}, "
                f"subjects={self.tables['subjects']:,}, "
                f"registrations={self.tables['registrations']:,}, seconds={self.seconds:.2f})")


def generate(store: Store, catalog: Catalog, *, size: str = "small", seed: int = 7,
             secret: str, as_of: date, progress: Progress | None = None) -> DemoReport:
    """Replace the demo tenants' records with freshly generated ones; return what was loaded.

    The events cover ``demo_window(as_of)``: two years up to the day before ``as_of``.
    Deterministic: the same ``size``, ``seed``, ``secret`` and ``as_of`` give identical rows. Runs in one
    write transaction, so readers see the old demo or the new one, never half of each. Does not
    build cubes: run ``data.materialize.materialize`` afterwards.
    """
    if size not in SIZES:
        raise InvalidInput(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"demo seed must be a non-negative integer, got {seed!r}")
    if not secret:
        raise InvalidInput("a secret is required to key the demo subjects' pseudonyms")
    if store.dialect not in {"sqlite", "postgresql"}:
        raise StoreError(f"demo data can be loaded into sqlite or postgresql, not {store.dialect}")
    window = demo_window(as_of)
    started = time.perf_counter()
    run = _Run(catalog=catalog, seed=seed, size=size, secret=secret, as_of=as_of,
               progress=progress or (lambda stage, done, total: None))
    try:
        with store.write.begin() as session:
            restore = _speed_up(session)
            try:
                run.load(session)
            finally:
                restore()
        _analyze(store, run.tables)
    except (SQLAlchemyError, sqlite3.Error, psycopg.Error) as exc:
        raise StoreError(
            f"Loading the {size} demo data failed and was rolled back, so the store is "
            f"unchanged: {exc}"
        ) from exc
    return DemoReport(size=size, seed=seed, start=window[0], end=window[1], tables=MappingProxyType(run.tables),
                      tenants=MappingProxyType(run.per_tenant),
                      products=MappingProxyType(run.per_product),
                      seconds=time.perf_counter() - started)


class _Run:
    """One generation: the shared lookup tables, the plan per product, and running counts."""

    def __init__(self, *, catalog: Catalog, seed: int, size: str, secret: str, as_of: date,
                 progress: Progress):
        self.catalog, self.seed, self.size, self.secret = catalog, seed, size, secret
        self.progress = progress
        self.cal = _calendar(as_of)
        self.geo = _geo(catalog, seed)
        self.ages = np.array(catalog.domains["age_bucket"], dtype=object)
        self.genders = np.array(catalog.domains["gender"], dtype=object)
        self.plans = [_plan(catalog, self.cal, p) for p in catalog.products
                      if p.kind == "metric_set"]
        self.tables: dict[str, int] = {name: 0 for name in (
            "subjects", "consent_events", "subject_consent", "registrations",
            *(m.__tablename__ for m in VERTICAL_EVENT_MODELS.values()))}
        self.per_tenant: dict[str, dict[str, int]] = {}
        self.per_product: dict[str, int] = {plan.product.id: 0 for plan in self.plans}

    def rng(self, *stream: int) -> np.random.Generator:
        # One independent stream per purpose, tenant, product and chunk: changing how one part
        # is drawn never shifts the random numbers of another.
        return np.random.default_rng([self.seed, *stream])

    def load(self, session: Session) -> None:
        self.progress("clear", 0, 1)
        _clear(session, self.catalog)
        self.progress("clear", 1, 1)
        population = self._population()
        for t_index, (tenant, subjects, _) in enumerate(population):
            self.progress("subjects", t_index, len(population))
            stats = _load_people(session, self.rng(3, t_index), subjects, self.catalog,
                                 self.geo, self.cal, self.genders)
            for name in ("subjects", "consent_events", "subject_consent", "registrations"):
                self.tables[name] += stats[name]
            self.per_tenant[tenant.id] = {"subjects": stats["subjects"],
                                          "registrations": stats["registrations"],
                                          "withdrawals": stats["withdrawals"], "events": 0}
        self.progress("subjects", len(population), len(population))
        self._load_events(session, population)

    def _population(self) -> list[tuple[TenantSpec, _Subjects, list[np.ndarray]]]:
        """Every tenant's people and their event counts per product, drawn up front so that
        progress has a total before the long event stage starts."""
        total_scale = sum(t.demo_scale for t in self.catalog.tenants)
        # Products marked ``extra`` come on top: the others' events stay exactly as they were.
        share_total = sum(plan.profile.share for plan in self.plans
                          if not plan.profile.extra) or 1.0
        population = []
        for t_index, tenant in enumerate(self.catalog.tenants):
            tenant_events = SIZES[self.size] * tenant.demo_scale / total_scale
            count = max(50, round(tenant_events / _EVENTS_PER_SUBJECT))
            subjects = _make_subjects(self.rng(1, t_index), self.catalog, self.geo, tenant,
                                      count, self.secret, self.cal.n_days)
            counts = [
                _event_counts(self.rng(2, t_index, p_index), plan, subjects, self.catalog,
                              tenant_events * plan.profile.share / share_total)
                for p_index, plan in enumerate(self.plans)
            ]
            population.append((tenant, subjects, counts))
        return population

    def _load_events(self, session: Session,
                     population: list[tuple[TenantSpec, _Subjects, list[np.ndarray]]]) -> None:
        planned = sum(int(c.sum()) for *_, counts in population for c in counts)
        done = 0
        self.progress("events", 0, planned)
        for t_index, (tenant, subjects, counts) in enumerate(population):
            for p_index, plan in enumerate(self.plans):
                table = VERTICAL_EVENT_MODELS[plan.product.vertical].__tablename__
                number = 0  # event ids are sequential per tenant and product
                for c_index, (lo, hi) in enumerate(_subject_chunks(counts[p_index])):
                    chunk = _draw_chunk(self.rng(4, t_index, p_index, c_index), plan, subjects,
                                        self.geo, self.cal, lo, hi, counts[p_index])
                    # a product randomised at collection stores reports (its own stream, 5)
                    chunk = _randomise_reports(chunk, plan,
                                               self.rng(5, t_index, p_index, c_index))
                    bulk_insert(session, table, _EVENT_COLUMNS, _event_rows(
                        chunk, number, plan, subjects, self.geo, self.cal, self.ages,
                        self.genders))
                    loaded = len(chunk.subject)
                    number += loaded
                    self.tables[table] += loaded
                    self.per_tenant[tenant.id]["events"] += loaded
                    self.per_product[plan.product.id] += loaded
                    done += int(counts[p_index][lo:hi].sum())
                    self.progress("events", min(done, planned), planned)
        self.progress("events", planned, planned)


def _speed_up(session: Session) -> Callable[[], None]:
    """A larger page cache for SQLite while loading; returns how to put it back."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return lambda: None
    # Random pseudonyms make the subject index's inserts random; a 256 MB cache keeps the
    # index in memory instead of re-reading pages for every row.
    previous = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    connection.exec_driver_sql(f"PRAGMA cache_size = {SQLITE_BULK_CACHE_KIB}")

    def restore() -> None:
        connection.exec_driver_sql(f"PRAGMA cache_size = {int(previous)}")

    return restore


def _analyze(store: Store, tables: Mapping[str, int]) -> None:
    """Refresh PostgreSQL's planner statistics for the tables just bulk-loaded.

    COPY does not update statistics and autovacuum gets to them only later; until then the
    planner believes the tables are nearly empty and picks nested loops that turn a cube build
    of a second into minutes. SQLite plans these queries well without statistics.
    """
    if store.dialect != "postgresql":
        return
    with store.engine.connect() as connection:
        for table in tables:
            connection.exec_driver_sql(f"ANALYZE {table}")
        connection.commit()


def _clear(session: Session, catalog: Catalog) -> None:
    """Delete the demo tenants' records and cubes so that generation is repeatable.

    ProductVersion rows stay: data versions only ever grow, so the next materialisation is a
    new version and the gate can never serve a release stored for the previous data.
    """
    tenant_ids = [t.id for t in catalog.tenants]
    for model in (*VERTICAL_EVENT_MODELS.values(), Registration, ConsentEvent, SubjectConsent,
                  Subject, CubeMonthly):
        session.execute(delete(model).where(model.tenant_id.in_(tenant_ids)))
