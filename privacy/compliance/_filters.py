"""The compliance reads' filters and pages: typed, validated, frozen (a bad filter is refused
quoting it, before any SQL), and ``LogPage``, one page of a log that grows without bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Generic, TypeVar

from data.errors import InvalidInput
from data.months import add_months


__all__ = ["AuditFilter", "BudgetFilter", "ConsentFilter", "ExportFilter", "LogPage", "OUTCOMES",
           "ReleaseFilter"]

T = TypeVar("T")

_MAX_PAGE_SIZE = 500
_MAX_TEXT = 64
OUTCOMES = ("allowed", "refused", "error")


def _check_day(name: str, value) -> None:
    if value is not None and (not isinstance(value, date) or isinstance(value, datetime)):
        raise InvalidInput(f"{name} must be a date (a day, UTC), got {value!r}")


def _check_span(start: date | None, end: date | None, *, max_days: int | None = None) -> None:
    _check_day("start", start)
    _check_day("end", end)
    if start is not None and end is not None:
        if start > end:
            raise InvalidInput(f"the period starts after it ends: {start.isoformat()} > "
                               f"{end.isoformat()}")
        if max_days is not None and (end - start).days + 1 > max_days:
            raise InvalidInput(f"the period may span at most {max_days} days, got "
                               f"{(end - start).days + 1} ({start.isoformat()} – "
                               f"{end.isoformat()})")


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, got {value!r}")
    if len(value) > _MAX_TEXT:
        raise InvalidInput(f"{name} is limited to {_MAX_TEXT} characters, got {len(value)}")


def _check_paging(page: int, page_size: int) -> None:
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise InvalidInput(f"page must be an integer >= 1, got {page!r}")
    if (not isinstance(page_size, int) or isinstance(page_size, bool)
            or not 1 <= page_size <= _MAX_PAGE_SIZE):
        raise InvalidInput(f"page_size must be between 1 and {_MAX_PAGE_SIZE}, got {page_size!r}")


@dataclass(frozen=True)
class AuditFilter:
    """Audit log entries between two days (UTC, both included), newest first.

    ``action`` and ``principal`` match from the start, case-insensitively (``export`` matches
    ``export_request``); ``outcome`` is allowed, refused or error.
    """

    start: date | None = None
    end: date | None = None
    action: str = ""
    outcome: str | None = None
    principal: str = ""
    page: int = 1
    page_size: int = 50

    def __post_init__(self):
        _check_span(self.start, self.end)
        _check_text("action", self.action)
        _check_text("principal", self.principal)
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}, got "
                               f"{self.outcome!r}")
        _check_paging(self.page, self.page_size)


@dataclass(frozen=True)
class ReleaseFilter:
    """Release log entries between two days (UTC, both included), newest first."""

    start: date | None = None
    end: date | None = None
    product: str | None = None
    principal: str = ""
    published: bool | None = None
    page: int = 1
    page_size: int = 50

    def __post_init__(self):
        _check_span(self.start, self.end)
        _check_text("principal", self.principal)
        if self.product is not None:
            _check_text("product", self.product)
        if self.published not in (None, True, False):
            raise InvalidInput(f"published must be true, false or unset, got "
                               f"{self.published!r}")
        _check_paging(self.page, self.page_size)


@dataclass(frozen=True)
class ExportFilter:
    """Export records requested between two days (UTC, both included), newest first."""

    start: date | None = None
    end: date | None = None
    status: str | None = None
    requester: str = ""
    page: int = 1
    page_size: int = 50

    def __post_init__(self):
        _check_span(self.start, self.end)
        _check_text("requester", self.requester)
        if self.status is not None:
            _check_text("status", self.status)
        _check_paging(self.page, self.page_size)


@dataclass(frozen=True)
class BudgetFilter:
    """Budget usage: ε committed per day between two days (UTC, both included), ≤ 366 days."""

    start: date
    end: date

    def __post_init__(self):
        if self.start is None or self.end is None:
            raise InvalidInput("a budget usage period needs both a start and an end day")
        _check_span(self.start, self.end, max_days=366)

    @classmethod
    def trailing(cls, *, days: int, today: date) -> BudgetFilter:
        """The last ``days`` days, ``today`` included."""
        if not isinstance(days, int) or isinstance(days, bool) or days < 1:
            raise InvalidInput(f"days must be an integer >= 1, got {days!r}")
        return cls(start=today - timedelta(days=days - 1), end=today)


@dataclass(frozen=True)
class ConsentFilter:
    """Consent changes per month between two days (UTC, both included), ≤ 5 years."""

    start: date
    end: date

    def __post_init__(self):
        if self.start is None or self.end is None:
            raise InvalidInput("a consent statistics period needs both a start and an end day")
        _check_span(self.start, self.end, max_days=5 * 366)

    @classmethod
    def trailing(cls, *, months: int, today: date) -> ConsentFilter:
        """The last ``months`` calendar months, this one included (up to ``today``)."""
        if not isinstance(months, int) or isinstance(months, bool) or months < 1:
            raise InvalidInput(f"months must be an integer >= 1, got {months!r}")
        return cls(start=add_months(today.replace(day=1), -(months - 1)), end=today)


@dataclass(frozen=True)
class LogPage(Generic[T]):
    """One page of a log, newest first; ``total`` counts every match of the filter."""

    rows: tuple[T, ...]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))
