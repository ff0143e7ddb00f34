"""Value objects of the gate: Principal, Epsilon, Query, Cell, Release, Preview, BudgetStatus.

All frozen; each validates in ``__post_init__`` and quotes the bad value.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime

from data.errors import InvalidInput

__all__ = ["BudgetStatus", "Cell", "Epsilon", "Preview", "Principal", "Query", "Release",
           "Totals"]


@dataclass(frozen=True)
class Principal:
    """Who is asking: resolved identity, role and tenant. Built only by the access module."""

    subject: str          # stable identity key, e.g. the e-mail or the OIDC ``sub``
    display_name: str
    role: str
    tenant: str
    source: str           # "oidc" | "demo" | "system" (the tenant's publication identity)

    def __post_init__(self):
        for name in ("subject", "role", "tenant"):
            if not getattr(self, name):
                raise InvalidInput(f"Principal.{name} must not be empty")
        if self.source not in {"oidc", "demo", "system"}:
            raise InvalidInput(f"Principal.source must be 'oidc', 'demo' or 'system', "
                               f"got {self.source!r}")


@dataclass(frozen=True, order=True)
class Epsilon:
    """A pure-DP privacy loss ε ≥ 0."""

    value: float

    def __post_init__(self):
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool):
            raise InvalidInput(f"ε must be a number, got {self.value!r}")
        if not self.value >= 0 or self.value == float("inf"):
            raise InvalidInput(f"ε must be finite and >= 0, got {self.value!r}")

    def __str__(self) -> str:
        return f"ε={self.value:g}"


def _month_start(day: date) -> date:
    return day.replace(day=1)


@dataclass(frozen=True)
class Query:
    """A request for a monthly metric series of one product, within the principal's tenant.

    ``filters`` are (dimension, value) pairs on public dimensions, e.g. (("state", "KGL"),).
    ``start`` and ``end`` are the first days of the first and last month, both included.
    """

    product: str
    metric: str
    start: date
    end: date
    level: str
    group_by: tuple[str, ...] = ("month",)
    filters: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.start != _month_start(self.start) or self.end != _month_start(self.end):
            raise InvalidInput(
                f"query window must start and end on the first day of a month, "
                f"got {self.start.isoformat()} .. {self.end.isoformat()}")
        if self.start > self.end:
            raise InvalidInput(
                f"query window starts after it ends: {self.start.isoformat()} > "
                f"{self.end.isoformat()}")
        if not self.group_by or self.group_by[0] != "month":
            raise InvalidInput(f"group_by must start with 'month', got {self.group_by!r}")
        if len(set(self.group_by)) != len(self.group_by):
            raise InvalidInput(f"group_by repeats a dimension: {self.group_by!r}")
        dims = [d for d, _ in self.filters]
        if len(set(dims)) != len(dims):
            raise InvalidInput(f"each dimension may be filtered once, got {self.filters!r}")

    @classmethod
    def trailing(cls, *, product: str, metric: str, level: str, months: int, today: date,
                 filters: tuple[tuple[str, str], ...] = ()) -> Query:
        """The ``months`` complete calendar months before ``today``'s month."""
        if months < 1:
            raise InvalidInput(f"months must be >= 1, got {months}")
        last = today.year * 12 + today.month - 2          # index of the previous month
        first = last - (months - 1)
        return cls(product=product, metric=metric, level=level, filters=filters,
                   start=date(first // 12, first % 12 + 1, 1),
                   end=date(last // 12, last % 12 + 1, 1))

    @property
    def months(self) -> tuple[date, ...]:
        """The public key set of the query: every month in the window."""
        out, current = [], self.start
        while current <= self.end:
            out.append(current)
            current = (current.replace(year=current.year + 1, month=1) if current.month == 12
                       else current.replace(month=current.month + 1))
        return tuple(out)

    def canonical(self) -> dict:
        data = asdict(self)
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        data["group_by"] = list(self.group_by)
        data["filters"] = sorted([list(f) for f in self.filters])
        return data

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Cell:
    """One released cell. ``value`` is None when the cell is suppressed."""

    key: tuple[str, ...]
    value: float | None
    lower: float | None
    upper: float | None
    noise_scale: float | None
    #: exact | noisy | suppressed | rolled_up:<parent> | rollup (a parent measured on the union
    #: of its small children) | total (the top area's full total, which counts its leftovers)
    status: str
    #: for a rollup or total cell: the finest-level codes merged into it
    members: tuple[str, ...] = ()
    #: the noisy (or exact) event count behind the value, for sums and means
    n: float | None = None

    def to_json(self) -> dict:
        return {"key": list(self.key), "value": self.value, "lower": self.lower,
                "upper": self.upper, "noise_scale": self.noise_scale, "status": self.status,
                "members": list(self.members), "n": self.n}

    @classmethod
    def from_json(cls, data: dict) -> Cell:
        return cls(key=tuple(data["key"]), value=data["value"], lower=data["lower"],
                   upper=data["upper"], noise_scale=data["noise_scale"], status=data["status"],
                   members=tuple(data.get("members", ())), n=data.get("n"))


@dataclass(frozen=True)
class Release:
    """What the gate returns: the cells and everything needed to read them honestly."""

    id: str
    tenant: str
    product: str
    query: Query
    cells: tuple[Cell, ...]
    epsilon: Epsilon          # ε this release cost when it was first computed
    charged: Epsilon          # ε charged to the caller by this call (0 when reused)
    reused: bool
    mechanism: str
    k: int
    confidence: float
    privacy_unit: str
    policy_version: str
    data_version: int
    digest: str
    created_at: datetime
    guarantee: str = field(default="")
    published: bool = False
    measure: str = "count"

    def totals(self) -> dict[tuple[str, ...], Totals]:
        """Hierarchy-consistent, non-negative totals per stratum (month and other dimensions).

        Post-processing only (no privacy cost): the parts are the cells released below the top
        (areas and roll-ups); where the top measured its whole total, the small areas counted
        only there get the remainder max(total − parts, 0), and the total is raised to the
        parts if noise put it below them, so that parts + remainder = total exactly.
        """
        if self.measure != "count":
            raise InvalidInput("totals() adds counts; sums and means are not additive here")
        parts: dict[tuple[str, ...], float] = {}
        tops: dict[tuple[str, ...], float] = {}
        for cell in self.cells:
            stratum = (cell.key[0], *cell.key[2:])
            if cell.status == "total":
                tops[stratum] = max(cell.value or 0.0, 0.0)
            elif cell.value is not None:
                parts[stratum] = parts.get(stratum, 0.0) + max(cell.value, 0.0)
        out = {}
        for stratum in set(parts) | set(tops):
            known = parts.get(stratum, 0.0)
            remainder = max(tops[stratum] - known, 0.0) if stratum in tops else 0.0
            out[stratum] = Totals(total=known + remainder, parts=known, remainder=remainder)
        return out


@dataclass(frozen=True)
class Totals:
    total: float       # = parts + remainder
    parts: float       # sum of the released cells below the top
    remainder: float   # small areas counted only in the top total


@dataclass(frozen=True)
class Preview:
    """Cost and expected accuracy of a query, computed without spending anything."""

    epsilon: Epsilon
    reused: bool              # an identical release exists: running it costs nothing
    mechanism: str
    noise_scale: float | None
    interval_half_width: float | None
    remaining: Epsilon
    cap: Epsilon


@dataclass(frozen=True)
class BudgetStatus:
    product: str
    window_start: date
    window_end: date
    cap: Epsilon
    spent: Epsilon

    @property
    def remaining(self) -> Epsilon:
        return Epsilon(max(self.cap.value - self.spent.value, 0.0))
