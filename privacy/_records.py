"""Record-level reads of operational lists, with field treatments by role (C2).

Owns the one path by which individual records reach a page: only roles that declare the
product in ``record_products``, only the principal's own tenant, every field transformed by the
role's treatment of its classification (show / generalise / mask / pseudonymise / hide), search
and paging pushed into SQL so a large list is never loaded whole, and every view audited.
A field a role cannot see cannot be filtered or searched on by it either. Exports read the
same way through ``stream_records``: every matching record, in chunks, never all in memory
(hidden fields are not even read), the caller (the export) auditing the access.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import Select, func, or_, select

from data import clock
from data.catalog import Catalog, FieldSpec, ProductSpec, RoleSpec
from data.engine import Store
from data.errors import AccessDenied, InvalidInput, QueryRefused, VeilBug, brief, checked_text
from data.models import Registration

from privacy._audit import audit
from privacy._values import Principal

__all__ = ["RecordPage", "RecordQuery", "RecordStream", "read_records", "record_treatments",
           "stored_type", "stream_records"]

_STORES = {"registrations": Registration}
_MAX_PAGE_SIZE = 200
_MASK = "•••"


@dataclass(frozen=True)
class RecordQuery:
    """A page of an operational list: equality filters on visible fields, a search, a page."""

    product: str
    filters: tuple[tuple[str, str], ...] = ()
    search: str = ""
    page: int = 1
    page_size: int = 50

    def __post_init__(self):
        checked_text("product", self.product, limit=64)
        if not isinstance(self.filters, tuple) or not all(
                isinstance(pair, tuple) and len(pair) == 2 for pair in self.filters):
            raise InvalidInput(f"filters are (field, value) pairs, got {brief(self.filters)}")
        for name, value in self.filters:
            checked_text("a filter field", name, limit=64)
            checked_text(f"the {brief(name, 24)} filter value", value, limit=128)
        checked_text("search text", self.search, limit=64)
        if not isinstance(self.page, int) or not isinstance(self.page_size, int):
            raise InvalidInput(f"page and page_size must be integers, got {brief(self.page)} "
                               f"and {brief(self.page_size)}")
        if self.page < 1:
            raise InvalidInput(f"page must be >= 1, got {self.page}")
        if not 1 <= self.page_size <= _MAX_PAGE_SIZE:
            raise InvalidInput(f"page_size must be between 1 and {_MAX_PAGE_SIZE}, "
                               f"got {self.page_size}")


@dataclass(frozen=True)
class RecordPage:
    product: str
    columns: tuple[str, ...]                 # field names after hiding, in catalog order
    titles: dict[str, str]
    treatments: dict[str, str]               # field → treatment applied
    rows: tuple[dict[str, object], ...]
    total: int
    page: int
    page_size: int
    searchable: tuple[str, ...] = field(default=())

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def _treatments(role: RoleSpec, product: ProductSpec) -> dict[str, str]:
    return {f.name: role.treatment[f.classification] for f in product.fields}


@dataclass(frozen=True)
class _Access:
    """An authorised record read: what the role sees and the tenant-locked, filtered query."""

    product: ProductSpec
    model: type
    fields: dict[str, FieldSpec]
    treatments: dict[str, str]                 # every field, hidden ones too
    columns: tuple[str, ...]                   # visible fields, catalog order
    searchable: tuple[str, ...]
    where: tuple                               # SQL conditions: tenant, filters, search


def _authorise(catalog: Catalog, principal: Principal, query: RecordQuery) -> _Access:
    """Check role, product and filters; build the conditions. Reads no data."""
    role = catalog.roles.get(principal.role)
    try:
        product = catalog.product(query.product)
    except Exception:
        raise QueryRefused(f"unknown data product {query.product!r}") from None
    if role is None or product.id not in role.record_products:
        raise AccessDenied(f"the {role.title if role else principal.role} role may not read "
                           f"{product.title} record by record")
    model = _STORES.get(product.store)
    if model is None:
        raise VeilBug(f"no record store for {product.store!r}")
    treatments = _treatments(role, product)
    fields = {f.name: f for f in product.fields}
    # Filtering or searching on a field leaks it unless the role sees it as stored.
    usable = {name for name, t in treatments.items() if t == "show"}
    where = [model.tenant_id == principal.tenant]
    for name, value in query.filters:
        if name not in fields:
            raise QueryRefused(f"{product.title} has no field {name!r}")
        if name not in usable:
            raise AccessDenied(f"the {role.title} role cannot filter on {fields[name].title!r} "
                               f"({treatments[name]})")
        where.append(getattr(model, name) == value)
    searchable = tuple(n for n in ("agent_code", "district", "registration_id") if n in usable)
    if query.search.strip():
        needle = query.search.strip().lower()
        where.append(or_(*[func.lower(getattr(model, n)).startswith(needle, autoescape=True)
                           for n in searchable]))
    columns = tuple(f.name for f in product.fields if treatments[f.name] != "hide")
    return _Access(product=product, model=model, fields=fields, treatments=treatments,
                   columns=columns, searchable=searchable, where=tuple(where))


def record_treatments(catalog: Catalog, principal: Principal,
                      query: RecordQuery) -> dict[str, str]:
    """Authorise ``query`` for ``principal`` (role, product, filters) without reading data;
    return every field's treatment."""
    return dict(_authorise(catalog, principal, query).treatments)


def stored_type(catalog: Catalog, product_id: str, name: str) -> type:
    """The Python type the field ``name`` of an operational list is stored as (a file's column
    type). Public metadata: reads no data."""
    return _STORES[catalog.product(product_id).store].__table__.c[name].type.python_type


def read_records(store: Store, catalog: Catalog, principal: Principal, query: RecordQuery, *,
                 secret: str) -> RecordPage:
    access = _authorise(catalog, principal, query)
    model = access.model
    statement: Select = select(model).where(*access.where)
    total_statement = select(func.count()).select_from(statement.subquery())
    page_statement = (statement.order_by(model.registered_at.desc(), model.registration_id)
                      .limit(query.page_size).offset((query.page - 1) * query.page_size))
    with store.read() as session:
        total = session.scalar(total_statement)
        records = session.scalars(page_statement).all()
    treat = {name: _treater(access.fields[name], access.treatments[name], principal=principal,
                            secret=secret) for name in access.columns}
    rows = tuple({name: treat[name](getattr(r, name)) for name in access.columns}
                 for r in records)
    audit(store, principal=principal.subject, tenant=principal.tenant, role=principal.role,
          action="records_view", target=access.product.id, outcome="allowed",
          detail={"filters": [list(f) for f in query.filters], "search": query.search,
                  "page": query.page, "rows": len(rows), "total": total})
    return RecordPage(product=access.product.id, columns=access.columns,
                      titles={n: access.fields[n].title for n in access.columns},
                      treatments={n: access.treatments[n] for n in access.columns}, rows=rows,
                      total=total, page=query.page, page_size=query.page_size,
                      searchable=access.searchable)


@dataclass(frozen=True)
class RecordStream:
    """Every record matching a query, treated for the role, in chunks of row tuples."""

    product: str
    columns: tuple[str, ...]                 # visible fields, in the order of each row tuple
    titles: dict[str, str]
    treatments: dict[str, str]               # every field → its treatment (hidden ones too)
    total: int                               # matching records when the stream opened
    chunks: Iterator[list[tuple]]


@contextmanager
def stream_records(store: Store, catalog: Catalog, principal: Principal, query: RecordQuery, *,
                   secret: str, chunk_rows: int) -> Iterator[RecordStream]:
    """Open a stream of every matching record (paging ignored), in one read transaction.

    The rows come from a server-side cursor on PostgreSQL and a stepped cursor on SQLite, in
    registration-id order, ``chunk_rows`` at a time; only visible fields are selected.
    """
    if chunk_rows < 1:
        raise InvalidInput(f"chunk_rows must be >= 1, got {chunk_rows}")
    access = _authorise(catalog, principal, query)
    model = access.model
    treat = [None if access.treatments[name] == "show" else
             _treater(access.fields[name], access.treatments[name], principal=principal,
                      secret=secret) for name in access.columns]
    statement = (select(*[getattr(model, name) for name in access.columns])
                 .where(*access.where).order_by(model.registration_id)
                 .execution_options(yield_per=chunk_rows))
    with store.read() as session:
        total = session.scalar(select(func.count()).select_from(model).where(*access.where))
        # Core rows, not ORM ones: a million tuples skip the ORM's per-row loading.
        result = session.connection().execute(statement)

        def chunks() -> Iterator[list[tuple]]:
            # Column by column: fields shown as stored pass through untouched.
            for partition in result.partitions():
                columns = zip(*partition)
                yield list(zip(*(column if f is None else [f(v) for v in column]
                                 for f, column in zip(treat, columns))))

        try:
            yield RecordStream(product=access.product.id, columns=access.columns,
                               titles={n: access.fields[n].title for n in access.columns},
                               treatments=dict(access.treatments), total=total,
                               chunks=chunks())
        finally:
            # A stream left half-read must not leave its cursor open: on SQLite a pending
            # statement keeps the connection's read snapshot after it returns to the pool.
            result.close()


def _treater(spec: FieldSpec, treatment: str, *, principal: Principal,
             secret: str) -> Callable[[object], object]:
    """The function that applies ``treatment`` to one value of the field ``spec``."""
    if treatment == "show":
        return lambda value: value
    if treatment == "mask":
        return lambda value: None if value is None else _MASK
    if treatment == "pseudonymise":
        # Keyed per tenant and role: stable while a case worker pages through the list,
        # unlinkable to the stored pseudonym or to another role's view.
        inner, outer = _hmac_pads(f"{secret}|{principal.tenant}|{principal.role}".encode())

        def pseudonymise(value):
            # HMAC-SHA256 (RFC 2104) from precomputed pads: twice as fast as hmac.new per value
            # on a million-row export, and the same digest.
            if value is None:
                return None
            mac = inner.copy()
            mac.update(str(value).encode())
            digest = outer.copy()
            digest.update(mac.digest())
            return digest.hexdigest()[:12]

        return pseudonymise
    if treatment == "generalise":
        return lambda value: None if value is None else _generalise(value, spec.generalise_to)
    raise VeilBug(f"treatment {treatment!r} of {spec.name} should have been handled")


def _hmac_pads(key: bytes):
    """SHA-256 states after HMAC's inner and outer key pads, to be copied per message."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
            hashlib.sha256(bytes(b ^ 0x5C for b in key)))


def _generalise(value, target: str | None):
    if target == "month" and isinstance(value, (date, datetime)):
        return value.strftime("%Y-%m")
    if target == "age_bucket" and isinstance(value, date):
        today = clock.today()
        age = today.year - value.year - ((today.month, today.day) < (value.month, value.day))
        for upper, bucket in ((5, "0-5"), (12, "6-12"), (18, "13-18"), (35, "19-35"),
                              (60, "36-60")):
            if age <= upper:
                return bucket
        return "60+"
    return _MASK  # no declared generalisation: reveal nothing rather than the raw value
