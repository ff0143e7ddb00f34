"""Every refusal is audited, with inputs bounded and storable (issue 15, item 7), on both stores.

Before: a preview's refusal and another tenant's export status or link left no trace; a filter
holding bytes, a NUL (PostgreSQL) or a lone surrogate crashed while writing the audit row; a
100 KB input was echoed whole into the message and the audit row; and a records search for "%"
matched every record (LIKE wildcards were not escaped).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import select

from data.models import AuditEntry, Export, Registration
from privacy import (AccessDenied, Gate, InvalidInput, Principal, Query, QueryRefused,
                     RecordQuery)
from privacy.core import audit

NOW = datetime(2026, 11, 21, 12, 0)


def _principal(role: str, tenant: str = "kigali-east") -> Principal:
    return Principal(subject=f"{role}@{tenant}", display_name=role, role=role, tenant=tenant,
                     source="demo")


@pytest.fixture
def gate(store, catalog) -> Gate:
    with store.write.begin() as session:
        for i in range(40):
            session.add(Registration(
                registration_id=f"kigali-east-reg-{i:04d}", tenant_id="kigali-east",
                pseudonym=f"{i:032x}", registered_at=datetime(2026, 1, 1) + timedelta(hours=i),
                district="KGL-GAS", agent_code=f"AG-{i % 4:03d}",
                status="unverified", birth_date=date(1990, 5, 17), gender="female",
                household_size=4))
    return Gate(store, catalog, secret="test-secret-0123456789", clock=lambda: NOW)


def _entries(store, action: str) -> list[AuditEntry]:
    with store.read() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_a_refused_preview_is_audited(gate, store):
    """Probing what the gate refuses through the cost preview is on record too."""
    query = Query(product="health.vaccinations", metric="doses", level="dp_low",
                  start=date(2026, 1, 1), end=date(2026, 2, 1))  # researchers lack dp_low
    with pytest.raises(AccessDenied):
        gate.preview(_principal("researcher"), query)
    [entry] = _entries(store, "preview")
    assert (entry.outcome, entry.principal, entry.target) == (
        "refused", "researcher@kigali-east", "health.vaccinations.doses")
    assert "dp_low" in entry.detail["reason"]


def test_another_tenants_export_status_and_link_are_refused_and_audited(gate, store):
    """An export id is not a capability: status and link of someone else's export are refused
    with the same words as a missing one, and both attempts are audited."""
    with store.write.begin() as session:
        session.add(Export(
            id="0123456789abcdef0123456789abcdef", tenant_id="south",
            requester="policy_maker@south", role="policy_maker", kind="aggregate",
            product_id="health.vaccinations", query={}, scope=["south"],
            purpose="policy_planning", format="csv", umbrella=False, status="done",
            progress=1.0, policy_version="v", epsilon=0.0, releases=[], masking={},
            attempts=1, created_at=NOW))
    intruder = _principal("policy_maker")
    for call, action in ((gate.exports.status, "export_status"),
                         (gate.exports.link, "export_link")):
        with pytest.raises(AccessDenied, match="you have no export"):
            call(intruder, "0123456789abcdef0123456789abcdef")
        [entry] = _entries(store, action)
        assert entry.outcome == "refused" and entry.detail["owner_tenant"] == "south"
        assert entry.tenant_id == "kigali-east"


@pytest.mark.parametrize("value", [b"KGL-GAS", "KGL\x00GAS", "KGL\ud800GAS"],
                         ids=["bytes", "nul", "lone-surrogate"])
def test_unstorable_filter_values_are_refused_with_a_clear_error(value):
    """Bytes, NUL and unpaired surrogates never reach the gate (or its audit row)."""
    with pytest.raises(InvalidInput, match="filter value"):
        Query(product="health.vaccinations", metric="doses", level="dp_medium",
              start=date(2026, 1, 1), end=date(2026, 1, 1), filters=(("district", value),))
    with pytest.raises(InvalidInput, match="filter value"):
        RecordQuery(product="social.registrations", filters=(("status", value),))


def test_an_audit_entry_stores_any_content_bounded(store):
    """NUL, lone surrogates, bytes and 100 KB strings are stored escaped and cut, never lost."""
    audit(store, principal="attacker\x00@kigali-east", tenant="kigali-east", role="researcher",
          action="release", target="x" * 1000, outcome="refused",
          detail={"nul": "a\x00b", "surrogate": "a\ud800b", "bytes": b"\x00\xff",
                  "huge": "y" * 100_000, "nan": float("nan")})
    [entry] = _entries(store, "release")
    assert entry.detail["nul"] == "a\\x00b" and entry.detail["surrogate"] == "a\\ud800b"
    assert entry.detail["bytes"] == repr(b"\x00\xff") and entry.detail["nan"] == "nan"
    assert len(entry.detail["huge"]) < 600 and "100,000 characters" in entry.detail["huge"]
    assert len(entry.target) <= 300 and "\x00" not in entry.principal


def test_a_huge_input_is_not_echoed_whole(gate, store):
    """A 100 KB filter value: refused in a message of bounded length; the refusal of a 64-
    character unknown district is audited with the value as asked."""
    with pytest.raises(InvalidInput) as refused:
        Query(product="health.vaccinations", metric="doses", level="dp_medium",
              start=date(2026, 1, 1), end=date(2026, 1, 1),
              filters=(("district", "Z" * 100_000),))
    assert len(str(refused.value)) < 300 and "100,000" in str(refused.value)
    with pytest.raises(InvalidInput) as refused:
        RecordQuery(product="social.registrations", search="%" * 100_000)
    assert len(str(refused.value)) < 300
    unknown = "Q" * 64
    with pytest.raises(QueryRefused):
        gate.release(_principal("policy_maker"), Query(
            product="health.vaccinations", metric="doses", level="dp_medium",
            start=date(2026, 1, 1), end=date(2026, 1, 1), filters=(("district", unknown),)))
    [entry] = _entries(store, "release")
    assert unknown in entry.detail["reason"] and len(entry.detail["reason"]) < 600


@pytest.mark.parametrize("needle", ["%", "_", "ag%", "a_-"])
def test_records_search_treats_like_wildcards_as_text(gate, needle):
    """A search for "%" or "_" finds records starting with that text, not every record."""
    page = gate.records(_principal("case_worker"),
                        RecordQuery(product="social.registrations", search=needle))
    assert page.total == 0
    assert gate.records(_principal("case_worker"), RecordQuery(
        product="social.registrations", search="ag-00")).total == 40
