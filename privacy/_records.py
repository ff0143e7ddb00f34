"""Record-level reads of operational lists, with field treatments by role (C2).

Owns the one path by which individual records reach a page: only roles that declare the
product in ``record_products``, only the principal's own tenant, every field transformed by the
role's treatment of its classification (show / generalise / mask / pseudonymise / hide), search
and paging pushed into SQL so a large list is never loaded whole, and every view audited.
A field a role cannot see cannot be filtered or searched on by it either.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import func, or_, select

from data.catalog import Catalog, FieldSpec, ProductSpec, RoleSpec
from data.engine import Store
from data.errors import AccessDenied, InvalidInput, QueryRefused, VeilBug
from data.models import Registration

from privacy._audit import audit
from privacy._values import Principal

__all__ = ["RecordPage", "RecordQuery", "read_records"]

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
        if self.page < 1:
            raise InvalidInput(f"page must be >= 1, got {self.page}")
        if not 1 <= self.page_size <= _MAX_PAGE_SIZE:
            raise InvalidInput(f"page_size must be between 1 and {_MAX_PAGE_SIZE}, "
                               f"got {self.page_size}")
        if len(self.search) > 64:
            raise InvalidInput(f"search text is limited to 64 characters, got {len(self.search)}")


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


def read_records(store: Store, catalog: Catalog, principal: Principal, query: RecordQuery, *,
                 secret: str) -> RecordPage:
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
    statement = select(model).where(model.tenant_id == principal.tenant)
    for name, value in query.filters:
        if name not in fields:
            raise QueryRefused(f"{product.title} has no field {name!r}")
        if name not in usable:
            raise AccessDenied(f"the {role.title} role cannot filter on {fields[name].title!r} "
                               f"({treatments[name]})")
        statement = statement.where(getattr(model, name) == value)
    searchable = tuple(n for n in ("agent_code", "district", "registration_id") if n in usable)
    if query.search.strip():
        needle = query.search.strip().lower()
        statement = statement.where(or_(*[func.lower(getattr(model, n)).startswith(needle)
                                          for n in searchable]))
    total_statement = select(func.count()).select_from(statement.subquery())
    page_statement = (statement.order_by(model.registered_at.desc(), model.registration_id)
                      .limit(query.page_size).offset((query.page - 1) * query.page_size))
    with store.read() as session:
        total = session.scalar(total_statement)
        records = session.scalars(page_statement).all()
    columns = tuple(f.name for f in product.fields if treatments[f.name] != "hide")
    rows = tuple({name: _treat(getattr(r, name), fields[name], treatments[name],
                               principal=principal, secret=secret) for name in columns}
                 for r in records)
    audit(store, principal=principal.subject, tenant=principal.tenant, role=principal.role,
          action="records_view", target=product.id, outcome="allowed",
          detail={"filters": [list(f) for f in query.filters], "search": query.search,
                  "page": query.page, "rows": len(rows), "total": total})
    return RecordPage(product=product.id, columns=columns,
                      titles={n: fields[n].title for n in columns},
                      treatments={n: treatments[n] for n in columns}, rows=rows, total=total,
                      page=query.page, page_size=query.page_size, searchable=searchable)


def _treat(value, spec: FieldSpec, treatment: str, *, principal: Principal, secret: str):
    if value is None or treatment == "show":
        return value
    if treatment == "mask":
        return _MASK
    if treatment == "pseudonymise":
        # Keyed per tenant and role: stable while a case worker pages through the list,
        # unlinkable to the stored pseudonym or to another role's view.
        key = f"{secret}|{principal.tenant}|{principal.role}".encode()
        return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:12]
    if treatment == "generalise":
        return _generalise(value, spec.generalise_to)
    raise VeilBug(f"treatment {treatment!r} of {spec.name} should have been handled")


def _generalise(value, target: str | None):
    if target == "month" and isinstance(value, (date, datetime)):
        return value.strftime("%Y-%m")
    if target == "age_bucket" and isinstance(value, date):
        today = date.today()
        age = today.year - value.year - ((today.month, today.day) < (value.month, value.day))
        for upper, bucket in ((5, "0-5"), (12, "6-12"), (18, "13-18"), (35, "19-35"),
                              (60, "36-60")):
            if age <= upper:
                return bucket
        return "60+"
    return _MASK  # no declared generalisation: reveal nothing rather than the raw value
