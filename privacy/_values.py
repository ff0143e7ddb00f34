"""Value objects of the gate: Principal, Epsilon, Query, Cell, Release, Preview, BudgetStatus.

All frozen; each validates in ``__post_init__`` and quotes the bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, datetime

from data.errors import InvalidInput, brief, checked_text
# month arithmetic is data/'s (``privacy.add_months`` is its public name here)
from data.months import add_months, month_end, month_start

__all__ = ["BudgetStatus", "Cell", "DataClock", "Delta", "Epsilon", "PeriodStatus", "Preview",
           "Principal", "PrivacyLoss", "Query", "Release", "Threshold", "Totals", "add_months"]


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


@dataclass(frozen=True, order=True)
class Delta:
    """The δ of an (ε, δ) guarantee: 0 ≤ δ < 1 (0 for pure ε-DP)."""

    value: float

    def __post_init__(self):
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool):
            raise InvalidInput(f"δ must be a number, got {self.value!r}")
        if not 0 <= self.value < 1:
            raise InvalidInput(f"δ must be in [0, 1), got {self.value!r}")

    def __str__(self) -> str:
        return f"δ={self.value:g}"


@dataclass(frozen=True)
class PrivacyLoss:
    """What a release costs, (ε, δ): the composed OpenDP measurement's ``map(d_in)``."""

    epsilon: Epsilon
    delta: Delta = Delta(0.0)

    def __post_init__(self):
        if not isinstance(self.epsilon, Epsilon) or not isinstance(self.delta, Delta):
            raise InvalidInput(f"a privacy loss is an Epsilon and a Delta, got "
                               f"{self.epsilon!r} and {self.delta!r}")

    def __str__(self) -> str:
        return f"({self.epsilon}, {self.delta})"


#: longest identifier (product, metric, level, dimension) and filter value a query may carry
_NAME_LIMIT = 64
_VALUE_LIMIT = 128


@dataclass(frozen=True)
class Query:
    """A request for a monthly metric series of one product, within the principal's tenant.

    ``filters`` are (dimension, value) pairs on public dimensions, e.g. (("state", "KGL"),).
    ``start`` and ``end`` are the first days of the first and last month, both included.
    ``period`` is ``"month"`` (one value per month) or ``"window"`` (one value for the whole
    window per area: the window is then the query's one period, labelled "YYYY-MM..YYYY-MM").
    """

    product: str
    metric: str
    start: date
    end: date
    level: str
    group_by: tuple[str, ...] = ("month",)
    filters: tuple[tuple[str, str], ...] = ()
    period: str = "month"

    def __post_init__(self):
        for name in ("product", "metric", "level", "period"):
            checked_text(name, getattr(self, name), limit=_NAME_LIMIT)
        if not isinstance(self.group_by, tuple) or not isinstance(self.filters, tuple):
            raise InvalidInput(f"group_by and filters must be tuples, got "
                               f"{brief(self.group_by)} and {brief(self.filters)}")
        for dimension in self.group_by:
            checked_text("a group-by dimension", dimension, limit=_NAME_LIMIT)
        for pair in self.filters:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise InvalidInput(f"a filter is a (dimension, value) pair, got {brief(pair)}")
            checked_text("a filter dimension", pair[0], limit=_NAME_LIMIT)
            checked_text(f"the {brief(pair[0], 24)} filter value", pair[1], limit=_VALUE_LIMIT)
        if not isinstance(self.start, date) or not isinstance(self.end, date):
            raise InvalidInput(f"start and end must be dates, got {brief(self.start)} and "
                               f"{brief(self.end)}")
        if self.start.day != 1 or self.end.day != 1:
            raise InvalidInput(
                f"query window must start and end on the first day of a month, "
                f"got {self.start.isoformat()} .. {self.end.isoformat()}")
        if self.start > self.end:
            raise InvalidInput(
                f"query window starts after it ends: {self.start.isoformat()} > "
                f"{self.end.isoformat()}")
        if not self.group_by or self.group_by[0] != "month":
            raise InvalidInput(f"group_by must start with 'month', got {brief(self.group_by)}")
        if len(set(self.group_by)) != len(self.group_by):
            raise InvalidInput(f"group_by repeats a dimension: {brief(self.group_by)}")
        dims = [d for d, _ in self.filters]
        if len(set(dims)) != len(dims):
            raise InvalidInput(f"each dimension may be filtered once, got {brief(self.filters)}")
        if self.period not in ("month", "window"):
            raise InvalidInput(f"period must be 'month' or 'window', got {brief(self.period)}")

    @classmethod
    def ending(cls, *, product: str, metric: str, level: str, months: int, end: date,
               group_by: tuple[str, ...] = ("month",),
               filters: tuple[tuple[str, str], ...] = (), period: str = "month") -> Query:
        """The ``months`` calendar months up to and including ``end``'s month."""
        if isinstance(months, bool) or not isinstance(months, int) or months < 1:
            raise InvalidInput(f"months must be an integer >= 1, got {months!r}")
        last = month_start(end)
        return cls(product=product, metric=metric, level=level, group_by=group_by,
                   filters=filters, start=add_months(last, -(months - 1)), end=last,
                   period=period)

    @classmethod
    def trailing(cls, *, product: str, metric: str, level: str, months: int, today: date,
                 filters: tuple[tuple[str, str], ...] = ()) -> Query:
        """The ``months`` complete calendar months before ``today``'s month.

        Pages use ``DataClock.query`` instead: its window ends at the latest complete month
        *with data*, which does not move with the calendar.
        """
        return cls.ending(product=product, metric=metric, level=level, months=months,
                          end=add_months(month_start(today), -1), filters=filters)

    @cached_property
    def months(self) -> tuple[date, ...]:
        """The public key set of the query: every month in the window (computed once: a
        release reads it a dozen times)."""
        out, current = [], self.start
        while current <= self.end:
            out.append(current)
            current = add_months(current, 1)
        return tuple(out)

    @property
    def periods(self) -> dict[date, str]:
        """The query's atomic periods: first month → label of the cells' first key part."""
        if self.period == "window":
            return {self.start: f"{self.start.isoformat()[:7]}..{self.end.isoformat()[:7]}"}
        return {month: month.isoformat()[:7] for month in self.months}

    def canonical(self) -> dict:
        """The query as stored and keyed: its fields in order, dates as ISO text, lists for
        tuples, filters sorted; a new dict on every call (callers edit theirs)."""
        data = {"product": self.product, "metric": self.metric,
                "start": self.start.isoformat(), "end": self.end.isoformat(),
                "level": self.level, "group_by": list(self.group_by),
                "filters": sorted([list(f) for f in self.filters])}
        if self.period != "month":  # monthly queries keep the keys they always had
            data["period"] = self.period
        return data


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
    #: the standard deviation of the value's noise (0 without noise; None in releases stored
    #: before it was recorded). The interval is not value ± 1.96·sd: it is exact, and near the
    #: threshold conditional on the cell being shown
    sd: float | None = None

    def to_json(self) -> dict:
        return {"key": list(self.key), "value": self.value, "lower": self.lower,
                "upper": self.upper, "noise_scale": self.noise_scale, "status": self.status,
                "members": list(self.members), "n": self.n, "sd": self.sd}

    @classmethod
    def from_json(cls, data: dict) -> Cell:
        return cls(key=tuple(data["key"]), value=data["value"], lower=data["lower"],
                   upper=data["upper"], noise_scale=data["noise_scale"], status=data["status"],
                   members=tuple(data.get("members", ())), n=data.get("n"),
                   sd=data.get("sd"))


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
    #: per geography level, finest first: the release threshold and its exact empty-cell rate
    thresholds: tuple[Threshold, ...] = ()
    #: α, the policy's bound on ``empty_cell_rate`` when this release was made
    empty_cell_bound: float = 0.0
    #: δ this release cost when it was first computed (0 for pure ε-DP), and δ charged by
    #: this call (0 when reused): with ``epsilon`` / ``charged``, the composed (ε, δ)
    delta: Delta = Delta(0.0)
    charged_delta: Delta = Delta(0.0)
    #: the lifetime budget of each data month this release reads, as of this call: what every
    #: release about that month has spent, by anyone (issue 16)
    lifetime: tuple[PeriodStatus, ...] = ()
    #: how many of its periods this call derived from measurements already stored, for free
    #: (``privacy._derive``); their cells' noise is a sum of stored noises, not ``mechanism``
    derived: int = 0

    @property
    def lifetime_spent(self) -> PeriodStatus | None:
        """The month of this release's data that has spent most of its lifetime budget."""
        return max(self.lifetime, key=lambda s: (s.spent.value, s.period), default=None)

    def totals(self) -> dict[tuple[str, ...], Totals]:
        """Hierarchy-consistent, non-negative totals per stratum (month and other dimensions).

        The total is the top cell's value: an estimate from measurements (the top's own noisy
        count, combined with the sum of every finest-level noisy count), never raised to the
        released parts. The engine already scaled the parts to fit under it, so here the small
        areas counted only in the total get the remainder, total − parts ≥ 0. A stratum whose
        top was not released (its noisy count under the top's threshold) has no measured
        total: ``released`` is False and the total is what the parts show. Display only: a
        total that noise put below 0 is shown as 0 (the stored cell keeps the estimate).
        """
        if self.measure != "count":
            raise InvalidInput("totals() adds counts; sums and means are not additive here")
        parts: dict[tuple[str, ...], float] = {}
        tops: dict[tuple[str, ...], float] = {}
        bounds: dict[tuple[str, ...], tuple[float | None, float | None]] = {}
        strata: set[tuple[str, ...]] = set()
        for cell in self.cells:
            stratum = (cell.key[0], *cell.key[2:])
            strata.add(stratum)
            # the top: a "total" cell, or the one cell of a query by month (no geography)
            if cell.status == "total" or (cell.key[1] == self.tenant and cell.value is not None):
                tops[stratum] = max(cell.value or 0.0, 0.0)
                bounds[stratum] = (cell.lower, cell.upper)
            elif cell.value is not None:
                parts[stratum] = parts.get(stratum, 0.0) + max(cell.value, 0.0)
        out = {}
        for stratum in strata:
            known = parts.get(stratum, 0.0)
            if stratum not in tops:
                out[stratum] = Totals(total=known, parts=known, remainder=0.0,
                                      released=stratum in parts)
                continue
            # float rounding only: the engine fitted the parts under the total
            known = min(known, tops[stratum])
            lower, upper = bounds[stratum]
            out[stratum] = Totals(total=tops[stratum], parts=known,
                                  remainder=tops[stratum] - known,
                                  lower=None if lower is None else max(lower, 0.0), upper=upper)
        return out

    @property
    def interval_level(self) -> float:
        """The level every interval of this release covers at least, among the cells shown:
        the policy's ``confidence`` where the noise allows it exactly, else the level the
        discrete widths achieve (e.g. 95.4% for a 95% policy). See ``privacy._intervals``."""
        return min((t.coverage for t in self.thresholds if t.coverage < 1),
                   default=self.confidence)

    @property
    def empty_cell_rate(self) -> float:
        """How often an area with no activity is shown with a value of its own, at most: the
        largest exact rate over the levels (0 without noise)."""
        return max((t.empty_cell_rate for t in self.thresholds), default=0.0)


@dataclass(frozen=True)
class Threshold:
    """The release threshold of one geography level of a release (public: no data in it)."""

    level: str             # h3_cell | district | state | tenant
    count: int             # τ = max(k, t_α): a unit is released when its noisy count ≥ τ
    empty_cell_rate: float  # exact P(noise ≥ τ): how often a unit with no events reaches τ
    #: the level this level's intervals achieve: at least the policy's level, above it where
    #: discrete noise has no integer width that hits it exactly (1 without noise)
    coverage: float = 1.0

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.empty_cell_rate <= 1 or not 0 < self.coverage <= 1:
            raise InvalidInput(f"a threshold is a count >= 1, a rate in [0, 1] and a coverage "
                               f"in (0, 1], got {self.count}, {self.empty_cell_rate} and "
                               f"{self.coverage}")


@dataclass(frozen=True)
class Totals:
    total: float       # = parts + remainder
    parts: float       # sum of the released cells below the top
    remainder: float   # small areas counted only in the top total
    #: False when the stratum's total was not released (under the top's threshold): then
    #: ``total`` is only what the released parts show (0 when nothing was released)
    released: bool = True
    #: the released total's 95% interval (None when the total was not released)
    lower: float | None = None
    upper: float | None = None


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
    delta: Delta = Delta(0.0)            # δ a fresh release costs (0: pure ε-DP)
    remaining_delta: Delta = Delta(0.0)
    #: free because it can be derived from measurements already stored (``privacy._derive``)
    derived: bool = False


@dataclass(frozen=True)
class PeriodStatus:
    """The lifetime budget of one month of data: what every release about it has spent, by
    anyone, ever (``cap`` is the viewers' share; see ``catalog/policy.toml [period_budget]``)."""

    period: date
    cap: Epsilon
    spent: Epsilon
    delta_cap: Delta = Delta(0.0)
    delta_spent: Delta = Delta(0.0)
    #: what viewers alone spent (publication and umbrella exports draw on a reserved share)
    viewer_spent: Epsilon = Epsilon(0.0)

    @property
    def remaining(self) -> Epsilon:
        return Epsilon(max(self.cap.value - self.spent.value, 0.0))


@dataclass(frozen=True)
class BudgetStatus:
    product: str
    window_start: date
    window_end: date
    cap: Epsilon
    spent: Epsilon
    #: the window's δ cap and δ spent (Gaussian-noise releases spend δ; Laplace ones do not)
    delta_cap: Delta = Delta(0.0)
    delta_spent: Delta = Delta(0.0)

    @property
    def remaining(self) -> Epsilon:
        return Epsilon(max(self.cap.value - self.spent.value, 0.0))

    @property
    def remaining_delta(self) -> Delta:
        return Delta(max(self.delta_cap.value - self.delta_spent.value, 0.0))


@dataclass(frozen=True)
class DataClock:
    """How far a tenant's data of one product reaches, and which windows the gate accepts.

    Pages build their default windows from this, never from the calendar: the latest
    *complete* month with data is the default end, so an empty or partial month is never shown
    as data unless the user asks for it (and then it is marked partial). Operational metadata
    only (the newest event's day, as on the compliance page); it holds no released value.
    """

    tenant: str
    product: str
    #: the day the tenant's data has reached (its newest event of any product); None: no data
    as_of: date | None
    #: this product's newest event's day; None when it has no data
    newest: date | None
    #: the first month with data of this product; None when it has no data
    first_month: date | None
    #: the most months one query of this product may cover (the gate's public limit)
    max_months: int
    #: freshness SLO breaches in plain words (empty: fresh)
    breaches: tuple[str, ...] = ()

    def __post_init__(self):
        if self.max_months < 1:
            raise InvalidInput(f"max_months must be >= 1, got {self.max_months}")
        if not (self.as_of is None) == (self.newest is None) == (self.first_month is None):
            raise InvalidInput("as_of, newest and first_month are all set or all None")
        if self.newest is not None and not self.first_month <= self.newest <= self.as_of:
            raise InvalidInput(f"expected first_month <= newest <= as_of, got "
                               f"{self.first_month} / {self.newest} / {self.as_of}")

    @property
    def latest_complete(self) -> date | None:
        """The first day of the latest month that the data covers to its last day and that
        this product has data in (a stalled source's empty months are never "complete")."""
        if self.as_of is None:
            return None
        month = month_start(self.as_of)
        end = month if self.as_of == month_end(month) else add_months(month, -1)
        end = min(end, month_start(self.newest))
        return end if end >= self.first_month else None

    @property
    def partial(self) -> date | None:
        """The month the data reaches into but does not cover yet, when this product has data
        in it (None otherwise)."""
        if self.as_of is None or self.as_of == month_end(month_start(self.as_of)):
            return None
        month = month_start(self.as_of)
        return month if month_start(self.newest) == month else None

    @property
    def stale(self) -> bool:
        return bool(self.breaches)

    def months(self, *, include_partial: bool = False) -> tuple[date, ...]:
        """Every month with data, oldest first: complete months, then the partial one if asked."""
        if self.first_month is None:
            return ()
        last = self.partial if include_partial and self.partial else self.latest_complete
        if last is None:
            return ()
        out, current = [], self.first_month
        while current <= last:
            out.append(current)
            current = add_months(current, 1)
        return tuple(out)

    def longest(self, *, include_partial: bool = False) -> int:
        """The longest window a page may offer: the gate's limit or the data's extent."""
        return min(self.max_months, len(self.months(include_partial=include_partial)))

    def query(self, *, metric: str, level: str, months: int, include_partial: bool = False,
              group_by: tuple[str, ...] = ("month",),
              filters: tuple[tuple[str, str], ...] = ()) -> Query:
        """The ``months`` latest months with data (complete ones unless ``include_partial``),
        shortened to what the data covers and the gate accepts (``longest``)."""
        available = self.months(include_partial=include_partial)
        if not available:
            raise InvalidInput(f"{self.product} has no complete month of data for "
                               f"{self.tenant} yet")
        return Query.ending(product=self.product, metric=metric, level=level,
                            months=min(months, len(available), self.max_months),
                            end=available[-1],
                            group_by=group_by, filters=filters)

    def describe(self) -> str:
        """"Data as of 5 Dec 2026", plainly, with what is complete."""
        if self.as_of is None:
            return "No data yet."
        complete = self.latest_complete
        text = f"Data as of {self.as_of.day} {self.as_of:%b %Y}"
        if complete is not None:
            text += f" · latest complete month {complete:%B %Y}"
        return text
