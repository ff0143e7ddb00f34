"""Budget usage for compliance: ε committed per day by role and product with the current
refresh window against the viewers' caps (``budget_usage``), and every data month's lifetime
budget with what was drawn from it, by which roles and how many principals (``period_usage``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select

from data.models import BudgetAccount, BudgetEntry, PeriodBudget, PeriodCharge

from privacy.compliance._base import _between, _detail, _period_label, _Reads
from privacy.compliance._filters import BudgetFilter
from privacy.core import Principal, window_of

__all__ = ["BudgetAccountUsage", "BudgetDay", "BudgetLine", "BudgetUsage", "PeriodUsage",
           "_Budgets"]


@dataclass(frozen=True)
class BudgetDay:
    """ε committed on one day (UTC) by one role on one product."""

    day: date
    role: str
    product: str
    epsilon: float


@dataclass(frozen=True)
class BudgetLine:
    """The current refresh window of one role on one product, over all its principals."""

    role: str
    product: str
    principals: int
    spent: float         # committed and reserved
    cap: float           # the sum of the principals' caps
    fullest: float       # the highest share of its own cap any one principal has used (0–1)
    #: δ spent over the principals (Gaussian-noise releases spend δ; 0 for pure ε-DP), and the
    #: highest share of its own δ cap any one principal has used
    delta_spent: float = 0.0
    delta_fullest: float = 0.0


@dataclass(frozen=True)
class PeriodUsage:
    """One month of one product's data: its lifetime budget, what was drawn from it, by whom."""

    product: str
    period: date
    spent: float
    cap: float             # the month's lifetime ε (viewers stop at their share of it)
    delta_spent: float
    delta_cap: float
    releases: int          # releases that read this month afresh
    by_role: dict[str, float]   # ε drawn per role
    principals: int        # distinct principals that drew from it


@dataclass(frozen=True)
class BudgetAccountUsage:
    principal: str
    role: str
    product: str
    spent: float
    cap: float
    delta_spent: float = 0.0
    delta_cap: float = 0.0

    @property
    def remaining(self) -> float:
        return max(self.cap - self.spent, 0.0)


@dataclass(frozen=True)
class BudgetUsage:
    start: date
    end: date
    window_start: date
    window_end: date
    days: tuple[BudgetDay, ...]
    lines: tuple[BudgetLine, ...]
    accounts: tuple[BudgetAccountUsage, ...]


class _Budgets(_Reads):
    def budget_usage(self, principal: Principal, filters: BudgetFilter) -> BudgetUsage:
        """ε committed per day, role and product; the current window's spend against caps."""
        with self._view(principal, "budget_usage", _detail(filters)):
            day = _period_label(BudgetEntry.settled_at, "day", self._store.dialect)
            window_start, window_end = window_of(self._today())
            with self._store.read() as session:
                daily = session.execute(
                    select(day.label("day"), BudgetAccount.role, BudgetAccount.product_id,
                           func.sum(BudgetEntry.epsilon))
                    .join(BudgetAccount, BudgetEntry.account_id == BudgetAccount.id)
                    .where(BudgetAccount.tenant_id == principal.tenant,
                           BudgetEntry.state == "committed",
                           *_between(BudgetEntry.settled_at, filters.start, filters.end))
                    .group_by(day, BudgetAccount.role, BudgetAccount.product_id)
                    .order_by(day, BudgetAccount.role, BudgetAccount.product_id)).all()
                accounts = session.execute(
                    select(BudgetAccount.principal, BudgetAccount.role,
                           BudgetAccount.product_id, BudgetAccount.spent, BudgetAccount.cap,
                           BudgetAccount.delta_spent, BudgetAccount.delta_cap)
                    .where(BudgetAccount.tenant_id == principal.tenant,
                           BudgetAccount.window_start == window_start)
                    .order_by(BudgetAccount.role, BudgetAccount.product_id,
                              BudgetAccount.principal)).all()
            days = tuple(BudgetDay(day=date.fromisoformat(str(d)[:10]), role=role,
                                   product=product, epsilon=float(eps))
                         for d, role, product, eps in daily)
            usage = tuple(BudgetAccountUsage(principal=a.principal, role=a.role,
                                             product=a.product_id, spent=float(a.spent),
                                             cap=float(a.cap),
                                             delta_spent=float(a.delta_spent or 0.0),
                                             delta_cap=float(a.delta_cap or 0.0))
                          for a in accounts)
            grouped: dict[tuple[str, str], list[BudgetAccountUsage]] = defaultdict(list)
            for account in usage:
                grouped[(account.role, account.product)].append(account)
            lines = tuple(BudgetLine(
                role=role, product=product, principals=len(group),
                spent=sum(a.spent for a in group), cap=sum(a.cap for a in group),
                fullest=max((a.spent / a.cap if a.cap > 0 else 0.0) for a in group),
                delta_spent=sum(a.delta_spent for a in group),
                delta_fullest=max((a.delta_spent / a.delta_cap if a.delta_cap > 0 else 0.0)
                                  for a in group))
                for (role, product), group in sorted(grouped.items()))
        return BudgetUsage(start=filters.start, end=filters.end, window_start=window_start,
                           window_end=window_end, days=days, lines=lines, accounts=usage)

    def period_usage(self, principal: Principal, *,
                     product: str | None = None) -> tuple[PeriodUsage, ...]:
        """Per product and data month of the tenant: the lifetime (ε, δ) spent against its
        cap, and who drew it (per role), newest month first."""
        with self._view(principal, "period_usage", {"product": product}):
            statement = (select(PeriodBudget).where(PeriodBudget.tenant_id == principal.tenant)
                         .order_by(PeriodBudget.product_id, PeriodBudget.period.desc()))
            if product is not None:
                statement = statement.where(PeriodBudget.product_id == product)
            with self._store.read() as session:
                budgets = session.scalars(statement).all()
                charges = session.execute(
                    select(PeriodCharge.budget_id, PeriodCharge.role,
                           func.sum(PeriodCharge.epsilon), func.count(PeriodCharge.id))
                    .join(PeriodBudget, PeriodCharge.budget_id == PeriodBudget.id)
                    .where(PeriodBudget.tenant_id == principal.tenant)
                    .group_by(PeriodCharge.budget_id, PeriodCharge.role)).all()
                who = dict(session.execute(
                    select(PeriodCharge.budget_id,
                           func.count(func.distinct(PeriodCharge.principal)))
                    .join(PeriodBudget, PeriodCharge.budget_id == PeriodBudget.id)
                    .where(PeriodBudget.tenant_id == principal.tenant)
                    .group_by(PeriodCharge.budget_id)).all())
        roles: dict[int, dict[str, float]] = defaultdict(dict)
        counts: dict[int, int] = defaultdict(int)
        for budget_id, role, epsilon, count in charges:
            roles[budget_id][role] = float(epsilon)
            counts[budget_id] += int(count)
        return tuple(PeriodUsage(product=b.product_id, period=b.period, spent=float(b.spent),
                                 cap=float(b.cap), delta_spent=float(b.delta_spent),
                                 delta_cap=float(b.delta_cap), releases=counts[b.id],
                                 by_role=dict(sorted(roles[b.id].items())),
                                 principals=int(who.get(b.id, 0)))
                     for b in budgets)
