"""A lifetime budget per month of data, shared by every viewer, export and publication
(issue 16), on both stores.

A small lifetime (ε 4, viewers' share 3) is set on the catalog so a handful of releases reach
it; the catalog's own is in catalog/policy.toml ``[period_budget]``.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import date, datetime

import pytest
from sqlalchemy import event, func, select

from data.bootstrap import demo_username
from data.catalog import PeriodPolicy, PlannerPolicy
from data.models import BudgetAccount, CubeMonthly, PeriodBudget, PeriodCharge, ProductVersion
from data.prepared import Batch
from privacy import BudgetExhausted, Gate, PeriodBudgetExhausted, Principal, Query
from privacy._budget import PeriodLedger
from privacy._values import Delta, Epsilon

NOW = datetime(2026, 11, 21, 12, 0)
MONTHS = [date(2026, m, 1) for m in range(1, 13)]
LIFETIME = PeriodPolicy(epsilon=4.0, delta=1e-5, reserved=0.25)  # viewers stop at ε 3


def _principal(role: str, who: str = "") -> Principal:
    return Principal(subject=who or demo_username(role, "kigali-east"), display_name=role,
                     role=role, tenant="kigali-east", source="demo")


@pytest.fixture
def gate(store, catalog) -> Gate:
    with store.write.begin() as session:
        for month in MONTHS:
            for district in ("KGL-GAS", "EAS-RWA"):
                session.add(CubeMonthly(
                    tenant_id="kigali-east", product_id="health.vaccinations", metric="doses",
                    period=month, state=district[:3], district=district,
                    h3_cell="87" + district[-3:], age_bucket="0-5", gender="female",
                    category="polio", n_events=200, value_sum=0.0))
        session.add(ProductVersion(tenant_id="kigali-east", product_id="health.vaccinations",
                                   data_version=1, refreshed_at=NOW, cube_rows=24))
    # Deriving coarser views for free is off here: these tests pin what fresh releases draw
    # (tests/system/test_derive.py pins that derived ones draw nothing).
    policy = dataclasses.replace(catalog.policy, periods=LIFETIME,
                                 planner=PlannerPolicy(derive=False))
    return Gate(store, dataclasses.replace(catalog, policy=policy), clock=lambda: NOW)


def _query(start=MONTHS[5], end=MONTHS[5], **overrides) -> Query:
    return Query(product="health.vaccinations", metric="doses", level="dp_medium",
                 start=start, end=end, **overrides)


def _spent(store, month: date) -> float:
    with store.read() as session:
        return session.scalar(select(PeriodBudget.spent).where(
            PeriodBudget.period == month)) or 0.0


def _viewer_spent(store) -> float:
    with store.read() as session:
        return session.scalar(select(func.coalesce(func.sum(BudgetAccount.spent), 0.0)))


def test_viewers_of_different_roles_share_one_months_lifetime(gate, store):
    """A policy maker and a researcher asking different things of June draw from June's one
    budget; at its viewers' share (ε 3) the next view is refused, whoever asks."""
    maker, researcher = _principal("policy_maker"), _principal("researcher")
    gate.release(maker, _query())
    gate.release(maker, _query(group_by=("month", "district")))
    gate.release(researcher, _query(group_by=("month", "state")))
    assert _spent(store, MONTHS[5]) == pytest.approx(3.0)
    for who in (maker, researcher):
        with pytest.raises(PeriodBudgetExhausted, match="June 2026") as refused:
            gate.release(who, _query(filters=(("district", "KGL-GAS"),)))
        assert refused.value.period == MONTHS[5]
    assert _spent(store, MONTHS[5]) == pytest.approx(3.0)  # refusals spend nothing
    # a stored release is still served, free, and other months are untouched
    assert gate.release(researcher, _query(group_by=("month", "state"))).reused
    gate.release(researcher, _query(start=MONTHS[6], end=MONTHS[6]))
    [june] = gate.lifetime(maker, product="health.vaccinations", months=[MONTHS[5]])
    assert (june.spent.value, june.cap.value) == (pytest.approx(3.0), 4.0)


def test_a_twelve_month_series_charges_each_month_once(gate, store):
    """Months hold disjoint person-days: a 12-month series costs each month its ε once, and
    the viewer its ε once; the release states the lifetime of every month it reads."""
    release = gate.release(_principal("policy_maker"), _query(start=MONTHS[0], end=MONTHS[11]))
    for month in MONTHS:
        assert _spent(store, month) == pytest.approx(release.charged.value) == 1.0
    assert _viewer_spent(store) == pytest.approx(1.0)
    with store.read() as session:
        charges = session.scalars(select(PeriodCharge)).all()
    assert len(charges) == 12 and {c.release_id for c in charges} == {release.id}
    assert [s.period for s in release.lifetime] == MONTHS
    assert all(s.spent.value == pytest.approx(1.0) for s in release.lifetime)
    # a longer series reusing stored months pays only for its new one
    longer = gate.release(_principal("policy_maker"), _query(start=MONTHS[0], end=MONTHS[11],
                                                             period="window"))
    assert all(_spent(store, m) == pytest.approx(2.0) for m in MONTHS)  # a window reads all
    assert longer.charged.value == pytest.approx(1.0)


def _writes(store, call) -> list[str]:
    """Each transaction ``call`` begins ("BEGIN") and the table of each data-changing
    statement it sends, in order."""
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        words = statement.split()
        if words and words[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            into = words[2] if words[0].upper() in {"INSERT", "DELETE"} else words[1]
            sent.append(words[0].upper() + " " + into.strip(chr(34)))

    def begin(conn):
        sent.append("BEGIN")

    event.listen(store.engine, "before_cursor_execute", record)
    event.listen(store.engine, "begin", begin)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
        event.remove(store.engine, "begin", begin)
    return sent


def test_a_charge_on_no_months_sends_nothing(store):
    """A charge on no months (the gate never queues one: it charges the months it draws on)
    is an empty draw: the batch sends no statement for it, and its result finds no month."""
    ledger = PeriodLedger(store, clock=lambda: NOW)
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    batch = Batch()
    with store.write.begin() as session:
        session.connection()  # the transaction's BEGIN is not the charge's
        event.listen(store.engine, "before_cursor_execute", record)
        try:
            at = ledger.charge(batch, session, tenant="kigali-east",
                               product="health.vaccinations", periods=[],
                               epsilon=Epsilon(1.0), delta=Delta(0.0), cap=3.0, full_cap=4.0,
                               delta_cap=1e-5, release_id="r-none", principal="p", role="r")
            results = batch.send(session)
        finally:
            event.remove(store.engine, "before_cursor_execute", record)
    assert results[at] == {} and sent == []


@pytest.mark.parametrize("months", [1, 12])
def test_a_fresh_release_writes_six_statements_whatever_its_months(gate, store, months):
    """Issue 18: one read transaction (the plan's settings included) and one write
    transaction; the charge is set-based — the viewer's account drawn on (or created drawn
    on) by one upsert, every month by one upsert — and the release and its periods are one
    insert each, however many months it reads; a stored release is one read, no write. The
    months' lifetime rows, which every release of those months must lock, are drawn on last
    (held from their draw to the commit only)."""
    query = _query(start=MONTHS[0], end=MONTHS[months - 1])
    principal = _principal("policy_maker")
    for _ in range(2):  # a new account and new months, then existing ones (a new data version)
        assert _writes(store, lambda: gate.release(principal, query)) == [
            "BEGIN", "BEGIN", "INSERT budget_accounts", "INSERT budget_entries",
            "INSERT releases", "INSERT release_periods", "INSERT period_budgets",
            "INSERT period_charges"]
        with store.write.begin() as session:
            session.get(ProductVersion, ("kigali-east", "health.vaccinations")).data_version += 1
    assert all(_spent(store, month) == pytest.approx(2.0) for month in MONTHS[:months])
    assert _viewer_spent(store) == pytest.approx(2.0)
    gate.release(principal, query)
    assert _writes(store, lambda: gate.release(principal, query)) == ["BEGIN"]


def test_concurrent_releases_never_overspend_a_month(gate, store):
    """16 viewers ask 16 different views of June at once: exactly the viewers' share (3) is
    answered, the rest refused for June's budget, and June has spent exactly ε 3."""
    views = [_query(filters=(("district", d),), group_by=g)
             for d in ("KGL-GAS", "EAS-RWA")
             for g in (("month",), ("month", "age_bucket"), ("month", "category"),
                       ("month", "state"))] + \
            [_query(group_by=g) for g in (("month",), ("month", "district"), ("month", "state"),
                                          ("month", "age_bucket"), ("month", "category"),
                                          ("month", "gender"), ("month", "h3_cell"),
                                          ("month", "district", "category"))]
    outcomes: list[object] = []
    barrier = threading.Barrier(len(views))

    def ask(i: int, query: Query) -> None:
        barrier.wait()
        try:
            outcomes.append(gate.release(_principal("policy_maker", f"pm-{i}@kigali-east"),
                                         query))
        except BudgetExhausted as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=ask, args=(i, q)) for i, q in enumerate(views)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, PeriodBudgetExhausted)]
    assert len(answered) == 3 and len(refused) == len(views) - 3
    assert _spent(store, MONTHS[5]) == pytest.approx(3.0)
    assert _viewer_spent(store) == pytest.approx(3.0)  # refused viewers were charged nothing


def test_a_month_that_cannot_pay_rolls_back_every_charge(gate, store, monkeypatch):
    """A two-month series whose second month is spent: caught by the charge itself (the early
    check is blinded, as a concurrent release between check and charge would make it), the
    first month's draw and the viewer's charge roll back with it."""
    maker = _principal("policy_maker")
    for view in (("month",), ("month", "district"), ("month", "state")):
        gate.release(maker, _query(start=MONTHS[6], end=MONTHS[6], group_by=view))
    assert _spent(store, MONTHS[6]) == pytest.approx(3.0)
    before = _viewer_spent(store)
    monkeypatch.setattr(gate._periods, "status", lambda **_kwargs: {})
    with pytest.raises(PeriodBudgetExhausted, match="July 2026"):
        gate.release(_principal("researcher"), _query(start=MONTHS[5], end=MONTHS[6],
                                                      group_by=("month", "age_bucket")))
    assert _spent(store, MONTHS[5]) == 0.0 and _spent(store, MONTHS[6]) == pytest.approx(3.0)
    assert _viewer_spent(store) == pytest.approx(before)
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(PeriodCharge)) == 3


def test_publication_and_exports_draw_from_the_same_months(gate, store, tmp_path):
    """Donor publication (and umbrella exports) may use the reserved share: after viewers spent
    theirs (3), a publication still runs (to 4) and shows in the month's record by role; an
    ordinary export is a release like any other and is refused once viewers' share is gone."""
    maker = _principal("policy_maker")
    gate.release(maker, _query(group_by=("month", "district")))
    gate.exports.request(maker, _query(group_by=("month", "state")), purpose="policy_planning")
    gate.exports.run_worker(directory=tmp_path, once=True)
    gate.release(_principal("researcher"), _query())
    assert _spent(store, MONTHS[5]) == pytest.approx(3.0)
    published = gate.publish(tenant="kigali-east", query=_query(group_by=("month", "category")),
                             requested_by="test")
    assert _spent(store, MONTHS[5]) == pytest.approx(4.0)
    with pytest.raises(PeriodBudgetExhausted):
        gate.publish(tenant="kigali-east", query=_query(group_by=("month", "age_bucket")),
                     requested_by="test")
    [june] = gate.compliance.period_usage(_principal("compliance_officer"),
                                          product="health.vaccinations")
    assert june.period == MONTHS[5] and june.releases == 4 and june.principals == 3
    assert june.by_role == {"policy_maker": pytest.approx(2.0), "publisher": pytest.approx(1.0),
                            "researcher": pytest.approx(1.0)}
    assert published.lifetime[0].spent.value == pytest.approx(4.0)


def test_two_roles_asking_the_same_query_share_one_release(gate, store):
    """Issue 16: the stored release is keyed by what was computed, not who asked: a researcher
    asking what a policy maker already asked gets the same numbers, free, and June is drawn once."""
    first = gate.release(_principal("policy_maker"), _query(group_by=("month", "district")))
    second = gate.release(_principal("researcher"), _query(group_by=("month", "district")))
    assert second.reused and second.charged.value == 0 and second.cells == first.cells
    assert _spent(store, MONTHS[5]) == pytest.approx(1.0)
    assert _viewer_spent(store) == pytest.approx(1.0)


def test_publication_never_eats_into_the_viewers_share(gate, store):
    """Snapshots published first draw on the reserved share: viewers still get all of theirs
    (ε 3), and everyone together stops at the month's lifetime (ε 4)."""
    gate.publish(tenant="kigali-east", query=_query(group_by=("month", "category")),
                 requested_by="test")
    maker = _principal("policy_maker")
    for view in (("month",), ("month", "district"), ("month", "state")):
        gate.release(maker, _query(group_by=view))
    assert _spent(store, MONTHS[5]) == pytest.approx(4.0)
    with pytest.raises(PeriodBudgetExhausted):
        gate.release(maker, _query(group_by=("month", "age_bucket")))
    with pytest.raises(PeriodBudgetExhausted):  # the lifetime is spent, for publication too
        gate.publish(tenant="kigali-east", query=_query(group_by=("month", "age_bucket")),
                     requested_by="test")
