"""Record-level operational lists through the gate: treatments, tenant lock, paging, audit."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import select

from data.models import AuditEntry, Registration
from privacy import AccessDenied, Gate, InvalidInput, Principal, RecordQuery


def _principal(role: str, tenant: str = "kigali-east") -> Principal:
    return Principal(subject=f"{role}@{tenant}", display_name=role, role=role, tenant=tenant,
                     source="demo")


@pytest.fixture
def gate(store, catalog) -> Gate:
    with store.write.begin() as session:
        for tenant, count in (("kigali-east", 120), ("south", 30)):
            for i in range(count):
                session.add(Registration(
                    registration_id=f"{tenant}-reg-{i:04d}", tenant_id=tenant,
                    pseudonym=f"{i:032x}", registered_at=datetime(2026, 1, 1) + timedelta(hours=i),
                    district="KGL-GAS" if tenant == "kigali-east" else "SOU-HUY",
                    agent_code=f"AG-{i % 4:03d}", status="unverified" if i % 3 else "verified",
                    birth_date=date(1990, 5, 17), gender="female", household_size=4))
    return Gate(store, catalog, secret="test-secret-0123456789")


def test_case_worker_sees_birthdates_masks_sensitive_and_pseudonymises_ids(gate):
    """Case worker treatments: quasi-identifiers shown, sensitive masked, identifiers re-keyed."""
    page = gate.records(_principal("case_worker"), RecordQuery(product="social.registrations"))
    assert page.total == 120 and len(page.rows) == 50
    row = page.rows[0]
    assert row["birth_date"] == date(1990, 5, 17)
    assert row["household_size"] == "•••"
    assert row["pseudonym"] != "0" * 32 and len(row["pseudonym"]) == 12
    assert row["registration_id"].startswith("kigali-east") is False
    assert page.treatments["birth_date"] == "show" and page.treatments["pseudonym"] == "pseudonymise"


def test_pseudonyms_are_stable_across_pages_and_differ_between_tenants_of_view(gate):
    """The same record keeps its re-keyed id on every page; paging returns disjoint rows."""
    principal = _principal("case_worker")
    first = gate.records(principal, RecordQuery(product="social.registrations", page_size=10))
    again = gate.records(principal, RecordQuery(product="social.registrations", page_size=10))
    second = gate.records(principal, RecordQuery(product="social.registrations", page_size=10,
                                                 page=2))
    assert [r["pseudonym"] for r in first.rows] == [r["pseudonym"] for r in again.rows]
    assert not {r["pseudonym"] for r in first.rows} & {r["pseudonym"] for r in second.rows}
    assert first.pages == 12


def test_filters_and_search_are_pushed_into_sql_and_tenant_locked(gate):
    """Unverified registrations of one agent, only of the principal's tenant."""
    page = gate.records(_principal("case_worker"), RecordQuery(
        product="social.registrations", filters=(("status", "unverified"),), search="ag-001",
        page_size=200))
    assert page.total == len(page.rows) == sum(1 for i in range(120) if i % 3 and i % 4 == 1)
    assert {r["agent_code"] for r in page.rows} == {"AG-001"}
    assert {r["district"] for r in page.rows} == {"KGL-GAS"}
    south = gate.records(_principal("case_worker", "south"),
                         RecordQuery(product="social.registrations"))
    assert south.total == 30


def test_generalised_and_hidden_fields_for_a_role_with_weaker_rights(gate, catalog):
    """A role that generalises quasi-identifiers sees age groups and months, never birthdates."""
    roles = dict(catalog.roles)
    roles["researcher"] = dataclasses.replace(roles["researcher"],
                                              record_products=("social.registrations",))
    gate._catalog = dataclasses.replace(catalog, roles=roles)
    page = gate.records(_principal("researcher"), RecordQuery(product="social.registrations"))
    assert "pseudonym" not in page.columns and "household_size" not in page.columns
    row = page.rows[0]
    assert row["birth_date"] == "36-60" or row["birth_date"] == "19-35"
    assert row["registered_at"] == "2026-01"
    with pytest.raises(AccessDenied, match="cannot filter on 'Birth date' \\(generalise\\)"):
        gate.records(_principal("researcher"), RecordQuery(
            product="social.registrations", filters=(("birth_date", "1990-05-17"),)))


def test_roles_without_record_access_are_refused_and_audited(gate, store):
    """A policy maker never reads records; the refusal is audited, every view too."""
    with pytest.raises(AccessDenied, match="may not read Beneficiary registrations record"):
        gate.records(_principal("policy_maker"), RecordQuery(product="social.registrations"))
    gate.records(_principal("case_worker"), RecordQuery(product="social.registrations", page=3))
    with store.read() as session:
        entries = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "records_view").order_by(AuditEntry.id)).all()
    assert [(e.role, e.outcome) for e in entries] == [("policy_maker", "refused"),
                                                      ("case_worker", "allowed")]
    assert entries[1].detail["page"] == 3 and entries[1].detail["rows"] == 20


def test_bad_paging_is_rejected():
    with pytest.raises(InvalidInput, match="page_size must be between 1 and 200, got 1000"):
        RecordQuery(product="social.registrations", page_size=1000)
