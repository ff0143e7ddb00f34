"""What every compliance read shares: authorisation and the audit of each view (``_view``),
today's date from the service's clock, and the SQL and calendar helpers the reads use (a
filter as audit detail, a span of days as conditions, portable month and day labels, month
arithmetic).

Every read authorises the principal — its role must list the ``compliance`` page in the catalog
(``compliance_officer``); anyone else gets AccessDenied, and the attempt is audited — and is
itself audited (``compliance_view``, target = the section, detail = the filters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta

from sqlalchemy import func, literal_column
from sqlalchemy.exc import SQLAlchemyError

from data.catalog import Catalog
from data.engine import Store
from data.errors import AccessDenied, StoreError, VeilError
from data.months import add_months

from privacy.core import Gate, Principal, audit

__all__ = ["_Reads"]

#: The page a role must list to read anything here.
_PAGE = "compliance"


class _Reads:
    def __init__(self, gate: Gate, store: Store, catalog: Catalog, *, secret: str,
                 clock: Callable[[], datetime]):
        """``gate`` is the core gate (the bias check's data clock); ``secret`` the deployment
        secret it was built with (the evidence bundle's signing key)."""
        self._gate, self._store, self._catalog, self._clock = gate, store, catalog, clock
        self._secret = secret

    # -- authorisation and the audit of every view --

    @contextmanager
    def _view(self, principal: Principal, section: str, detail: dict) -> Iterator[dict]:
        """Authorise, run the read, audit it; a refusal or bad input is audited as refused.

        The read adds what it returned (e.g. ``rows``) to the yielded dict.
        """
        role = self._catalog.roles.get(principal.role)
        try:
            if role is None or _PAGE not in role.pages:
                title = role.title if role is not None else principal.role
                raise AccessDenied(f"the {title} role cannot read compliance records "
                                   f"({section.replace('_', ' ')}); this attempt has been "
                                   f"recorded")
            self._catalog.tenant(principal.tenant)
            result: dict = {}
            yield result
        except VeilError as exc:
            audit(self._store, principal=principal.subject, tenant=principal.tenant,
                  role=principal.role, action="compliance_view", target=section,
                  outcome="refused", detail={**detail, "reason": str(exc)})
            raise
        except SQLAlchemyError as exc:
            raise StoreError(f"Cannot read the {section.replace('_', ' ')} from the store: "
                             f"{type(exc).__name__}. Nothing was changed; try again.") from exc
        audit(self._store, principal=principal.subject, tenant=principal.tenant,
              role=principal.role, action="compliance_view", target=section,
              outcome="allowed", detail={**detail, **result})

    def _today(self) -> date:
        return self._clock().date()


def _detail(filters) -> dict:
    return {name: (value.isoformat() if isinstance(value, date) else value)
            for name, value in dataclasses.asdict(filters).items()
            if value not in (None, "")}


def _between(column, start: date | None, end: date | None) -> list:
    """Rows whose naive-UTC time falls on the days ``start`` .. ``end`` (both included)."""
    out = []
    if start is not None:
        out.append(column >= datetime.combine(start, time()))
    if end is not None:
        out.append(column < datetime.combine(end + timedelta(days=1), time()))
    return out


def _period_label(column, unit: str, dialect: str):
    """A portable 'YYYY-MM-DD' / 'YYYY-MM' text label of a timestamp.

    The format is a literal, not a bound parameter: PostgreSQL would otherwise see the
    SELECT and GROUP BY expressions as different ($1 vs $2) and refuse the grouping.
    """
    if dialect == "postgresql":
        pattern = "'YYYY-MM-DD'" if unit == "day" else "'YYYY-MM'"
        return func.to_char(column, literal_column(pattern))
    pattern = "'%Y-%m-%d'" if unit == "day" else "'%Y-%m'"
    return func.strftime(literal_column(pattern), column)


def _months(first: date, last: date) -> list[date]:
    out, current = [], first.replace(day=1)
    while current <= last:
        out.append(current)
        current = add_months(current, 1)
    return out


def _month_labels(start: date, end: date) -> list[str]:
    return [m.isoformat()[:7] for m in _months(start, end)]
