"""A failing store reaches the caller as StoreError, audited, with nothing spent (issue 14,
item 7)."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from data.models import AuditEntry, BudgetAccount, BudgetEntry, CubeMonthly, ProductVersion
from data.models import Release as ReleaseRow
from data.prepared import Batch
from privacy import Gate, Principal, Query, StoreError

NOW = datetime(2026, 11, 21, 12, 0)
MONTH = date(2026, 6, 1)
PRINCIPAL = Principal(subject="analyst@kigali-east", display_name="Analyst", role="researcher",
                      tenant="kigali-east", source="demo")
QUERY = Query(product="health.vaccinations", metric="doses", level="dp_medium", start=MONTH,
              end=MONTH)


@pytest.fixture
def gate(store, catalog) -> Gate:
    with store.write.begin() as session:
        session.add(CubeMonthly(tenant_id="kigali-east", product_id="health.vaccinations",
                                metric="doses", period=MONTH, state="KGL", district="KGL-GAS",
                                h3_cell="87GAS", age_bucket="0-5", gender="female",
                                category="polio", n_events=40, value_sum=0.0))
        session.add(ProductVersion(tenant_id="kigali-east", product_id="health.vaccinations",
                                   data_version=1, refreshed_at=NOW, cube_rows=1))
    return Gate(store, catalog, clock=lambda: NOW)


def _connection_lost(*args, **kwargs):
    raise OperationalError("SELECT period, sum(n_events) FROM cube_monthly WHERE tenant_id = ?",
                           {}, Exception("server closed the connection unexpectedly"))


def _nothing_spent(store) -> None:
    with store.read() as session:
        assert session.scalar(select(func.coalesce(func.sum(BudgetAccount.spent), 0.0))) == 0.0
        assert session.scalars(select(BudgetEntry)).all() == []
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 0


def _error_audits(store) -> list[AuditEntry]:
    with store.read() as session:
        return list(session.scalars(select(AuditEntry).where(
            AuditEntry.action == "release", AuditEntry.outcome == "error")))


def test_a_store_failing_mid_release_raises_store_error_and_audits_it(gate, store, monkeypatch):
    """The cube read fails: StoreError without SQL, chained to the cause, audited "error"."""
    monkeypatch.setattr(gate, "_aggregate", _connection_lost)
    with pytest.raises(StoreError, match="store failed .* nothing was spent") as raised:
        gate.release(PRINCIPAL, QUERY)
    assert "SELECT" not in str(raised.value) and "cube_monthly" not in str(raised.value)
    assert isinstance(raised.value.__cause__, OperationalError)
    _nothing_spent(store)
    [entry] = _error_audits(store)
    assert entry.principal == PRINCIPAL.subject and entry.target == "health.vaccinations.doses"
    assert entry.detail["error"] == "Exception" and "store failed" in entry.detail["reason"]


def test_a_real_driver_error_is_translated_on_both_stores(gate, store):
    """A table gone from under the gate (UndefinedTable, "no such table") is a StoreError."""
    with store.engine.begin() as connection:
        connection.execute(text("DROP TABLE cube_monthly"))
    with pytest.raises(StoreError, match="store failed while answering"):
        gate.release(PRINCIPAL, QUERY)
    _nothing_spent(store)
    assert len(_error_audits(store)) == 1


def test_a_failing_write_rolls_the_charge_back_and_raises_store_error(gate, store, monkeypatch):
    """The storing transaction fails after its statements ran (the ε drawn, the release
    inserted), before the commit: StoreError and nothing spent."""
    send = Batch.send

    def send_then_fail(batch, on):
        send(batch, on)
        assert on.scalar(select(func.count()).select_from(ReleaseRow)) == 1  # not committed
        _connection_lost()

    monkeypatch.setattr(Batch, "send", send_then_fail)
    with pytest.raises(StoreError, match="nothing was spent"):
        gate.release(PRINCIPAL, QUERY)
    _nothing_spent(store)
    assert len(_error_audits(store)) == 1


def test_a_store_that_cannot_take_the_audit_entry_still_raises_the_store_error(gate, store,
                                                                               monkeypatch):
    """Store down for the audit too: the original failure is raised, not the audit's."""
    monkeypatch.setattr(gate, "_aggregate", _connection_lost)
    monkeypatch.setattr(store.write, "begin", _connection_lost)
    with pytest.raises(StoreError, match="answering this health.vaccinations query"):
        gate.release(PRINCIPAL, QUERY)
    monkeypatch.undo()
    _nothing_spent(store)
    assert _error_audits(store) == []


def test_an_integrity_error_that_is_no_race_is_a_store_error_not_a_bug(gate, store,
                                                                        monkeypatch):
    """Storing failed, yet a re-read finds nothing new stored: StoreError, not a retry loop."""
    attempts = []

    def duplicate(*args, **kwargs):
        attempts.append(1)
        raise IntegrityError("INSERT INTO release_periods …", {}, Exception("duplicate key"))

    monkeypatch.setattr(gate, "_fresh", duplicate)
    with pytest.raises(StoreError, match="store failed .* \\(Exception\\)"):
        gate.release(PRINCIPAL, QUERY)
    assert len(attempts) == 1
    _nothing_spent(store)
    assert len(_error_audits(store)) == 1
