"""Safe exports (SPEC D6) on real stores: purpose, worker, signed links, umbrella approvals.

Each store test runs on SQLite and PostgreSQL. A mutable clock drives leases and link expiry;
the crash test kills a real ``veil export-worker`` subprocess with SIGKILL mid-export.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError

from data.bootstrap import demo_username
from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.models import (AuditEntry, BudgetAccount, CubeMonthly, Export, ExportApproval,
                         ProductVersion, Registration)
from data.models import Release as ReleaseRow
from privacy import (AccessDenied, BudgetExhausted, ConfigError, Gate, InvalidInput, Principal,
                     Query, QueryRefused, RecordQuery)
from privacy._budget import Ledger

NOW = datetime(2026, 11, 21, 12, 0)
MONTHS = (date(2026, 1, 1), date(2026, 6, 1))
SECRET = "test-secret-0123456789abcdef"
TENANTS = ("kigali-east", "north-west", "south")
RECORDS = {"kigali-east": 120, "south": 30}


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def _principal(role: str, tenant: str = "kigali-east", subject: str | None = None) -> Principal:
    return Principal(subject=subject or demo_username(role, tenant), display_name=role,
                     role=role, tenant=tenant, source="demo")


ADMIN = Principal(subject="platform.admin@veil.demo", display_name="admin",
                  role="platform_admin", tenant="kigali-east", source="demo")
ADMIN2 = Principal(subject="platform.admin2@veil.demo", display_name="admin 2",
                   role="platform_admin", tenant="kigali-east", source="demo")


def _seed(store, catalog, *, registrations: dict[str, int] = RECORDS) -> None:
    """Registrations for case workers, and a small vaccination cube in every tenant."""
    with store.write.begin() as session:
        for tenant, count in registrations.items():
            district = catalog.districts_of(tenant)[0].code
            session.add_all(Registration(
                registration_id=f"{tenant}-reg-{i:06d}", tenant_id=tenant,
                pseudonym=f"{i:032x}", registered_at=datetime(2026, 1, 1) + timedelta(hours=i),
                district=district, agent_code=f"AG-{i % 4:03d}",
                status="unverified" if i % 3 else "verified", birth_date=date(1990, 5, 17),
                gender="female", household_size=4 + i % 3) for i in range(count))
        for tenant in TENANTS:
            district = catalog.districts_of(tenant)[0]
            for month in (date(2026, m, 1) for m in range(1, 7)):
                session.add(CubeMonthly(
                    tenant_id=tenant, product_id="health.vaccinations", metric="doses",
                    period=month, state=district.state, district=district.code,
                    h3_cell="-", age_bucket="0-5", gender="female", category="polio",
                    n_events=500, value_sum=0.0))
            session.add(ProductVersion(tenant_id=tenant, product_id="health.vaccinations",
                                       data_version=1, refreshed_at=NOW, cube_rows=6))


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def gate(store, catalog, clock) -> Gate:
    _seed(store, catalog)
    return Gate(store, catalog, secret=SECRET, clock=clock)


@pytest.fixture
def exports_dir(tmp_path) -> Path:
    return tmp_path / "exports"


def _aggregate(level: str = "dp_medium") -> Query:
    return Query(product="health.vaccinations", metric="doses", level=level,
                 start=MONTHS[0], end=MONTHS[1])


def _records(**fields) -> RecordQuery:
    return RecordQuery(product="social.registrations", **fields)


def _work(gate: Gate, directory: Path, **options) -> int:
    return gate.exports.run_worker(directory=directory, once=True, **options)


def _row(store, export_id: str) -> Export:
    with store.read() as session:
        return session.get(Export, export_id)


def _audit(store, *, target: str | None = None, action: str | None = None) -> list[AuditEntry]:
    statement = select(AuditEntry).order_by(AuditEntry.id)
    if target is not None:
        statement = statement.where(AuditEntry.target == target)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    with store.read() as session:
        return list(session.scalars(statement))


def _csv(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode())))


def _done_record_export(gate, directory, principal=None, **options):
    principal = principal or _principal("case_worker")
    status = gate.exports.request(principal, _records(), purpose="case_follow_up", **options)
    assert _work(gate, directory) == 1
    return principal, gate.exports.status(principal, status.id)


# --- requests: purpose, rights, budget ----------------------------------------------------------


@pytest.mark.parametrize("purpose", ["", "   "])
def test_purpose_is_mandatory(gate, store, purpose):
    """A request without a purpose is refused, nothing is queued, and the refusal is audited."""
    with pytest.raises(InvalidInput, match="needs a purpose"):
        gate.exports.request(_principal("case_worker"), _records(), purpose=purpose,
                             justification="urgent follow-up")
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Export)) == 0
    refused = _audit(store, action="export_request")
    assert [(r.outcome, r.target) for r in refused] == [("refused", "social.registrations")]


def test_purpose_must_be_coded_and_open_to_the_role(gate):
    """Free text is not a purpose; a researcher's purpose is not a case worker's."""
    with pytest.raises(InvalidInput, match="unknown export purpose 'to check things'.*"
                                           "case_follow_up"):
        gate.exports.request(_principal("case_worker"), _records(), purpose="to check things")
    with pytest.raises(InvalidInput, match="not open to the Case worker role"):
        gate.exports.request(_principal("case_worker"), _records(),
                             purpose="approved_research")


def test_roles_without_the_exports_page_or_the_list_are_refused(gate):
    """A donor cannot export; a policy maker cannot export records; a case worker no aggregates."""
    with pytest.raises(AccessDenied, match="Donor role cannot request exports"):
        gate.exports.request(_principal("donor"), _aggregate("dp_high"),
                             purpose="programme_monitoring")
    with pytest.raises(AccessDenied, match="may not read Beneficiary registrations"):
        gate.exports.request(_principal("policy_maker"), _records(),
                             purpose="programme_monitoring")
    with pytest.raises(AccessDenied, match="exports operational lists only"):
        gate.exports.request(_principal("case_worker"), _aggregate("anonymized"),
                             purpose="audit_request")
    assert gate.exports.products(_principal("case_worker")) == ("social.registrations",)
    assert "social.registrations" not in gate.exports.products(_principal("policy_maker"))


def _granted(catalog, role: str, **changes):
    """The catalog with ``role`` also granted the anonymized level (and any other changes)."""
    spec = catalog.roles[role]
    granted = dataclasses.replace(spec, privacy_levels=("anonymized", *spec.privacy_levels),
                                  **changes)
    return dataclasses.replace(catalog, roles={**catalog.roles, role: granted})


@pytest.mark.parametrize("role, purpose, error, message", [
    ("case_worker", "audit_request", AccessDenied, "exports operational lists only"),
    ("policy_maker", "programme_monitoring", QueryRefused, "releases no exact aggregates"),
    ("researcher", "approved_research", QueryRefused, "releases no exact aggregates"),
])
def test_an_aggregate_export_at_the_anonymized_level_is_refused_with_nothing_queued(
        gate, store, catalog, clock, role, purpose, error, message):
    """No exact aggregate leaves as a file either, even for a role granted the anonymized
    level: refused at request time (umbrella or not), audited, nothing queued or spent."""
    gate = Gate(store, _granted(catalog, role), secret=SECRET, clock=clock)
    umbrellas = (False, True) if role in catalog.policy.exports.umbrella_roles else (False,)
    for umbrella in umbrellas:
        with pytest.raises(error, match=message):
            gate.exports.request(_principal(role), _aggregate("anonymized"), purpose=purpose,
                                 umbrella=umbrella)
    with store.read() as session:
        for table in (Export, ReleaseRow, BudgetAccount):
            assert session.scalar(select(func.count()).select_from(table)) == 0
    refused = _audit(store, action="export_request")
    assert [(e.outcome, e.principal) for e in refused] == [
        ("refused", _principal(role).subject)] * len(umbrellas)
    assert all(message in e.detail["reason"] for e in refused)


def test_a_role_without_a_noisy_level_is_offered_record_products_only(gate, store, catalog,
                                                                      clock):
    """A case worker is offered its lists only, even with a budget: its level adds no noise,
    so no aggregate could ever be released to it."""
    budgeted = _granted(catalog, "case_worker", budget_epsilon=5.0)
    gate = Gate(store, budgeted, secret=SECRET, clock=clock)
    case_worker = _principal("case_worker")
    assert gate.exports.products(case_worker) == ("social.registrations",)
    assert gate.aggregate_levels(case_worker) == ()
    with pytest.raises(AccessDenied, match="exports operational lists only"):
        gate.exports.request(case_worker, _aggregate("anonymized"), purpose="audit_request")
    assert gate.aggregate_levels(_principal("policy_maker")) == ("dp_low", "dp_medium",
                                                                  "dp_high")


def test_switched_off_levels_keep_a_roles_metric_sets_on_offer(gate):
    """With every noisy level switched off, a policy maker still sees its metric sets (the page
    then says the levels are off) but may release at none of them."""
    policy_maker = _principal("policy_maker")
    current = gate.admin.effective(policy_maker.tenant).settings
    off = dataclasses.replace(current, disabled_levels={"dp_low", "dp_medium", "dp_high"})
    gate.admin.change_settings(_principal("tenant_admin"), off, reason="pause releases")
    assert gate.aggregate_levels(policy_maker) == ()
    assert gate.aggregate_levels(policy_maker, switched_off=True) == ("dp_low", "dp_medium",
                                                                      "dp_high")
    assert "health.vaccinations" in gate.exports.products(policy_maker)
    with pytest.raises(QueryRefused, match="switched off"):
        gate.exports.request(policy_maker, _aggregate(), purpose="programme_monitoring")


def test_a_gate_rule_refuses_the_request_before_anything_runs(gate, store):
    """A window too long for an ad-hoc product is refused at request time, spending nothing."""
    long = Query(product="education.attendance", metric="attendance_days", level="dp_medium",
                 start=date(2025, 1, 1), end=date(2025, 12, 1))
    with pytest.raises(QueryRefused):
        gate.exports.request(_principal("policy_maker"), long, purpose="programme_monitoring")
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Export)) == 0
        assert session.scalar(select(func.count()).select_from(BudgetAccount)) == 0


def test_request_refused_early_when_the_budget_cannot_cover_it(gate, store, catalog):
    """The preview's cost against the remaining budget: refused, nothing queued or spent."""
    principal = _principal("policy_maker")
    cap = catalog.roles["policy_maker"].budget_epsilon
    from privacy import Epsilon

    Ledger(store).reserve(tenant=principal.tenant, principal=principal.subject,
                          role=principal.role, product="health.vaccinations",
                          epsilon=Epsilon(cap - 0.5), cap=cap, today=NOW.date())
    with pytest.raises(BudgetExhausted, match=r"requested ε=1, remaining ε=0.5"):
        gate.exports.request(principal, _aggregate("dp_medium"), purpose="policy_planning")
    assert gate.budget(principal, product="health.vaccinations").spent.value == cap - 0.5
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Export)) == 0


def test_request_refused_early_when_the_delta_budget_cannot_cover_it(gate, store, catalog):
    """A Gaussian product with ε to spare but its δ cap used up: refused at request time, with
    the δ shortfall named; nothing queued."""
    from privacy import Delta, Epsilon

    with store.write.begin() as session:
        session.add(ProductVersion(tenant_id="kigali-east", product_id="education.attendance",
                                   data_version=1, refreshed_at=NOW, cube_rows=0))
    principal = _principal("policy_maker")
    cap = catalog.roles["policy_maker"].budget_epsilon
    delta_cap = catalog.policy.delta_cap
    Ledger(store).reserve(tenant=principal.tenant, principal=principal.subject,
                          role=principal.role, product="education.attendance",
                          epsilon=Epsilon(0.1), cap=cap, today=NOW.date(),
                          delta=Delta(delta_cap), delta_cap=delta_cap)
    query = Query(product="education.attendance", metric="attendance_records",
                  level="dp_medium", start=MONTHS[0], end=MONTHS[1])
    with pytest.raises(BudgetExhausted) as refused:
        gate.exports.request(principal, query, purpose="policy_planning")
    assert refused.value.delta_short_by == pytest.approx(catalog.policy.delta)
    assert refused.value.short_by < 0  # ε alone would have paid
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Export)) == 0


# --- the worker: records and aggregates ----------------------------------------------------------


def test_case_worker_record_export_is_masked_streamed_digested_and_recorded(gate, store,
                                                                           exports_dir):
    """Every record of the tenant, treated as on the list page; digest and masking on record."""
    principal = _principal("case_worker")
    requested = gate.exports.request(principal, _records(), purpose="case_follow_up",
                                     justification="verification visits in Gasabo")
    assert (requested.status, requested.kind, requested.scope) == (
        "queued", "records", ("kigali-east",))
    assert _work(gate, exports_dir, chunk_rows=25) == 1
    status = gate.exports.status(principal, requested.id)
    assert (status.status, status.progress, status.row_count, status.attempts) == (
        "done", 1.0, RECORDS["kigali-east"], 1)
    content = Path(_row(store, status.id).file_path).read_bytes()
    assert status.digest == hashlib.sha256(content).hexdigest()
    assert status.size_bytes == len(content)
    rows = _csv(content)
    assert len(rows) == RECORDS["kigali-east"]
    assert {r["household_size"] for r in rows} == {"•••"}
    assert {r["birth_date"] for r in rows} == {"1990-05-17"}
    assert all(len(r["pseudonym"]) == 12 and r["pseudonym"] != f"{0:032x}" for r in rows)
    assert not any(r["registration_id"].startswith("kigali-east") for r in rows)
    assert status.masking == {
        "registration_id": "pseudonymise", "pseudonym": "pseudonymise",
        "registered_at": "show", "district": "show", "agent_code": "show", "status": "show",
        "birth_date": "show", "gender": "show", "household_size": "mask"}
    assert status.epsilon.value == 0.0
    assert (status.purpose, status.justification) == (
        "case_follow_up", "verification visits in Gasabo")
    assert status.policy_version == gate.catalog.version
    steps = [(a.action, a.outcome) for a in _audit(store, target=status.id)]
    assert steps == [("export_request", "allowed"), ("export_start", "allowed"),
                     ("export_finish", "allowed")]


def test_record_export_pseudonyms_match_the_list_page(gate, store, exports_dir):
    """The export re-keys identifiers exactly as the case worker's list view does."""
    principal, status = _done_record_export(gate, exports_dir)
    rows = _csv(Path(_row(store, status.id).file_path).read_bytes())
    page = gate.records(principal, _records(page_size=200))
    assert {r["pseudonym"] for r in rows} == {r["pseudonym"] for r in page.rows}


def test_record_export_filters_and_search_stay_in_the_tenant(gate, store, exports_dir):
    """Filters and search narrow the export; another tenant's rows never appear."""
    principal = _principal("case_worker", "south")
    requested = gate.exports.request(principal, _records(filters=(("status", "unverified"),),
                                                         search="ag-001"),
                                     purpose="case_follow_up", format="parquet")
    _work(gate, exports_dir)
    table = pq.read_table(_row(store, requested.id).file_path)
    expected = sum(1 for i in range(RECORDS["south"]) if i % 3 and i % 4 == 1)
    assert table.num_rows == expected
    assert set(table.column("agent_code").to_pylist()) == {"AG-001"}
    assert set(table.column("district").to_pylist()) == {
        gate.catalog.districts_of("south")[0].code}
    assert str(table.schema.field("birth_date").type) == "date32[day]"
    assert str(table.schema.field("household_size").type) == "string"
    assert table.schema.metadata[b"veil.export"] == requested.id.encode()


def test_aggregate_export_charges_epsilon_once_and_records_the_release(gate, store,
                                                                       exports_dir, clock):
    """The file is a stored release: ε charged once, its id recorded; a repeat pays nothing."""
    principal = _principal("policy_maker")
    first = gate.exports.request(principal, _aggregate(), purpose="policy_planning",
                                 format="parquet")
    _work(gate, exports_dir)
    done = gate.exports.status(principal, first.id)
    assert done.status == "done" and done.epsilon.value == pytest.approx(1.0)
    assert gate.budget(principal, product="health.vaccinations").spent.value == pytest.approx(1.0)
    release = gate.release(principal, _aggregate())  # the same query: stored, free
    assert release.reused and done.releases == (release.id,)
    table = pq.read_table(_row(store, first.id).file_path).to_pylist()
    assert [r["month"] for r in table] == [f"2026-{m:02d}" for m in range(1, 7)]
    assert {r["tenant"] for r in table} == {"kigali-east"}
    assert [r["value"] for r in table] == [c.value for c in release.cells]
    assert done.masking["value"].startswith("dp_medium: differential privacy, ε = 1")

    clock.advance(minutes=5)  # a later export of the same query
    again = gate.exports.request(principal, _aggregate(), purpose="policy_planning")
    _work(gate, exports_dir)
    assert gate.exports.status(principal, again.id).epsilon.value == 0.0
    assert gate.budget(principal, product="health.vaccinations").spent.value == pytest.approx(1.0)


def test_a_refusal_at_run_time_fails_the_export_without_retrying(gate, store, exports_dir,
                                                                 catalog):
    """Budget spent between request and run: failed at once with the gate's reason."""
    principal = _principal("policy_maker")
    requested = gate.exports.request(principal, _aggregate(), purpose="policy_planning")
    cap = catalog.roles["policy_maker"].budget_epsilon
    from privacy import Epsilon

    Ledger(store).reserve(tenant=principal.tenant, principal=principal.subject,
                          role=principal.role, product="health.vaccinations",
                          epsilon=Epsilon(cap), cap=cap, today=NOW.date())
    _work(gate, exports_dir)
    status = gate.exports.status(principal, requested.id)
    assert (status.status, status.attempts) == ("failed", 1)
    assert "cannot cover this query" in status.error
    assert list(exports_dir.iterdir()) == []
    assert [a.action for a in _audit(store, target=requested.id)][-1] == "export_fail"


# --- signed links ---------------------------------------------------------------------------------


def test_the_link_verifies_and_serves_the_file_to_its_requester(gate, store, exports_dir):
    """The requester's link opens, the file matches its digest, and the download is audited."""
    principal, status = _done_record_export(gate, exports_dir)
    link = gate.exports.link(principal, status.id)
    assert link.expires_at == status.finished_at + timedelta(hours=24)
    assert link.path == f"exports?download={link.token}"
    assert gate.exports.open_link(principal, link.token).id == status.id
    file = gate.exports.download(principal, link.token)
    assert hashlib.sha256(file.content).hexdigest() == status.digest
    assert (file.mime, file.file_name) == ("text/csv",
                                           f"veil-social.registrations-{status.id[:8]}.csv")
    downloads = _audit(store, target=status.id, action="export_download")
    assert [(d.outcome, d.principal) for d in downloads] == [("allowed", principal.subject)]


def test_the_link_expires(gate, store, exports_dir, clock):
    """After the policy's link lifetime the link is refused (audited) and the file deleted."""
    principal, status = _done_record_export(gate, exports_dir)
    link = gate.exports.link(principal, status.id)
    clock.advance(hours=23, minutes=59)
    gate.exports.open_link(principal, link.token)
    clock.advance(minutes=1)
    with pytest.raises(AccessDenied, match="This download link expired at"):
        gate.exports.download(principal, link.token)
    refused = _audit(store, target=status.id, action="export_download")
    assert [(r.outcome, r.detail["reason"]) for r in refused] == [("refused", "expired")]
    path = Path(_row(store, status.id).file_path)
    assert _work(gate, exports_dir) == 0  # the worker's purge
    assert not path.exists()
    row = _row(store, status.id)
    assert row.purged_at == clock.now and row.digest == status.digest  # the record stays
    with pytest.raises(QueryRefused, match="expired"):
        gate.exports.link(principal, status.id)


def _flip(signature: str) -> str:
    """The signature with its last two characters changed."""
    return signature[:-2] + ("BB" if signature.endswith("AA") else "AA")


@pytest.mark.parametrize("tamper", ["signature", "expiry", "export id", "truncated", "garbage"])
def test_a_tampered_link_is_refused_and_audited(gate, store, exports_dir, tamper):
    """Any change to the token breaks its signature; nothing is served."""
    principal, status = _done_record_export(gate, exports_dir)
    export_id, expiry, signature = gate.exports.link(principal, status.id).token.split(".")
    other = gate.exports.request(principal, _records(), purpose="case_follow_up")
    _work(gate, exports_dir)
    token = {
        "signature": f"{export_id}.{expiry}.{_flip(signature)}",
        "expiry": f"{export_id}.{int(expiry) + 86_400}.{signature}",
        "export id": f"{other.id}.{expiry}.{signature}",
        "truncated": f"{export_id}.{expiry}",
        "garbage": "not-a-token",
    }[tamper]
    with pytest.raises(AccessDenied, match="This download link is not valid"):
        gate.exports.download(principal, token)
    refused = _audit(store, action="export_download")
    assert [r.outcome for r in refused] == ["refused"]
    assert refused[0].detail["reason"] in {"bad signature", "malformed", "unknown export"}


def test_a_link_is_refused_to_another_tenant_and_to_another_person(gate, store, exports_dir):
    """Single-tenant, single-principal: a colleague or another tenant's user is refused."""
    principal, status = _done_record_export(gate, exports_dir)
    token = gate.exports.link(principal, status.id).token
    elsewhere = _principal("case_worker", "south")
    with pytest.raises(AccessDenied, match="another tenant"):
        gate.exports.open_link(elsewhere, token)
    colleague = _principal("case_worker", subject="colleague@kigali-east.demo")
    with pytest.raises(AccessDenied, match="issued to another person"):
        gate.exports.download(colleague, token)
    refused = _audit(store, target=status.id)
    assert [(r.action, r.outcome, r.principal, r.detail.get("reason")) for r in refused[-2:]] == [
        ("export_link", "refused", elsewhere.subject, "other tenant"),
        ("export_download", "refused", colleague.subject, "other principal")]
    with pytest.raises(AccessDenied, match="you have no export"):
        gate.exports.link(colleague, status.id)


def test_a_file_changed_on_disk_is_not_served(gate, store, exports_dir):
    """The digest is checked on every download."""
    principal, status = _done_record_export(gate, exports_dir)
    path = Path(_row(store, status.id).file_path)
    path.write_bytes(path.read_bytes().replace(b"\xe2\x80\xa2\xe2\x80\xa2\xe2\x80\xa2", b"4", 1))
    with pytest.raises(Exception, match="does not match its recorded digest"):
        gate.exports.download(principal, gate.exports.link(principal, status.id).token)


# --- umbrella exports -----------------------------------------------------------------------------


def _umbrella(gate, principal=None):
    principal = principal or _principal("researcher")
    return principal, gate.exports.request(principal, _aggregate(), purpose="approved_research",
                                           justification="ethics ref. RW-2026-17",
                                           umbrella=True)


def test_an_umbrella_export_does_not_run_with_one_approval(gate, store, exports_dir):
    """Pending until two distinct platform administrators approve; the worker leaves it."""
    requester, requested = _umbrella(gate)
    assert (requested.status, requested.scope) == ("pending", TENANTS)
    assert _work(gate, exports_dir) == 0
    gate.exports.approve(ADMIN, requested.id)
    assert gate.exports.status(requester, requested.id).status == "pending"
    assert _work(gate, exports_dir) == 0
    with pytest.raises(QueryRefused, match="already decided"):
        gate.exports.approve(ADMIN, requested.id)
    assert gate.exports.status(requester, requested.id).approvals == (ADMIN.subject,)


def test_an_umbrella_export_cannot_be_approved_by_its_requester_or_other_roles(gate):
    """The requester never approves its own export, even holding the approver role."""
    requester, requested = _umbrella(gate)
    with pytest.raises(AccessDenied, match="only a Platform administrator"):
        gate.exports.approve(_principal("tenant_admin"), requested.id)
    with pytest.raises(AccessDenied, match="only a Platform administrator"):
        gate.exports.approve(requester, requested.id)
    same_person = Principal(subject=requester.subject, display_name="x", role="platform_admin",
                            tenant="kigali-east", source="oidc")
    with pytest.raises(AccessDenied, match="you requested this export"):
        gate.exports.approve(same_person, requested.id)
    assert gate.exports.status(requester, requested.id).approvals == ()


def test_an_umbrella_export_runs_after_two_approvals_on_every_tenants_budget(gate, store,
                                                                             exports_dir):
    """Two approvals queue it; each tenant's part is released under its umbrella identity."""
    requester, requested = _umbrella(gate)
    assert [p.id for p in gate.exports.pending_approvals(ADMIN)] == [requested.id]
    assert gate.exports.pending_approvals(requester) == []
    gate.exports.approve(ADMIN, requested.id)
    assert gate.exports.pending_approvals(ADMIN) == []  # already decided
    pending = gate.exports.pending_approvals(ADMIN2)
    assert (pending[0].approvals, pending[0].needed, pending[0].purpose) == (
        (ADMIN.subject,), 2, "approved_research")
    assert pending[0].justification == "ethics ref. RW-2026-17"
    assert "Vaccination" in pending[0].query_summary or "doses" in pending[0].query_summary
    gate.exports.approve(ADMIN2, requested.id)
    assert gate.exports.status(requester, requested.id).status == "queued"
    assert _work(gate, exports_dir) == 1
    done = gate.exports.status(requester, requested.id)
    assert done.status == "done" and len(done.releases) == 3
    rows = _csv(Path(_row(store, done.id).file_path).read_bytes())
    assert {r["tenant"] for r in rows} == set(TENANTS) and len(rows) == 3 * 6
    with store.read() as session:
        spent = dict(session.execute(select(BudgetAccount.principal, BudgetAccount.spent)).all())
    assert spent == {f"umbrella:researcher@{t}": pytest.approx(1.0) for t in TENANTS}
    assert done.epsilon.value == pytest.approx(3.0)
    actions = [(a.action, a.principal) for a in _audit(store, target=done.id)]
    assert actions == [("export_request", requester.subject),
                       ("export_approve", ADMIN.subject), ("export_approve", ADMIN2.subject),
                       ("export_start", requester.subject), ("export_finish", requester.subject)]


def test_only_requesting_roles_may_ask_for_an_umbrella_export(gate):
    """Case workers' records never leave their tenant; umbrella roles come from the policy."""
    with pytest.raises(InvalidInput, match="aggregates only"):
        gate.exports.request(_principal("case_worker"), _records(), purpose="case_follow_up",
                             umbrella=True)
    assert gate.exports.may_request_umbrella(_principal("policy_maker"))
    assert not gate.exports.may_request_umbrella(_principal("case_worker"))


def test_the_worker_refuses_an_umbrella_export_queued_without_approvals(gate, store,
                                                                        exports_dir):
    """Defence in depth: a status forced to queued does not make it run."""
    requester, requested = _umbrella(gate)
    gate.exports.approve(ADMIN, requested.id)
    with store.write.begin() as session:
        session.execute(update(Export).where(Export.id == requested.id).values(status="queued"))
    _work(gate, exports_dir)
    status = gate.exports.status(requester, requested.id)
    assert status.status == "failed" and "1 valid approval(s) of the 2" in status.error
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 0


def test_a_rejected_umbrella_export_never_runs(gate, store, exports_dir):
    """A reason is required; the rejection is final and audited."""
    requester, requested = _umbrella(gate)
    with pytest.raises(InvalidInput, match="Give a reason"):
        gate.exports.reject(ADMIN, requested.id, reason=" ")
    gate.exports.reject(ADMIN, requested.id, reason="no data-sharing agreement with south")
    status = gate.exports.status(requester, requested.id)
    assert status.status == "rejected" and "no data-sharing agreement" in status.error
    with pytest.raises(QueryRefused, match="is rejected"):
        gate.exports.approve(ADMIN2, requested.id)
    assert _work(gate, exports_dir) == 0
    decisions = [(a.action, a.outcome) for a in _audit(store, target=requested.id)]
    assert decisions[-3:] == [("export_reject", "refused"), ("export_reject", "allowed"),
                              ("export_approve", "refused")]


# --- crashes, leases, retries ---------------------------------------------------------------------


def test_a_job_held_by_a_dead_worker_is_retried_after_its_lease(gate, store, exports_dir,
                                                                clock):
    """A claimed job whose worker never comes back is claimed again once the lease runs out."""
    principal = _principal("case_worker")
    requested = gate.exports.request(principal, _records(), purpose="case_follow_up")
    from privacy.exports._worker import _WorkerInfo

    dead = _WorkerInfo(id="dead", directory=exports_dir, lease=timedelta(seconds=30),
                       chunk_rows=10)
    assert gate.exports._claim(dead).attempt == 1  # ... and then it died
    assert _work(gate, exports_dir) == 0  # the lease still holds
    clock.advance(seconds=31)
    assert _work(gate, exports_dir) == 1
    status = gate.exports.status(principal, requested.id)
    assert (status.status, status.attempts, status.row_count) == ("done", 2, 120)
    steps = [(a.action, a.detail.get("attempt")) for a in _audit(store, target=requested.id)]
    assert steps == [("export_request", None), ("export_start", 1), ("export_retry", 1),
                     ("export_start", 2), ("export_finish", 2)]


def test_a_job_whose_workers_keep_dying_fails_after_the_attempts_limit(gate, store,
                                                                       exports_dir, clock):
    """max_attempts claims by workers that died, then failed: never retried for ever."""
    principal = _principal("case_worker")
    requested = gate.exports.request(principal, _records(), purpose="case_follow_up")
    from privacy.exports._worker import _WorkerInfo

    for attempt in range(1, 4):
        dead = _WorkerInfo(id=f"dead-{attempt}", directory=exports_dir,
                           lease=timedelta(seconds=30), chunk_rows=10)
        assert gate.exports._claim(dead).attempt == attempt
        clock.advance(seconds=31)
    assert _work(gate, exports_dir) == 0
    status = gate.exports.status(principal, requested.id)
    assert status.status == "failed" and "stopped 3 times" in status.error
    assert [a.action for a in _audit(store, target=requested.id)][-1] == "export_fail"


def test_an_error_mid_export_is_retried_then_failed_and_never_half_delivered(
        gate, store, exports_dir, monkeypatch):
    """An exception while writing requeues the job; after max_attempts it fails. No file stays."""
    from privacy.exports import _writers as _exports

    principal = _principal("case_worker")
    requested = gate.exports.request(principal, _records(), purpose="case_follow_up")
    calls = []

    def broken_write(self, rows):
        calls.append(len(rows))
        if len(calls) % 2 == 0:
            raise OSError("disk full")
        self._csv.writerows(rows)

    monkeypatch.setattr(_exports._CsvWriter, "write", broken_write)
    _work(gate, exports_dir, chunk_rows=50)
    status = gate.exports.status(principal, requested.id)
    assert (status.status, status.attempts) == ("failed", 3)
    assert "OSError: disk full" in status.error and status.digest is None
    assert list(exports_dir.iterdir()) == []
    assert [a.action for a in _audit(store, target=requested.id)].count("export_retry") == 2


def test_a_crashed_aggregate_export_reuses_its_release_at_no_extra_cost(gate, store,
                                                                        exports_dir, clock,
                                                                        monkeypatch):
    """A worker that dies after releasing: the retry reuses the release, ε charged once and
    attributed to the export."""
    from privacy import exports as _exports

    principal = _principal("policy_maker")
    requested = gate.exports.request(principal, _aggregate(), purpose="policy_planning")

    def die(self, *args, **kwargs):
        raise KeyboardInterrupt  # like SIGKILL: nothing after the release is recorded

    with monkeypatch.context() as patch:
        patch.setattr(_exports.Exports, "_beat", die)
        with pytest.raises(KeyboardInterrupt):
            _work(gate, exports_dir)
    assert gate.budget(principal, product="health.vaccinations").spent.value == pytest.approx(1.0)
    clock.advance(seconds=31)
    _work(gate, exports_dir)
    status = gate.exports.status(principal, requested.id)
    assert (status.status, status.attempts) == ("done", 2)
    assert status.epsilon.value == pytest.approx(1.0)
    assert gate.budget(principal, product="health.vaccinations").spent.value == pytest.approx(1.0)
    assert [p.name for p in exports_dir.iterdir()] == [Path(_row(store, status.id).file_path).name]


# --- the record is append-only -------------------------------------------------------------------


def test_export_records_are_append_only_in_the_store(gate, store, exports_dir):
    """The store refuses rewriting a request, changing a finished export, deleting a record."""
    principal, status = _done_record_export(gate, exports_dir)
    forbidden = [
        update(Export).where(Export.id == status.id).values(purpose="audit_request"),
        update(Export).where(Export.id == status.id).values(requester="someone@else"),
        update(Export).where(Export.id == status.id).values(status="queued"),
        delete(Export).where(Export.id == status.id),
    ]
    for statement in forbidden:
        with pytest.raises(DBAPIError, match="append-only"):
            with store.write.begin() as session:
                session.execute(statement)
    _, umbrella = _umbrella(gate)
    gate.exports.approve(ADMIN, umbrella.id)
    for statement in (update(ExportApproval).values(decision="rejected"),
                      delete(ExportApproval)):
        with pytest.raises(DBAPIError, match="append-only"):
            with store.write.begin() as session:
                session.execute(statement)
    assert _row(store, status.id).purpose == "case_follow_up"


# --- the crash test: a real worker process killed mid-export --------------------------------------


@pytest.mark.slow
def test_an_export_worker_killed_mid_export_is_retried_and_delivers_once(store, catalog,
                                                                         tmp_path):
    """SIGKILL while writing; no half file is delivered; the retry delivers the whole export."""
    total = 40_000
    _seed(store, catalog, registrations={"kigali-east": total})
    var = tmp_path / "worker-var"
    env = {**os.environ, "VEIL_DATABASE_URL": store.engine.url.render_as_string(
        hide_password=False), "VEIL_DEMO_MODE": "1", "VEIL_SECRET": SECRET,
        "VEIL_VAR_DIR": str(var)}
    gate = Gate(store, catalog, secret=SECRET)
    principal = _principal("case_worker")
    requested = gate.exports.request(principal, _records(), purpose="case_follow_up")

    process = subprocess.Popen(
        [sys.executable, "-m", "dashboard.cli", "export-worker", "--once", "--chunk-rows", "200",
         "--lease-seconds", "2", "--worker-id", "doomed"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    progress = 0.0
    while progress < 0.05:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the export made no progress"
        time.sleep(0.01)
        progress = _row(store, requested.id).progress
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL

    killed = _row(store, requested.id)
    assert (killed.status, killed.worker, killed.attempts) == ("running", "doomed", 1)
    assert 0 < killed.progress < 1 and killed.digest is None and killed.file_path is None
    leftovers = [p.name for p in (var / "exports").iterdir()]
    assert leftovers == [f"{requested.id}-a1.csv.part"]  # a partial file, never delivered
    with pytest.raises(QueryRefused, match="is running; a download link exists once"):
        gate.exports.link(principal, requested.id)

    rerun = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "export-worker", "--once", "--worker-id",
         "rescuer"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    while rerun.returncode == 0 and "0 export(s)" in rerun.stdout:
        time.sleep(0.5)  # the dead worker's lease has not run out yet
        assert time.monotonic() < deadline
        rerun = subprocess.run(
            [sys.executable, "-m", "dashboard.cli", "export-worker", "--once", "--worker-id",
             "rescuer"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
            timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 export(s) processed" in rerun.stdout

    done = gate.exports.status(principal, requested.id)
    assert (done.status, done.attempts, done.row_count) == ("done", 2, total)
    path = Path(_row(store, requested.id).file_path)
    assert [p.name for p in (var / "exports").iterdir()] == [path.name]
    content = path.read_bytes()
    assert hashlib.sha256(content).hexdigest() == done.digest
    rows = _csv(content)
    assert len(rows) == total and len({r["registration_id"] for r in rows}) == total
    steps = [(a.action, a.detail.get("worker")) for a in _audit(store, target=requested.id)]
    assert steps == [("export_request", None), ("export_start", "doomed"),
                     ("export_retry", None), ("export_start", "rescuer"),
                     ("export_finish", None)]


# --- the policy's exports section ----------------------------------------------------------------


@pytest.mark.parametrize("old, new, message", [
    ("approvals = 2 ", "approvals = 1 ", r"'exports\.approvals': must be >= 2"),
    ('roles = ["case_worker"]', 'roles = ["donor"]',
     r"exports\.purposes\.case_follow_up\.roles': role 'donor' has no exports page"),
    ("link_hours = 24 ", "link_hours = 0 ", r"exports\.link_hours': must be between"),
    ('approver_role = "platform_admin"', 'approver_role = "researcher"',
     r"must not also request umbrella"),
    ("[exports.purposes.audit_request]", "[exports.purposes.Audit]", r"a purpose code is"),
])
def test_a_malformed_exports_policy_names_file_and_key(tmp_path, old, new, message):
    """The exports section is validated like the rest of the catalog."""
    import shutil

    target = tmp_path / "catalog"
    shutil.copytree(PROJECT_ROOT / "catalog", target)
    policy = target / "policy.toml"
    text = policy.read_text()
    assert old in text
    policy.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=r"policy\.toml: key .*" + message):
        load_catalog(target)


@pytest.mark.parametrize("secret", ["short-secret-0123", "a-deployment-secret-" + "x" * 60])
def test_exported_pseudonyms_are_hmac_sha256_keyed_per_tenant_and_role(secret):
    """The fast path of the export computes exactly HMAC-SHA256(secret|tenant|role, value)."""
    import hmac

    from data.catalog import FieldSpec
    from privacy._records import _treater

    principal = _principal("case_worker")
    treat = _treater(FieldSpec("pseudonym", "direct_identifier", "Beneficiary"), "pseudonymise",
                     principal=principal, secret=secret)
    key = f"{secret}|{principal.tenant}|{principal.role}".encode()
    for value in ("kigali-east-reg-000001", 42, "ñandú"):
        assert treat(value) == hmac.new(key, str(value).encode(),
                                        hashlib.sha256).hexdigest()[:12]


def test_the_dashboards_export_worker_setting_is_validated():
    """VEIL_EXPORT_WORKER: on by default, 0 switches it off, anything else is named."""
    from data.config import load_settings

    base = {"VEIL_DEMO_MODE": "1"}
    assert load_settings(base).export_worker is True
    assert load_settings({**base, "VEIL_EXPORT_WORKER": "0"}).export_worker is False
    with pytest.raises(ConfigError, match="VEIL_EXPORT_WORKER must be 0 .* or 1, got 'yes'"):
        load_settings({**base, "VEIL_EXPORT_WORKER": "yes"})
