"""Concurrent releases of overlapping windows: every one is answered or refused for a stated
reason, and a month reads the same in every release that contains it (issue 14, item 6)."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime

from sqlalchemy import func, select

from data.models import BudgetAccount, BudgetEntry, CubeMonthly, ProductVersion, ReleasePeriod
from privacy import Gate, Principal, Query, QueryRefused, add_months

NOW = datetime(2026, 11, 21, 12, 0)
MONTHS = [date(2026, m, 1) for m in range(1, 11)]
THREADS = 64
ROUNDS = 5  # each round a new data version, so every round stores its periods afresh


def _seed(store) -> None:
    with store.write.begin() as session:
        for index, month in enumerate(MONTHS):
            for district in ("KGL-GAS", "EAS-RWA", "KGL-NYA"):
                session.add(CubeMonthly(
                    tenant_id="kigali-east", product_id="health.vaccinations", metric="doses",
                    period=month, state=district[:3], district=district,
                    h3_cell="87" + district[-3:], age_bucket="0-5", gender="female",
                    category="polio", n_events=20 + 7 * index, value_sum=0.0))
        session.add(ProductVersion(tenant_id="kigali-east", product_id="health.vaccinations",
                                   data_version=1, refreshed_at=NOW, cube_rows=30))


def _window(start: date) -> Query:
    return Query(product="health.vaccinations", metric="doses", level="dp_medium",
                 start=start, end=add_months(start, 2), group_by=("month", "district"))


def _release_all(gate: Gate, principals: list[Principal], queries: list[Query]) -> list:
    """Release query i as principal i, all threads starting together; return the outcomes."""
    outcomes: list = [None] * len(queries)
    barrier = threading.Barrier(len(queries))

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = gate.release(principals[index], queries[index])
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever escaped
            outcomes[index] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(queries))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_overlapping_windows_are_answered_consistently_or_refused(store, catalog):
    """64 threads × 3 rounds of overlapping 3-month windows: no internal error escapes, and
    each month's cells are identical in every release that contains it."""
    _seed(store)
    gate = Gate(store, catalog, clock=lambda: NOW)
    starts = MONTHS[:len(MONTHS) - 2]  # Jan–Mar, Feb–Apr, … Aug–Oct
    principals = [Principal(subject=f"analyst-{i}@kigali-east", display_name=f"analyst {i}",
                            role="researcher", tenant="kigali-east", source="demo")
                  for i in range(THREADS)]
    answered = 0
    for round_ in range(ROUNDS):
        if round_:
            with store.write.begin() as session:
                session.get(ProductVersion, ("kigali-east", "health.vaccinations")) \
                    .data_version += 1
        queries = [_window(starts[i % len(starts)]) for i in range(THREADS)]
        outcomes = _release_all(gate, principals, queries)
        escaped = [o for o in outcomes
                   if isinstance(o, BaseException) and not isinstance(o, QueryRefused)]
        assert escaped == [], f"round {round_}: {len(escaped)} of {THREADS} failed: {escaped[:3]}"
        releases = [o for o in outcomes if not isinstance(o, BaseException)]
        answered += len(releases)
        assert {r.data_version for r in releases} == {round_ + 1}
        # a month reads the same in every release containing it: one noise draw per month
        months: dict[str, set[str]] = {}
        for release in releases:
            for month in {c.key[0] for c in release.cells}:
                shown = sorted(json.dumps(c.to_json(), sort_keys=True)
                               for c in release.cells if c.key[0] == month)
                months.setdefault(month, set()).add(json.dumps(shown))
        assert len(months) == len(MONTHS)
        differing = [month for month, versions in months.items() if len(versions) != 1]
        assert differing == [], f"round {round_}: months shown differently: {differing}"
    assert answered == THREADS * ROUNDS  # ε 1 each, five per principal: none runs out
    with store.read() as session:
        periods = session.scalar(select(func.count()).select_from(ReleasePeriod))
        spent = session.scalar(select(func.sum(BudgetAccount.spent)))
        committed = session.scalar(select(func.sum(BudgetEntry.epsilon)).where(
            BudgetEntry.state == "committed"))
    assert periods == ROUNDS * len(MONTHS)  # each month stored once per data version
    assert spent == committed  # the ledger and its entries agree after the races
