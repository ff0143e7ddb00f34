"""The durable (ε, δ) budget ledger: charge within a release's transaction, or reserve → commit /
reserve → refund around a long job.

Owns budget arithmetic in the database: each viewer's monthly allowance (``Ledger``) and each
data month's lifetime budget (``PeriodLedger``). A reservation is one conditional upsert
(created drawn on, or ``spent + ε <= cap`` and ``delta_spent + δ <= delta_cap`` on the existing
row) so that it is atomic on both stores: SQLite serialises writers (``BEGIN IMMEDIATE``), and
PostgreSQL's ON CONFLICT DO UPDATE locks the existing row and evaluates its WHERE clause on the
newest committed version when two transactions draw on the same row. Nothing here lives
in memory between calls.
"""

from __future__ import annotations

import calendar
from contextlib import nullcontext
from collections.abc import Callable
from datetime import date, datetime
from typing import NamedTuple

from functools import cache

from sqlalchemy import Float, and_, bindparam, false, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from data.bootstrap import utcnow
from data.catalog import Policy
from data.engine import Store
from data.prepared import Batch, Prepared
from data.errors import BudgetExhausted, VeilBug
from data.months import add_months
from data.models import BudgetAccount, BudgetEntry, PeriodBudget, PeriodCharge

from privacy._values import (BudgetStatus, Delta, Epsilon, PeriodStatus, Principal, PrivacyLoss,
                             Query)

__all__ = ["BudgetTerms", "Ledger", "PeriodBudgetExhausted", "PeriodLedger", "budget_terms",
           "check_budgets", "window_of"]

# Floating-point sums of ε (e.g. ten times 0.1) may exceed the cap by rounding alone.
_SLACK = 1e-9
#: the same for sums of δ (e.g. ten times 1e-7): a billionth of a δ cap of 1e-6
_DELTA_SLACK = 1e-15


def _upsert(session: Session):
    """The dialect's INSERT … ON CONFLICT construct (both stores speak the same upsert)."""
    return postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _reading(store: Store, session: Session | None):
    """``session`` itself when the caller has one open, else a new read transaction."""
    return nullcontext(session) if session is not None else store.read()


def window_of(day: date) -> tuple[date, date]:
    """The monthly refresh window containing ``day``."""
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


class Ledger:
    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow):
        self._store = store
        self._clock = clock  # stamps entries: the gate's clock, so a pinned gate stamps alike

    def status(self, *, tenant: str, principal: str, product: str, cap: float,
               today: date, delta_cap: float = 0.0,
               session: Session | None = None) -> BudgetStatus:
        """The principal's account in the window of ``today`` (read in ``session`` if given)."""
        start, end = window_of(today)
        with _reading(self._store, session) as session:
            spent = _ACCOUNT_SPENT.first(session, {
                "tenant": tenant, "who": principal, "product": product, "start": start})
        spent_epsilon, spent_delta = spent if spent is not None else (0.0, 0.0)
        return BudgetStatus(product=product, window_start=start, window_end=end,
                            cap=Epsilon(cap), spent=Epsilon(spent_epsilon),
                            delta_cap=Delta(delta_cap), delta_spent=Delta(spent_delta))

    def _draw(self, *, tenant: str, principal: str, role: str, product: str,
              epsilon: Epsilon, cap: float, delta: Delta, delta_cap: float | None,
              today: date) -> tuple[dict, bool]:
        """The parameters of the account's draw (``_draw_account``), and whether an empty
        account could pay it at all (a new account is inserted already drawn on, which the
        conflict's condition does not check, so a draw none could pay is refused before)."""
        if delta.value > 0 and delta_cap is None:
            raise VeilBug(f"a charge of {delta} needs the window's δ cap")
        start, end = window_of(today)
        params = {"tenant": tenant, "who": principal, "who_role": role, "product": product,
                  "start": start, "end": end, "new_cap": cap, "eps": epsilon.value,
                  "eps_limit": cap + _SLACK, "new_delta_cap": delta_cap or 0.0,
                  "delta_add": delta.value, "delta_limit": (delta_cap or 0.0) + _DELTA_SLACK}
        payable = (epsilon.value <= params["eps_limit"]
                   and (delta.value <= 0 or delta.value <= params["delta_limit"]))
        return params, payable

    @staticmethod
    def _drawn(session: Session, rows: list[tuple], params: dict, *, epsilon: Epsilon,
               delta: Delta, cap: float, delta_cap: float | None) -> int:
        """The drawn account's id from the draw's rows, or BudgetExhausted saying which fell
        short (read in the same transaction)."""
        if rows:
            return rows[0][0]
        spent, delta_spent = _ACCOUNT_SPENT.first(session, params) or (0.0, 0.0)
        raise BudgetExhausted(
            requested=epsilon.value, remaining=max(cap - spent, 0.0),
            window=f"{params['start'].isoformat()} – {params['end'].isoformat()}",
            product=params["product"], delta_requested=delta.value,
            delta_remaining=(max(delta_cap - delta_spent, 0.0)
                             if delta_cap is not None else None))

    def _spend(self, session: Session, *, tenant: str, principal: str, role: str,
               product: str, epsilon: Epsilon, cap: float, delta: Delta,
               delta_cap: float | None, today: date) -> int:
        """The principal's account in this window drawn on atomically — ``spent + ε <= cap``
        (and ``delta_spent + δ <= delta_cap`` when δ > 0), its cap set to ``cap`` (the one in
        force: a cap changed meanwhile holds at once) — and created already drawn on if there
        is none: ONE upsert statement (``_draw_account``); its id, or BudgetExhausted saying
        which fell short. On PostgreSQL a concurrent draw on the same account waits for the
        other transaction and the condition is evaluated on the row it committed."""
        params, payable = self._draw(tenant=tenant, principal=principal, role=role,
                                     product=product, epsilon=epsilon, cap=cap, delta=delta,
                                     delta_cap=delta_cap, today=today)
        rows = (_draw_account(_upsert(session), delta_cap is not None, delta.value > 0)
                .rows(session, params) if payable else [])
        return self._drawn(session, rows, params, epsilon=epsilon, delta=delta, cap=cap,
                           delta_cap=delta_cap)

    def reserve(self, *, tenant: str, principal: str, role: str, product: str,
                epsilon: Epsilon, cap: float, today: date, delta: Delta = Delta(0.0),
                delta_cap: float | None = None) -> int:
        """Reserve (ε, δ) or raise BudgetExhausted; returns the entry id to commit or refund."""
        with self._store.write.begin() as session:
            account = self._spend(session, tenant=tenant, principal=principal, role=role,
                                  product=product, epsilon=epsilon, cap=cap, delta=delta,
                                  delta_cap=delta_cap, today=today)
            entry = BudgetEntry(account_id=account, epsilon=epsilon.value,
                                delta=delta.value, state="reserved", created_at=self._clock())
            session.add(entry)
            session.flush()
            return entry.id

    def charge(self, batch: Batch, session: Session, *, tenant: str, principal: str,
               role: str, product: str, epsilon: Epsilon, cap: float, today: date,
               release_id: str, delta: Delta = Delta(0.0),
               delta_cap: float | None = None) -> None:
        """Spend (ε, δ) inside the caller's transaction, which also stores the release: the
        account's draw (as ``_spend``) and its committed entry are queued on ``batch``, which
        the caller sends with the release's other statements; the draw's check raises
        BudgetExhausted if it fell short, and the transaction rolls back with the release.
        Interactive releases use this; long jobs (exports) use reserve → commit / refund.
        """
        params, payable = self._draw(tenant=tenant, principal=principal, role=role,
                                     product=product, epsilon=epsilon, cap=cap, delta=delta,
                                     delta_cap=delta_cap, today=today)
        if not payable:
            self._drawn(session, [], params, epsilon=epsilon, delta=delta, cap=cap,
                        delta_cap=delta_cap)
        batch.add(_draw_account(_upsert(session), delta_cap is not None, delta.value > 0),
                  params, then=lambda rows: self._drawn(session, rows, params, epsilon=epsilon,
                                                        delta=delta, cap=cap,
                                                        delta_cap=delta_cap))
        now = self._clock()
        # the entry finds its account by key (no read-back of the draw's id)
        batch.add(_INSERT_DRAWN_ENTRY, {
            "tenant": tenant, "who": principal, "product": product,
            "start": params["start"], "release_id": release_id, "epsilon": epsilon.value,
            "delta": delta.value, "state": "committed", "created_at": now, "settled_at": now})

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

    A charge locks its months' rows in ascending month order (so that two transactions never
    wait on each other crosswise) and draws on all of them with one conditional UPDATE
    (``spent + ε <= cap``, ``delta_spent + δ <= delta_cap``) inside the release's own
    transaction: if any month cannot pay, it raises and everything rolls back with the release
    and the viewer's charge. Every charge is recorded (``PeriodCharge``) with who and for what.
    """

    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow):
        self._store = store
        self._clock = clock

    def charge(self, batch: Batch, session: Session, *, tenant: str, product: str,
               periods: list[date], epsilon: Epsilon, delta: Delta, cap: float,
               full_cap: float, delta_cap: float, release_id: str, principal: str, role: str,
               viewer: bool = True) -> int:
        """Queue on ``batch`` the draw of (ε, δ) from each of ``periods`` and its charges; the
        draw's check returns each month's lifetime status after the draw (what its upsert
        returned: no read-back) or raises PeriodBudgetExhausted naming the month that cannot
        pay, and the caller's transaction then rolls back. Returns the draw's position in
        what ``batch.send`` returns.

        Everyone's draws together stay within ``full_cap`` (the month's lifetime ε); a
        ``viewer``'s draws, counted apart, within ``cap`` (the viewers' share of it), so that
        publication and umbrella exports, which may use the reserved rest, never eat into
        what viewers have. Two statements: one upsert of every month in month order (created
        already drawn on, or drawn on where it can pay), one insert of every charge, which
        finds the months' rows by key.
        """
        months = sorted(set(periods))
        if not months:
            # no parameter sets: the batch sends nothing for it, and its check sees no rows
            return batch.add(_NOTHING, [], many=True, then=lambda _rows: {})
        now = self._clock()
        limits = {"full": full_cap + _SLACK, "viewer": cap + _SLACK,
                  "delta": delta_cap + _DELTA_SLACK}

        def short(month: date):
            budgets = PeriodBudget.__table__
            spent, viewers, delta_spent = session.execute(select(
                budgets.c.spent, budgets.c.viewer_spent, budgets.c.delta_spent)
                .where(budgets.c.tenant_id == tenant, budgets.c.product_id == product,
                       budgets.c.period == month)).one_or_none() or (0.0, 0.0, 0.0)
            remaining = min(full_cap - spent, cap - viewers if viewer else full_cap)
            return PeriodBudgetExhausted(
                product=product, period=month, requested=epsilon.value,
                remaining=max(remaining, 0.0), cap=cap if viewer else full_cap,
                delta_requested=delta.value,
                delta_remaining=max(delta_cap - delta_spent, 0.0) if delta.value else None)

        # A month not yet drawn on is inserted drawn on, which the conflict's condition does
        # not check: a draw no untouched month could pay is refused before the statement.
        if not (epsilon.value <= limits["full"]
                and (not viewer or epsilon.value <= limits["viewer"])
                and (delta.value <= 0 or delta.value <= limits["delta"])):
            raise short(months[0])
        # The rows go in month order and PostgreSQL locks each conflicting one as it reaches
        # it, so two transactions drawing on overlapping months never wait on each other
        # crosswise (SQLite's writers already take turns).
        params = {"full_limit": limits["full"], "viewer_limit": limits["viewer"],
                  "delta_limit": limits["delta"]}
        params.update({"tenant_id": tenant, "product_id": product, "cap": full_cap,
                       "spent": epsilon.value,
                       "viewer_spent": epsilon.value if viewer else 0.0,
                       "delta_cap": delta_cap, "delta_spent": delta.value})
        params.update({f"period_{i}": month for i, month in enumerate(months)})

        def drawn(rows: list[tuple]) -> dict[date, PeriodStatus]:
            # each drawn month: (period, id, spent, viewers' spent, δ spent)
            after = {row[0]: row[2:] for row in rows}
            missing = [month for month in months if month not in after]
            if missing:  # the caller's transaction rolls back, the months drawn on with it
                raise short(missing[0])
            return {month: PeriodStatus(period=month, cap=Epsilon(full_cap),
                                        spent=Epsilon(spent), delta_cap=Delta(delta_cap),
                                        delta_spent=Delta(delta_spent),
                                        viewer_spent=Epsilon(viewers))
                    for month, (spent, viewers, delta_spent) in after.items()}

        at = batch.add(_draw_months(_upsert(session), viewer, delta.value > 0, len(months)),
                       params, then=drawn)
        batch.add(_INSERT_DRAWN_CHARGES, {
            "tenant": tenant, "product": product, "months": months, "release_id": release_id,
            "principal": principal, "role": role, "epsilon": epsilon.value,
            "delta": delta.value, "at": now})
        return at

    def status(self, *, tenant: str, product: str, periods: list[date], cap: float,
               delta_cap: float, session: Session | None = None) -> dict[date, PeriodStatus]:
        """Spent and cap of each month (a month nothing was released about has spent 0), read
        in ``session`` if given (e.g. the release's own transaction)."""
        with _reading(self._store, session) as session:
            rows = _MONTH_STATUS.rows(session, {
                "tenant": tenant, "product": product, "months": sorted(set(periods))})
        spent = {period: (e, v, d) for period, e, v, d in rows}
        out = {}
        for period in sorted(set(periods)):
            everyone, viewers, delta = spent.get(period, (0.0, 0.0, 0.0))
            out[period] = PeriodStatus(period=period, cap=Epsilon(cap), spent=Epsilon(everyone),
                                       delta_cap=Delta(delta_cap), delta_spent=Delta(delta),
                                       viewer_spent=Epsilon(viewers))
        return out


# --- the ledgers' statements, built once (bound parameters; never rebuilt per release) ----------

_accounts = BudgetAccount.__table__
_ACCOUNT = (_accounts.c.tenant_id == bindparam("tenant"),
            _accounts.c.principal == bindparam("who"),
            _accounts.c.product_id == bindparam("product"),
            _accounts.c.window_start == bindparam("start"))
_ACCOUNT_SPENT = Prepared(select(_accounts.c.spent, _accounts.c.delta_spent).where(*_ACCOUNT))



def _values_of(table, names: tuple[str, ...]):
    """``names`` as parameters of their columns' types."""
    return [bindparam(name, type_=table.c[name].type) for name in names]


_entries = BudgetEntry.__table__
_ENTRY = ("release_id", "epsilon", "delta", "state", "created_at", "settled_at")
#: A committed entry on the account of (tenant, who, product, start), found by key.
_INSERT_DRAWN_ENTRY = Prepared(insert(_entries).from_select(
    ["account_id", *_ENTRY],
    select(_accounts.c.id, *_values_of(_entries, _ENTRY)).where(*_ACCOUNT)))


@cache
def _draw_account(upsert, with_delta_cap: bool, with_delta: bool):
    """The account's draw as one upsert: inserted drawn on, or (on conflict) ``spent + ε <=
    cap`` (and ``delta_spent + δ <= delta_cap`` when δ > 0) drawn with the cap in force set,
    and the window's δ cap when one is given; returns the id when it drew."""
    eps = bindparam("eps", type_=Float)
    added = bindparam("delta_add", type_=Float)
    statement = upsert(_accounts).values(
        tenant_id=bindparam("tenant"), principal=bindparam("who"), role=bindparam("who_role"),
        product_id=bindparam("product"), window_start=bindparam("start"),
        window_end=bindparam("end"), cap=bindparam("new_cap", type_=Float), spent=eps,
        delta_cap=bindparam("new_delta_cap", type_=Float),
        delta_spent=added if with_delta else 0.0)
    conditions = [_accounts.c.spent + eps <= bindparam("eps_limit", type_=Float)]
    values = {"spent": _accounts.c.spent + eps, "cap": bindparam("new_cap", type_=Float)}
    if with_delta_cap:
        values["delta_cap"] = bindparam("new_delta_cap", type_=Float)
    if with_delta:
        conditions.append(_accounts.c.delta_spent + added
                          <= bindparam("delta_limit", type_=Float))
        values["delta_spent"] = _accounts.c.delta_spent + added
    return Prepared(statement.on_conflict_do_update(
        index_elements=["tenant_id", "principal", "product_id", "window_start"],
        set_=values, where=and_(*conditions)).returning(_accounts.c.id))


_budgets = PeriodBudget.__table__
_MONTHS = (_budgets.c.tenant_id == bindparam("tenant"),
           _budgets.c.product_id == bindparam("product"),
           _budgets.c.period.in_(bindparam("months", expanding=True)))
_MONTH_STATUS = Prepared(select(_budgets.c.period, _budgets.c.spent, _budgets.c.viewer_spent,
                                _budgets.c.delta_spent).where(*_MONTHS), expanding=("months",))


_charges = PeriodCharge.__table__
_CHARGE = ("release_id", "principal", "role", "epsilon", "delta", "at")
#: A charge on each of the months of (tenant, product), found by key.
_INSERT_DRAWN_CHARGES = Prepared(insert(_charges).from_select(
    ["budget_id", *_CHARGE],
    select(_budgets.c.id, *_values_of(_charges, _CHARGE)).where(*_MONTHS)),
    expanding=("months",))
#: A placeholder in a batch, queued with no parameter sets: it is never sent.
_NOTHING = Prepared(select(literal(1)).where(false()))

_MONTH_COLUMNS = ("tenant_id", "product_id", "period", "cap", "spent", "viewer_spent",
                  "delta_cap", "delta_spent")


@cache
def _draw_months(upsert, viewer: bool, with_delta: bool, months: int):
    """The draw on ``months`` months as one multi-row upsert (row i's month is the parameter
    ``period_i``, rows in month order; the other values are one parameter each, the same for
    every month: few parameters, so the driver caches the statement's parsing), inserted
    drawn on, or (on conflict)
    everyone's ``spent + ε`` within the full cap, a viewer's ``viewer_spent + ε`` within the
    viewers' share, ``delta_spent + δ`` within the δ cap when δ > 0; returns each drawn
    month's period, id and what it has spent now."""
    shared = {name: bindparam(name, type_=_budgets.c[name].type) for name in _MONTH_COLUMNS
              if name != "period"}
    statement = upsert(_budgets).values([
        {**shared, "period": bindparam(f"period_{i}", type_=_budgets.c.period.type)}
        for i in range(months)])
    new = statement.excluded
    conditions = [_budgets.c.spent + new.spent <= bindparam("full_limit", type_=Float)]
    values = {"spent": _budgets.c.spent + new.spent, "cap": new.cap,
              "delta_cap": new.delta_cap}
    if viewer:
        conditions.append(_budgets.c.viewer_spent + new.viewer_spent
                          <= bindparam("viewer_limit", type_=Float))
        values["viewer_spent"] = _budgets.c.viewer_spent + new.viewer_spent
    if with_delta:
        conditions.append(_budgets.c.delta_spent + new.delta_spent
                          <= bindparam("delta_limit", type_=Float))
        values["delta_spent"] = _budgets.c.delta_spent + new.delta_spent
    return Prepared(statement.on_conflict_do_update(
        index_elements=["tenant_id", "product_id", "period"], set_=values,
        where=and_(*conditions))
        .returning(_budgets.c.period, _budgets.c.id, _budgets.c.spent,
                   _budgets.c.viewer_spent, _budgets.c.delta_spent))


class BudgetTerms(NamedTuple):
    """What a release costs and which budgets it draws on."""

    epsilon: Epsilon
    delta: Delta
    periods: list[date]   # the data months whose lifetime budget it draws on
    viewer: bool          # the asker draws on the viewers' share (not a reserved identity)
    period_cap: float     # the share of a month's lifetime budget the asker may draw on


def budget_terms(principal: Principal, query: Query, loss: PrivacyLoss, computed: list[date], *,
                 policy: Policy, lookback_months: int = 0) -> BudgetTerms:
    """What a release of ``query`` computing the periods ``computed`` afresh costs (``loss``,
    nothing when all are stored or derived) and draws from.

    ``lookback_months``: the metric's cells of a month also read the persons of that many
    months before it (``MetricSpec.lookback_months``: learner status reads month M−1), so
    those months' lifetime budgets pay too, each once however many computed months read it.
    """
    epsilon = loss.epsilon if computed else Epsilon(0.0)
    delta = loss.delta if computed else Delta(0.0)
    # every data month this release reads afresh draws its ε once from that month's
    # lifetime budget (a window period reads all of its months in one measurement)
    read = ((list(query.months) if query.period == "window" else computed)
            if computed else [])
    periods = sorted({add_months(month, -back) for month in read
                      for back in range(lookback_months + 1)})
    viewer = not _reserved(principal)
    period_cap = policy.periods.cap(reserved_user=not viewer)
    return BudgetTerms(epsilon=epsilon, delta=delta, periods=periods, viewer=viewer,
                       period_cap=period_cap)


def check_budgets(session: Session, terms: BudgetTerms, *, ledger: Ledger,
                  periods: PeriodLedger, policy: Policy, tenant: str, principal: str,
                  product: str, cap: float, today: date) -> None:
    """Cheap early refusals, read in the release's read transaction; the authoritative
    checks are the conditional UPDATEs of the write transaction."""
    epsilon, delta = terms.epsilon, terms.delta
    if epsilon.value <= 0:
        return
    period_policy = policy.periods
    for status in periods.status(
            tenant=tenant, product=product, periods=terms.periods,
            cap=terms.period_cap, delta_cap=period_policy.delta, session=session).values():
        left = min(period_policy.epsilon - status.spent.value,
                   terms.period_cap - status.viewer_spent.value if terms.viewer
                   else period_policy.epsilon)
        if (epsilon.value > left + 1e-9
                or status.delta_spent.value + delta.value > period_policy.delta + 1e-15):
            raise PeriodBudgetExhausted(
                product=product, period=status.period,
                requested=epsilon.value, remaining=max(left, 0.0),
                cap=terms.period_cap, delta_requested=delta.value,
                delta_remaining=(max(period_policy.delta - status.delta_spent.value, 0)
                                 if delta.value else None))
    delta_cap = policy.delta_cap
    status = ledger.status(tenant=tenant, principal=principal, product=product, cap=cap,
                           delta_cap=delta_cap, today=today, session=session)
    if (status.spent.value + epsilon.value > status.cap.value + 1e-9
            or status.delta_spent.value + delta.value > delta_cap + 1e-15):
        raise BudgetExhausted(
            requested=epsilon.value, remaining=status.remaining.value,
            window=f"{status.window_start.isoformat()} – {status.window_end.isoformat()}",
            product=product, delta_requested=delta.value,
            delta_remaining=status.remaining_delta.value)


def _reserved(principal: Principal) -> bool:
    """Whether ``principal`` may draw on the reserved share of a month's lifetime budget: the
    tenant's publication identity and the umbrella-export identities (``source="system"``)."""
    return principal.source == "system" and (principal.role == "publisher"
                                             or principal.subject.startswith("umbrella:"))
