"""The durable (ε, δ) budget ledger: charge within a release's transaction, or reserve → commit /
reserve → refund around a long job.

Owns budget arithmetic in the database: each viewer's monthly allowance (``Ledger``) and each
data month's lifetime budget (``PeriodLedger``). A reservation is one conditional UPDATE
(``spent + ε <= cap`` and ``delta_spent + δ <= delta_cap``) so that it is atomic on both
stores: SQLite serialises writers (``BEGIN IMMEDIATE``), and PostgreSQL re-checks the WHERE
clause on the newest row version when two transactions update the same row. Nothing here lives
in memory between calls.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from data.bootstrap import utcnow
from data.engine import Store
from data.errors import BudgetExhausted, VeilBug
from data.models import BudgetAccount, BudgetEntry, PeriodBudget, PeriodCharge

from privacy._values import BudgetStatus, Delta, Epsilon, PeriodStatus

__all__ = ["Ledger", "PeriodBudgetExhausted", "PeriodLedger", "window_of"]

# Floating-point sums of ε (e.g. ten times 0.1) may exceed the cap by rounding alone.
_SLACK = 1e-9
#: the same for sums of δ (e.g. ten times 1e-7): a billionth of a δ cap of 1e-6
_DELTA_SLACK = 1e-15


def _get_or_create(session: Session, query, make):
    """The row ``query`` finds, created by ``make()`` first when there is none; a concurrent
    session that creates it first wins (the unique constraint), and its row is returned."""
    row = session.scalar(query)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            session.add(make())
    except IntegrityError:
        pass  # a concurrent session created it first
    return session.scalars(query).one()


def window_of(day: date) -> tuple[date, date]:
    """The monthly refresh window containing ``day``."""
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


class Ledger:
    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow):
        self._store = store
        self._clock = clock  # stamps entries: the gate's clock, so a pinned gate stamps alike

    def _account(self, session: Session, *, tenant: str, principal: str, role: str,
                 product: str, cap: float, delta_cap: float | None,
                 today: date) -> BudgetAccount:
        start, end = window_of(today)
        query = select(BudgetAccount).where(
            BudgetAccount.tenant_id == tenant, BudgetAccount.principal == principal,
            BudgetAccount.product_id == product, BudgetAccount.window_start == start)
        return _get_or_create(session, query, lambda: BudgetAccount(
            tenant_id=tenant, principal=principal, role=role, product_id=product,
            window_start=start, window_end=end, cap=cap, spent=0.0,
            delta_cap=delta_cap or 0.0, delta_spent=0.0))

    def status(self, *, tenant: str, principal: str, product: str, cap: float,
               today: date, delta_cap: float = 0.0) -> BudgetStatus:
        start, end = window_of(today)
        with self._store.read() as session:
            spent = session.execute(
                select(BudgetAccount.spent, BudgetAccount.delta_spent).where(
                    BudgetAccount.tenant_id == tenant, BudgetAccount.principal == principal,
                    BudgetAccount.product_id == product,
                    BudgetAccount.window_start == start)).one_or_none()
        spent_epsilon, spent_delta = spent if spent is not None else (0.0, 0.0)
        return BudgetStatus(product=product, window_start=start, window_end=end,
                            cap=Epsilon(cap), spent=Epsilon(spent_epsilon),
                            delta_cap=Delta(delta_cap), delta_spent=Delta(spent_delta))

    def _spend(self, session: Session, *, tenant: str, principal: str, role: str,
               product: str, epsilon: Epsilon, cap: float, delta: Delta,
               delta_cap: float | None, today: date) -> BudgetAccount:
        """The atomic conditional UPDATE ``spent + ε <= cap`` (and ``delta_spent + δ <=
        delta_cap`` when δ > 0), or BudgetExhausted saying which fell short."""
        if delta.value > 0 and delta_cap is None:
            raise VeilBug(f"a charge of {delta} needs the window's δ cap")
        account = self._account(session, tenant=tenant, principal=principal, role=role,
                                product=product, cap=cap, delta_cap=delta_cap, today=today)
        conditions = [BudgetAccount.spent + epsilon.value <= BudgetAccount.cap + _SLACK]
        values = {"spent": BudgetAccount.spent + epsilon.value}
        if delta_cap is not None:
            # the policy's δ cap as of this charge, like the ε cap (``Admin.cap_in``)
            values["delta_cap"] = delta_cap
        if delta.value > 0:
            conditions.append(BudgetAccount.delta_spent + delta.value <= delta_cap + _DELTA_SLACK)
            values["delta_spent"] = BudgetAccount.delta_spent + delta.value
        result = session.execute(
            update(BudgetAccount).where(BudgetAccount.id == account.id, *conditions)
            .values(**values).execution_options(synchronize_session=False))
        if result.rowcount != 1:
            session.refresh(account)
            start, end = window_of(today)
            raise BudgetExhausted(
                requested=epsilon.value, remaining=max(account.cap - account.spent, 0.0),
                window=f"{start.isoformat()} – {end.isoformat()}", product=product,
                delta_requested=delta.value,
                delta_remaining=(max(delta_cap - account.delta_spent, 0.0)
                                 if delta_cap is not None else None))
        return account

    def reserve(self, *, tenant: str, principal: str, role: str, product: str,
                epsilon: Epsilon, cap: float, today: date, delta: Delta = Delta(0.0),
                delta_cap: float | None = None) -> int:
        """Reserve (ε, δ) or raise BudgetExhausted; returns the entry id to commit or refund."""
        with self._store.write.begin() as session:
            account = self._spend(session, tenant=tenant, principal=principal, role=role,
                                  product=product, epsilon=epsilon, cap=cap, delta=delta,
                                  delta_cap=delta_cap, today=today)
            entry = BudgetEntry(account_id=account.id, epsilon=epsilon.value,
                                delta=delta.value, state="reserved", created_at=self._clock())
            session.add(entry)
            session.flush()
            return entry.id

    def charge(self, session: Session, *, tenant: str, principal: str, role: str, product: str,
               epsilon: Epsilon, cap: float, today: date, release_id: str,
               delta: Delta = Delta(0.0), delta_cap: float | None = None) -> None:
        """Spend (ε, δ) inside the caller's transaction, which also stores the release.

        The conditional UPDATE is the reservation and the entry is committed with the release:
        if anything in the transaction fails, the charge rolls back with it. Interactive
        releases use this; long jobs (exports) use reserve → commit / refund instead.
        """
        account = self._spend(session, tenant=tenant, principal=principal, role=role,
                              product=product, epsilon=epsilon, cap=cap, delta=delta,
                              delta_cap=delta_cap, today=today)
        now = self._clock()
        session.add(BudgetEntry(account_id=account.id, release_id=release_id,
                                epsilon=epsilon.value, delta=delta.value, state="committed",
                                created_at=now, settled_at=now))

    def commit(self, session: Session, entry_id: int, *, release_id: str) -> None:
        """Mark a reservation spent, inside the caller's transaction that stores the release."""
        entry = session.get(BudgetEntry, entry_id)
        if entry is None or entry.state != "reserved":
            raise VeilBug(f"budget entry {entry_id} is not a live reservation")
        entry.state, entry.release_id, entry.settled_at = "committed", release_id, self._clock()

    def refund(self, entry_id: int) -> None:
        """Give a reservation back; a no-op if it was already settled."""
        with self._store.write.begin() as session:
            entry = session.get(BudgetEntry, entry_id)
            if entry is None or entry.state != "reserved":
                return
            entry.state, entry.settled_at = "refunded", self._clock()
            session.execute(
                update(BudgetAccount).where(BudgetAccount.id == entry.account_id)
                .values(spent=BudgetAccount.spent - entry.epsilon,
                        delta_spent=BudgetAccount.delta_spent - entry.delta)
                .execution_options(synchronize_session=False))


class PeriodBudgetExhausted(BudgetExhausted):
    """A month of data has spent its lifetime budget: nothing more is released about it."""

    def __init__(self, *, product: str, period: date, requested: float, remaining: float,
                 cap: float, delta_requested: float = 0.0, delta_remaining: float | None = None):
        super().__init__(requested=requested, remaining=remaining, window=f"{period:%B %Y}",
                         product=product, delta_requested=delta_requested,
                         delta_remaining=delta_remaining)
        self.period = period
        self.args = (
            f"Everything released about {period:%B %Y} of {product} has used the part of its "
            f"lifetime privacy budget open to you (ε {cap - remaining:g} of {cap:g}; this "
            f"view needs ε "
            f"{requested:g}{f' and δ {delta_requested:g}' if delta_requested else ''}). The "
            f"budget of a month of data is shared by everyone and never refills, so that what "
            f"anyone in it can lose stays bounded. Nothing was spent: use a published or "
            f"already released view of that month, or a coarser one.",)


class PeriodLedger:
    """The lifetime (ε, δ) of each data month, shared by every release that reads it.

    A charge is one conditional UPDATE per month (``spent + ε <= cap``, ``delta_spent + δ <=
    delta_cap``), in ascending month order so that two transactions never wait on each other
    crosswise, inside the release's own transaction: on failure it rolls back with the release
    and the viewer's charge. Every charge is recorded (``PeriodCharge``) with who and for what.
    """

    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow):
        self._store = store
        self._clock = clock

    def _budget(self, session: Session, *, tenant: str, product: str, period: date,
                cap: float, delta_cap: float) -> PeriodBudget:
        query = select(PeriodBudget).where(PeriodBudget.tenant_id == tenant,
                                           PeriodBudget.product_id == product,
                                           PeriodBudget.period == period)
        return _get_or_create(session, query, lambda: PeriodBudget(
            tenant_id=tenant, product_id=product, period=period, cap=cap, spent=0.0,
            delta_cap=delta_cap, delta_spent=0.0))

    def charge(self, session: Session, *, tenant: str, product: str, periods: list[date],
               epsilon: Epsilon, delta: Delta, cap: float, full_cap: float, delta_cap: float,
               release_id: str, principal: str, role: str, viewer: bool = True) -> None:
        """Draw (ε, δ) from each of ``periods``, or raise PeriodBudgetExhausted naming the
        month that cannot pay; the caller's transaction then rolls back.

        Everyone's draws together stay within ``full_cap`` (the month's lifetime ε); a
        ``viewer``'s draws, counted apart, within ``cap`` (the viewers' share of it), so that
        publication and umbrella exports, which may use the reserved rest, never eat into
        what viewers have.
        """
        now = self._clock()
        for period in sorted(set(periods)):
            budget = self._budget(session, tenant=tenant, product=product, period=period,
                                  cap=full_cap, delta_cap=delta_cap)
            conditions = [PeriodBudget.spent + epsilon.value <= full_cap + _SLACK]
            values = {"spent": PeriodBudget.spent + epsilon.value, "cap": full_cap,
                      "delta_cap": delta_cap}
            if viewer:
                conditions.append(PeriodBudget.viewer_spent + epsilon.value <= cap + _SLACK)
                values["viewer_spent"] = PeriodBudget.viewer_spent + epsilon.value
            if delta.value > 0:
                conditions.append(PeriodBudget.delta_spent + delta.value
                                  <= delta_cap + _DELTA_SLACK)
                values["delta_spent"] = PeriodBudget.delta_spent + delta.value
            result = session.execute(
                update(PeriodBudget).where(PeriodBudget.id == budget.id, *conditions)
                .values(**values).execution_options(synchronize_session=False))
            if result.rowcount != 1:
                session.refresh(budget)
                remaining = min(full_cap - budget.spent,
                                cap - budget.viewer_spent if viewer else full_cap)
                raise PeriodBudgetExhausted(
                    product=product, period=period, requested=epsilon.value,
                    remaining=max(remaining, 0.0), cap=cap if viewer else full_cap,
                    delta_requested=delta.value,
                    delta_remaining=max(delta_cap - budget.delta_spent, 0.0)
                    if delta.value else None)
            session.add(PeriodCharge(budget_id=budget.id, release_id=release_id,
                                     principal=principal, role=role, epsilon=epsilon.value,
                                     delta=delta.value, at=now))

    def status(self, *, tenant: str, product: str, periods: list[date], cap: float,
               delta_cap: float) -> dict[date, PeriodStatus]:
        """Spent and cap of each month (a month nothing was released about has spent 0)."""
        with self._store.read() as session:
            rows = session.execute(select(
                PeriodBudget.period, PeriodBudget.spent, PeriodBudget.viewer_spent,
                PeriodBudget.delta_spent).where(
                PeriodBudget.tenant_id == tenant, PeriodBudget.product_id == product,
                PeriodBudget.period.in_(sorted(set(periods))))).all()
        spent = {period: (e, v, d) for period, e, v, d in rows}
        out = {}
        for period in sorted(set(periods)):
            everyone, viewers, delta = spent.get(period, (0.0, 0.0, 0.0))
            out[period] = PeriodStatus(period=period, cap=Epsilon(cap), spent=Epsilon(everyone),
                                       delta_cap=Delta(delta_cap), delta_spent=Delta(delta),
                                       viewer_spent=Epsilon(viewers))
        return out
