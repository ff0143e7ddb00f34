"""Compliance reads (D7) against real stores: tenant scope, refusals, filters, paging, audit of
every view, export records, budgets, policy diffs, KPI history, consent statistics, data quality
and the bias-check dataset."""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from data.bootstrap import demo_username
from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.models import (
    AuditEntry,
    ConsentEvent,
    CubeMonthly,
    Export,
    ExportApproval,
    HealthEvent,
    PolicySnapshot,
    ProductVersion,
    Subject,
    SubjectConsent,
)
from data.policy_history import record_policy
from privacy import (
    AccessDenied,
    AuditFilter,
    BudgetFilter,
    ConsentFilter,
    ExportFilter,
    Gate,
    InvalidInput,
    Principal,
    Query,
    ReleaseFilter,
)
from privacy.compliance._consent import _k_threshold

NOW = datetime(2026, 11, 21, 12, 0)
OCTOBER = date(2026, 10, 1)


def _principal(role: str = "compliance_officer", tenant: str = "kigali-east") -> Principal:
    return Principal(subject=demo_username(role, tenant), display_name=role, role=role,
                     tenant=tenant, source="demo")


OFFICER = _principal()


@pytest.fixture
def gate(store, catalog) -> Gate:
    return Gate(store, catalog, demo_accounts=True, clock=lambda: NOW)


def _audit_rows(store, rows: list[dict]) -> None:
    with store.write.begin() as session:
        for row in rows:
            session.add(AuditEntry(**{"role": "policy_maker", "action": "page_view",
                                      "target": "trends", "outcome": "allowed", "detail": {},
                                      **row}))


def _cube(store, *, tenant: str = "kigali-east", product: str = "health.vaccinations",
          metric: str = "doses", months=(OCTOBER,), cells=(("0-5", "female", 400),),
          value: float = 0.0) -> None:
    with store.write.begin() as session:
        for month in months:
            for age, gender, n in cells:
                session.add(CubeMonthly(
                    tenant_id=tenant, product_id=product, metric=metric, period=month,
                    state="KGL", district="KGL-GAS", h3_cell="87GAS", age_bucket=age,
                    gender=gender, category="-" if product != "health.vaccinations" else "polio",
                    n_events=n, value_sum=value * n))
        session.merge(ProductVersion(tenant_id=tenant, product_id=product, data_version=1,
                                     refreshed_at=NOW - timedelta(hours=1), cube_rows=1))


def _export(store, *, tenant: str = "kigali-east", requester: str = "policy.maker@kigali-east.demo",
            approvers: tuple[str, ...] = (), rejected_by: str | None = None) -> str:
    export_id = str(uuid.uuid4())
    with store.write.begin() as session:
        session.add(Export(
            id=export_id, tenant_id=tenant, requester=requester,
            product_id="health.vaccinations", query={"metric": "doses"},
            purpose="programme_monitoring", justification="quarterly review", format="csv",
            umbrella=False, status="done", progress=1.0, row_count=120, digest="d" * 64,
            policy_version="p" * 64, epsilon=0.5, masking={}, created_at=NOW,
            finished_at=NOW + timedelta(minutes=1)))
        session.flush()
        for i, approver in enumerate(approvers):
            session.add(ExportApproval(export_id=export_id, approver=approver,
                                       role="platform_admin", at=NOW + timedelta(seconds=i)))
        if rejected_by is not None:
            session.add(ExportApproval(export_id=export_id, approver=rejected_by,
                                       role="platform_admin", decision="rejected",
                                       reason="scope too wide", at=NOW + timedelta(minutes=1)))
    return export_id


def _views(store, section: str, outcome: str = "allowed") -> list[AuditEntry]:
    with store.read() as session:
        return session.scalars(select(AuditEntry).where(
            AuditEntry.action == "compliance_view", AuditEntry.target == section,
            AuditEntry.outcome == outcome)).all()


# --- filters (no store) ----------------------------------------------------------------------


def test_filter_refuses_a_period_that_ends_before_it_starts():
    """A period's start after its end is bad input, quoted in the message."""
    with pytest.raises(InvalidInput, match="starts after it ends: 2026-10-02 > 2026-10-01"):
        AuditFilter(start=date(2026, 10, 2), end=date(2026, 10, 1))


def test_filter_refuses_page_zero():
    """Pages count from one."""
    with pytest.raises(InvalidInput, match="page must be an integer >= 1, got 0"):
        ReleaseFilter(page=0)


def test_filter_refuses_an_unknown_outcome():
    """Outcomes are allowed, refused or error."""
    with pytest.raises(InvalidInput, match="outcome must be one of allowed, refused, error"):
        AuditFilter(outcome="denied")


def test_budget_filter_spans_at_most_a_year():
    """Budget usage covers at most 366 days per view."""
    with pytest.raises(InvalidInput, match="at most 366 days, got 367"):
        BudgetFilter(start=date(2025, 1, 1), end=date(2026, 1, 2))


def test_withdrawals_under_k_are_combined_with_the_smallest_area_when_alone():
    """One small district is never left alone: the smallest shown district joins its group."""
    rows = _k_threshold("health", {"A": 2, "B": 7, "C": 30}, k=5)
    assert [(r.area, r.areas, r.withdrawn, r.status) for r in rows] == [
        ("C", 1, 30, "shown"), ("other", 2, 9, "combined")]


def test_withdrawals_combined_under_k_are_suppressed():
    """A combined group still under k shows no number."""
    rows = _k_threshold("health", {"A": 1, "B": 2}, k=5)
    assert [(r.area, r.areas, r.withdrawn, r.status) for r in rows] == [
        ("other", 2, None, "suppressed")]


# --- access and tenant scope -----------------------------------------------------------------


def test_audit_log_never_shows_another_tenants_entries(gate, store):
    """Entries of another tenant (or of no tenant) never appear in the officer's log."""
    _audit_rows(store, [
        {"at": NOW, "tenant_id": "kigali-east", "principal": "ana@kigali-east"},
        {"at": NOW, "tenant_id": "south", "principal": "sam@south"},
        {"at": NOW, "tenant_id": None, "principal": "stranger", "action": "login"},
    ])
    page = gate.compliance.audit_log(OFFICER, AuditFilter(start=NOW.date(), end=NOW.date()))
    assert [r.principal for r in page.rows] == ["ana@kigali-east"]


@pytest.mark.parametrize("role", ["policy_maker", "researcher", "case_worker", "donor",
                                  "tenant_admin", "platform_admin"])
def test_other_roles_are_refused_and_the_attempt_is_audited(gate, store, role):
    """Only the compliance role may read compliance records; a refusal is on the record."""
    with pytest.raises(AccessDenied, match="cannot read compliance records"):
        gate.compliance.audit_log(_principal(role))
    [refusal] = _views(store, "audit_log", outcome="refused")
    assert refusal.principal == demo_username(role, "kigali-east")


def test_audit_log_filters_by_day_action_outcome_and_principal(gate, store):
    """Each filter narrows the log in SQL; action and principal match from the start."""
    day = datetime(2026, 10, 5, 9, 0)
    _audit_rows(store, [
        {"at": day, "tenant_id": "kigali-east", "principal": "Ana@kigali-east",
         "action": "export_request", "outcome": "refused"},
        {"at": day, "tenant_id": "kigali-east", "principal": "ana@kigali-east",
         "action": "release", "outcome": "refused"},
        {"at": day, "tenant_id": "kigali-east", "principal": "ben@kigali-east",
         "action": "export_request", "outcome": "refused"},
        {"at": day, "tenant_id": "kigali-east", "principal": "ana@kigali-east",
         "action": "export_request", "outcome": "allowed"},
        {"at": day - timedelta(days=1), "tenant_id": "kigali-east",
         "principal": "ana@kigali-east", "action": "export_request", "outcome": "refused"},
    ])
    page = gate.compliance.audit_log(OFFICER, AuditFilter(
        start=day.date(), end=day.date(), action="EXPORT", outcome="refused", principal="ana"))
    assert [(r.principal, r.action, r.outcome, r.at) for r in page.rows] == [
        ("Ana@kigali-east", "export_request", "refused", day)]


def test_audit_log_pages_newest_first(gate, store):
    """Paging happens in SQL: page 3 of 120 entries by 50 holds the 20 oldest."""
    start = datetime(2026, 9, 1)
    _audit_rows(store, [{"at": start + timedelta(minutes=i), "tenant_id": "kigali-east",
                         "principal": f"user{i}"} for i in range(120)])
    page = gate.compliance.audit_log(OFFICER, AuditFilter(
        start=start.date(), end=start.date(), page=3, page_size=50))
    assert (page.total, page.pages, len(page.rows)) == (120, 3, 20)
    assert [r.principal for r in page.rows[:2]] == ["user19", "user18"]


def test_each_compliance_view_is_itself_audited(gate, store):
    """A read leaves a compliance_view entry naming the section and the filters."""
    gate.compliance.export_records(OFFICER, ExportFilter(status="done"))
    [view] = _views(store, "export_records")
    assert (view.principal, view.tenant_id, view.role) == (
        OFFICER.subject, "kigali-east", "compliance_officer")
    assert view.detail["status"] == "done" and view.detail["total"] == 0


# --- release log and export records ----------------------------------------------------------


def test_release_log_lists_the_tenants_releases_with_policy_version_and_digest(gate, store,
                                                                                catalog):
    """Who, when, what, policy version, ε and digest of each release; other tenants' never."""
    for tenant in ("kigali-east", "south"):
        _cube(store, tenant=tenant)
    query = Query(product="health.vaccinations", metric="doses", start=OCTOBER, end=OCTOBER,
                  level="dp_medium")
    mine = gate.release(_principal("policy_maker"), query)
    gate.release(_principal("policy_maker", "south"), query)
    page = gate.compliance.release_log(OFFICER, ReleaseFilter(product="health.vaccinations"))
    [record] = page.rows
    assert (record.id, record.principal, record.metric, record.window) == (
        mine.id, "policy.maker@kigali-east.demo", "doses", "2026-10 – 2026-10")
    assert (record.policy_version, record.digest, record.epsilon) == (
        catalog.version, mine.digest, mine.epsilon.value)


def test_export_records_show_what_who_why_policy_and_approvers(gate, store):
    """An export's record carries its id, requester, purpose, status, rows, ε, policy, digest."""
    export_id = _export(store, approvers=("platform.admin@veil.demo",
                                          "platform.admin2@veil.demo"))
    [record] = gate.compliance.export_records(OFFICER).rows
    assert (record.id, record.requester, record.purpose, record.status, record.row_count,
            record.epsilon, record.policy_version, record.digest) == (
        export_id, "policy.maker@kigali-east.demo", "programme_monitoring", "done", 120, 0.5,
        "p" * 64, "d" * 64)
    assert record.approvers == ("platform.admin@veil.demo (approved)",
                                "platform.admin2@veil.demo (approved)")


def test_export_records_tell_a_rejection_from_an_approval(gate, store):
    """A reviewer who rejected an umbrella export is listed as rejecting, not approving."""
    _export(store, approvers=("platform.admin@veil.demo",), rejected_by="platform.admin2@veil.demo")
    [record] = gate.compliance.export_records(OFFICER).rows
    assert record.approvers == ("platform.admin@veil.demo (approved)",
                                "platform.admin2@veil.demo (rejected)")


def test_export_records_never_show_another_tenants_exports(gate, store):
    """Exports of another tenant stay out of the officer's records."""
    _export(store, tenant="south", requester="policy.maker@south.demo")
    page = gate.compliance.export_records(OFFICER)
    assert (page.total, page.rows) == (0, ())


# --- budgets ---------------------------------------------------------------------------------


def test_budget_usage_sums_committed_epsilon_by_day_role_and_product(gate, store):
    """Committed ε per day, role and product, and the current window's spend against caps."""
    _cube(store)
    for months in (1, 2):  # the second query releases one new month: charged again
        gate.release(_principal("researcher"), Query.trailing(
            product="health.vaccinations", metric="doses", level="dp_medium", months=months,
            today=NOW.date()))
    today = NOW.date()  # the gate's clock stamps the ledger's entries
    usage = gate.compliance.budget_usage(OFFICER, BudgetFilter(start=today - timedelta(days=1),
                                                               end=today))
    [day] = usage.days
    assert (day.day, day.role, day.product) == (today, "researcher", "health.vaccinations")
    assert day.epsilon == pytest.approx(2.0)
    [line] = usage.lines
    assert (line.principals, line.cap) == (1, 10.0)
    assert (line.spent, line.fullest) == (pytest.approx(2.0), pytest.approx(0.2))


# --- policies and KPI definitions ------------------------------------------------------------


def test_policy_snapshot_is_recorded_once_per_version(store, catalog):
    """Recording the same policy version again changes nothing."""
    assert record_policy(store, catalog) is False  # init_store recorded it already
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(PolicySnapshot)) == 1
        assert session.get(PolicySnapshot, catalog.version).files["policy.toml"] == (
            (PROJECT_ROOT / "catalog" / "policy.toml").read_text())


def _edited_catalog(tmp_path, catalog):
    directory = tmp_path / "catalog-v2"
    shutil.copytree(catalog.directory, directory)
    policy = directory / "policy.toml"
    text, replaced = re.subn(r"(?m)^max_group_by = 3$", "max_group_by = 2", policy.read_text())
    assert replaced == 1
    policy.write_text(text)
    return load_catalog(directory)


def test_policy_diff_shows_the_changed_lines_of_each_file(gate, store, catalog, tmp_path):
    """A diff between two recorded versions shows the changed file's lines, and only it."""
    newer = _edited_catalog(tmp_path, catalog)
    assert record_policy(store, newer) is True
    versions = gate.compliance.policy_versions(OFFICER)
    assert {v.version for v in versions} == {catalog.version, newer.version}
    diff = gate.compliance.policy_diff(OFFICER, old=catalog.version, new=newer.version)
    [changed] = diff.changed
    assert (changed.name, changed.status, changed.added, changed.removed) == (
        "policy.toml", "changed", 1, 1)
    assert "\n-max_group_by = 3\n+max_group_by = 2\n" in changed.diff


def test_policy_diff_refuses_a_version_not_on_record(gate, catalog):
    """An unknown version is bad input, and nothing is compared."""
    with pytest.raises(InvalidInput, match="'000000000000' is not on record"):
        gate.compliance.policy_diff(OFFICER, old=catalog.version, new="0" * 64)


def test_kpi_history_lists_every_definition_and_the_one_in_effect(gate):
    """The nutrition score's two definitions, v2 in effect since July 2025."""
    history = [d for d in gate.compliance.kpi_history(OFFICER) if d.metric == "nutrition_score"]
    assert [(d.version, d.effective_from, d.until, d.in_effect) for d in history] == [
        (1, date(2024, 1, 1), date(2025, 7, 1), False), (2, date(2025, 7, 1), None, True)]


# --- consent ---------------------------------------------------------------------------------


def _subject(session, n: int, *, district: str, status: str, tenant: str = "kigali-east",
             events: int = 0) -> None:
    pseudonym = f"{n:032x}"
    session.add(Subject(tenant_id=tenant, pseudonym=pseudonym, district=district, created_at=NOW))
    session.add(ConsentEvent(tenant_id=tenant, pseudonym=pseudonym, vertical="health",
                             status="granted", at=datetime(2026, 9, 3)))
    if status == "withdrawn":
        session.add(ConsentEvent(tenant_id=tenant, pseudonym=pseudonym, vertical="health",
                                 status="withdrawn", at=datetime(2026, 10, 7)))
    session.add(SubjectConsent(tenant_id=tenant, pseudonym=pseudonym, vertical="health",
                               status=status, changed_at=datetime(2026, 10, 7)))
    for e in range(events):
        session.add(HealthEvent(
            event_id=f"{tenant}-{n}-{e}", tenant_id=tenant, product_id="health.vaccinations",
            event_type="vaccination", pseudonym=pseudonym, ts=datetime(2026, 9, 10, 9),
            day=date(2026, 9, 10), month=date(2026, 9, 1), h3_cell="-", district=district,
            age_bucket="0-5", gender="female", category="polio", value=None))


@pytest.fixture
def consent(store):
    with store.write.begin() as session:
        for n in range(6):
            _subject(session, n, district="KGL-GAS", status="withdrawn", events=2)
        for n in range(6, 11):
            _subject(session, n, district="KGL-NYR", status="withdrawn", events=1)
        _subject(session, 11, district="KGL-KIC", status="withdrawn", events=1)
        for n in range(12, 15):
            _subject(session, n, district="KGL-KIC", status="granted", events=3)
        _subject(session, 99, district="SOU-HUY", status="withdrawn", tenant="south", events=4)


def test_consent_statistics_count_grants_and_withdrawals_per_vertical_and_month(gate, consent):
    """Exact tenant-level grants and withdrawals per vertical and month, zero-filled."""
    stats = gate.compliance.consent_statistics(OFFICER, ConsentFilter(
        start=date(2026, 8, 1), end=date(2026, 10, 31)))
    health = [(m.month, m.grants, m.withdrawals) for m in stats.months if m.vertical == "health"]
    assert health == [("2026-08", 0, 0), ("2026-09", 15, 0), ("2026-10", 0, 12)]
    assert {m.vertical for m in stats.months} == {"health", "education", "social_protection"}


def test_consent_effect_counts_subjects_and_events_excluded_by_withdrawals(gate, consent):
    """Withdrawn subjects and the stored events they keep out of each product's aggregates."""
    stats = gate.compliance.consent_statistics(OFFICER, ConsentFilter(
        start=date(2026, 10, 1), end=date(2026, 10, 31)))
    health = next(v for v in stats.verticals if v.vertical == "health")
    assert (health.granted, health.withdrawn) == (3, 12)
    excluded = {e.product: e.events for e in stats.excluded}
    assert excluded["health.vaccinations"] == 18 and excluded["health.nutrition"] == 0


def test_consent_withdrawals_by_district_are_k_thresholded(gate, consent, catalog):
    """Districts under k are combined, widened by the smallest shown one until the group ≥ k."""
    stats = gate.compliance.consent_statistics(OFFICER, ConsentFilter(
        start=date(2026, 10, 1), end=date(2026, 10, 31)))
    health = [(a.area, a.areas, a.withdrawn, a.status) for a in stats.areas
              if a.vertical == "health"]
    districts = len(catalog.districts_of("kigali-east"))
    # KGL-KIC's single withdrawal (and every district without one) would be 12 − 6 − 5 = 1 by
    # subtraction, so KGL-NYR (5) joins the combined group.
    assert health == [("KGL-GAS", 1, 6, "shown"), ("other", districts - 1, 6, "combined")]


# --- data quality ----------------------------------------------------------------------------


def test_data_quality_flags_a_month_without_data_as_a_breach(gate, store):
    """A gap in a product's months is a completeness breach that names the month."""
    months = [date(2026, m, 1) for m in (5, 6, 7, 9, 10)]
    _cube(store, months=months)
    quality = {q.product: q for q in gate.compliance.data_quality(OFFICER)}
    vaccinations = quality["health.vaccinations"]
    assert (vaccinations.expected_months, vaccinations.months_with_data,
            vaccinations.missing_months) == (6, 5, ("2026-08",))
    assert any("1 of 6 months have no data (2026-08)" in b for b in vaccinations.breaches)


def test_data_quality_reports_a_product_never_materialised(gate):
    """Freshness breaches come from the product's SLO: never built is a breach."""
    quality = {q.product: q for q in gate.compliance.data_quality(OFFICER)}
    assert quality["social.grants"].breached
    assert "never materialised" in quality["social.grants"].breaches


# --- the bias-check dataset ------------------------------------------------------------------


def _bias_cube(store) -> None:
    _cube(store, product="education.mastery", metric="mastery_score",
          cells=[(age, gender, 300) for age in ("6-12", "13-18") for gender in ("female", "male")],
          value=60.0)


def test_bias_check_charges_epsilon_once_and_reuses_the_stored_release(gate, store):
    """The dataset costs the level's ε once; a second view is the stored release at zero cost."""
    _bias_cube(store)
    query = gate.compliance.bias_query(OFFICER, product="education.mastery",
                                       metric="mastery_score", months=1, level="dp_high")
    assert query.group_by == ("month", "gender", "age_bucket")
    assert gate.preview(OFFICER, query).epsilon.value == pytest.approx(0.5)
    first = gate.release(OFFICER, query)
    second = gate.release(OFFICER, query)
    assert (first.charged.value, second.charged.value, second.reused) == (
        pytest.approx(0.5), 0.0, True)
    assert second.id == first.id
    assert gate.budget(OFFICER, product="education.mastery").spent.value == pytest.approx(0.5)
    shown = [c for c in first.cells if c.key[2:] == ("female", "6-12")]
    assert shown[0].status == "noisy" and shown[0].lower <= shown[0].value <= shown[0].upper


def test_bias_check_is_refused_to_other_roles(gate, store):
    """Only the compliance role builds bias-check datasets; the refusal is audited."""
    with pytest.raises(AccessDenied, match="cannot read compliance records"):
        gate.compliance.bias_query(_principal("researcher"), product="education.mastery",
                                   metric="mastery_score", months=1, level="dp_high")
    assert len(_views(store, "bias_check", outcome="refused")) == 1
