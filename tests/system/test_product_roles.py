"""Learning analytics from S2-15 (issue 20): mastery progress, and IEP goal progress, a product
only the roles that need it may use (``allowed_roles``), behind a higher k."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime

import pytest
from sqlalchemy import func, select

from data.bootstrap import demo_username
from data.catalog import PeriodPolicy
from data.materialize import materialize
from data.models import AuditEntry, BudgetAccount, CubeMonthly, EducationEvent, Export, \
    ProductVersion
from data.models import Release as ReleaseRow
from privacy import AccessDenied, Epsilon, Gate, Principal, Query

from exact_support import exact_cells

NOW = datetime(2026, 11, 21, 12, 0)
MONTHS = [date(2026, 6, 1), date(2026, 7, 1), date(2026, 8, 1)]
TENANT = "kigali-east"
#: True counts per month: June's 8 is at least the policy's k (5) but under the IEP's k (11).
COUNTS = {MONTHS[0]: 8, MONTHS[1]: 11, MONTHS[2]: 40}
IEP = Query(product="education.iep", metric="reviews", level="dp_medium", start=MONTHS[0],
            end=MONTHS[-1])
#: The same cells in a product with the policy's k = 5.
PROGRESS = Query(product="education.progress", metric="progress_reports", level="dp_medium",
                 start=MONTHS[0], end=MONTHS[-1])
#: A month's lifetime out of reach, as in tests/system/test_gate.py.
_OUT_OF_REACH = PeriodPolicy(epsilon=1000.0, delta=1e-4, reserved=0.25)


def _principal(role: str) -> Principal:
    return Principal(subject=demo_username(role, TENANT), display_name=role, role=role,
                     tenant=TENANT, source="demo")


def _seed_cube(store, *, product: str, metric: str, category: str,
               counts: dict[date, int], district: str = "KGL-GAS") -> None:
    with store.write.begin() as session:
        for month, n in counts.items():
            session.add(CubeMonthly(
                tenant_id=TENANT, product_id=product, metric=metric, period=month,
                state=district[:3], district=district, h3_cell="87" + district[-3:],
                age_bucket="6-12", gender="female", category=category, n_events=n,
                value_sum=0.0))
        session.merge(ProductVersion(tenant_id=TENANT, product_id=product, data_version=1,
                                     refreshed_at=NOW, cube_rows=len(counts)))


@pytest.fixture
def gate(store, catalog) -> Gate:
    _seed_cube(store, product="education.iep", metric="reviews", category="on_track",
               counts=COUNTS)
    _seed_cube(store, product="education.progress", metric="progress_reports",
               category="literacy", counts=COUNTS)
    policy = dataclasses.replace(catalog.policy, periods=_OUT_OF_REACH)
    return Gate(store, dataclasses.replace(catalog, policy=policy), demo_accounts=True,
                clock=lambda: NOW)


def _spent(store, principal: Principal) -> float:
    with store.read() as session:
        return session.scalar(select(func.coalesce(func.sum(BudgetAccount.spent), 0.0)).where(
            BudgetAccount.principal == principal.subject))


def _refusals(store, principal: Principal, action: str) -> list[AuditEntry]:
    with store.read() as session:
        return list(session.scalars(select(AuditEntry).where(
            AuditEntry.principal == principal.subject, AuditEntry.action == action,
            AuditEntry.outcome == "refused")))


# --- who may use the IEP product ----------------------------------------------------------------

@pytest.mark.parametrize("role", ["researcher", "compliance_officer"])
def test_iep_is_refused_to_a_role_it_does_not_allow_spending_nothing(gate, store, role):
    """A release of IEP data by a role not in its allowed_roles is refused, says why, spends
    nothing, stores nothing, and is audited like every refusal."""
    principal = _principal(role)
    with pytest.raises(AccessDenied, match=r"may not use IEP goal progress \(education\.iep\): "
                                           r"it is open to the Policy maker role only\. "
                                           r"Nothing was spent"):
        gate.release(principal, IEP)
    assert _spent(store, principal) == 0.0
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(ReleaseRow)) == 0
    [refused] = _refusals(store, principal, "release")
    assert refused.target == "education.iep.reviews" and refused.role == role
    assert "may not use IEP goal progress" in refused.detail["reason"]


def test_a_preview_of_iep_by_a_role_not_allowed_is_refused_and_audited(gate, store):
    """Probing the cost of a refused product is refused and on record too."""
    principal = _principal("researcher")
    with pytest.raises(AccessDenied, match="may not use IEP goal progress"):
        gate.preview(principal, IEP)
    assert len(_refusals(store, principal, "preview")) == 1


def test_only_the_allowed_roles_get_the_iep_in_their_list_of_products(gate):
    """``gate.products`` (what every picker starts from) lists IEP for policy makers only."""
    for role in ("policy_maker", "researcher", "donor", "compliance_officer", "case_worker",
                 "tenant_admin", "platform_admin", "publisher"):
        ids = [p.id for p in gate.products(_principal(role))]
        assert ("education.iep" in ids) == (role == "policy_maker"), role
        assert "education.progress" in ids


def test_the_data_clock_of_iep_is_refused_to_a_role_not_allowed(gate):
    """No page can build an IEP query for another role: its data clock is refused."""
    with pytest.raises(AccessDenied, match="may not use IEP goal progress"):
        gate.data_clock(_principal("researcher"), product="education.iep")
    assert gate.data_clock(_principal("policy_maker"), product="education.iep").months()


def test_exports_neither_offer_nor_accept_iep_for_a_role_not_allowed(gate, store):
    """A researcher's exports do not list IEP, and a request for it is refused, audited, with
    nothing queued or spent; a policy maker's list has it."""
    researcher = _principal("researcher")
    assert "education.iep" not in gate.exports.products(researcher)
    assert "education.iep" in gate.exports.products(_principal("policy_maker"))
    with pytest.raises(AccessDenied, match="may not use IEP goal progress"):
        gate.exports.request(researcher, IEP, purpose="programme_monitoring")
    assert len(_refusals(store, researcher, "export_request")) == 1
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Export)) == 0
    assert _spent(store, researcher) == 0.0


def test_the_bias_check_of_iep_is_refused_to_a_compliance_officer(gate, store):
    """Compliance officers audit IEP releases in the logs; they cannot release its data."""
    officer = _principal("compliance_officer")
    with pytest.raises(AccessDenied, match="may not use IEP goal progress"):
        gate.compliance.bias_query(officer, product="education.iep", metric="reviews",
                                   months=3, level="dp_high")
    assert len(_refusals(store, officer, "compliance_view")) == 1
    assert _spent(store, officer) == 0.0


# --- the IEP's k --------------------------------------------------------------------------------

def test_the_iep_threshold_hides_a_count_a_k5_product_shows(gate):
    """Without noise, June's 8 reviews are hidden under the IEP's k = 11, while the same count
    in a k = 5 product is shown; 11 and more are shown in both."""
    principal = _principal("policy_maker")
    iep = {c.key[0]: c.value for c in exact_cells(gate, principal, IEP)}
    progress = {c.key[0]: c.value for c in exact_cells(gate, principal, PROGRESS)}
    assert iep == {"2026-06": None, "2026-07": 11.0, "2026-08": 40.0}
    assert progress == {"2026-06": 8.0, "2026-07": 11.0, "2026-08": 40.0}


def test_a_small_district_rolls_up_under_the_iep_k_but_not_under_k5(gate, store):
    """Grouped by district, districts of 8 and 6 are rolled up into their state for the IEP
    and shown on their own in a k = 5 product (measured without noise)."""
    for product, metric, category in (("education.iep", "reviews", "on_track"),
                                      ("education.progress", "progress_reports", "literacy")):
        for district, n in (("KGL-NYR", 8), ("KGL-KIC", 6)):
            _seed_cube(store, product=product, metric=metric, category=category,
                       counts={MONTHS[2]: n}, district=district)
    principal = _principal("policy_maker")
    by_district = {"start": MONTHS[2], "end": MONTHS[2], "group_by": ("month", "district")}
    iep = {c.key[1]: c for c in exact_cells(gate, principal,
                                            dataclasses.replace(IEP, **by_district))}
    progress = {c.key[1]: c for c in exact_cells(gate, principal,
                                                 dataclasses.replace(PROGRESS, **by_district))}
    assert iep["KGL-NYR"].status == "rolled_up:KGL" == iep["KGL-KIC"].status
    assert iep["KGL-NYR"].value is None and iep["KGL-GAS"].value == 40.0
    assert iep["KGL"].status == "rollup" and iep["KGL"].value == 14.0
    assert [progress[d].value for d in ("KGL-NYR", "KGL-KIC", "KGL-GAS")] == [8.0, 6.0, 40.0]


def test_an_allowed_role_gets_a_noisy_iep_release_at_k11(gate, store):
    """A policy maker's release costs the level's ε once and shows no value under 11."""
    principal = _principal("policy_maker")
    release = gate.release(principal, IEP)
    assert release.k == 11 and release.charged == Epsilon(1.0)
    assert _spent(store, principal) == 1.0
    for cell in release.cells:
        assert cell.status in {"noisy", "suppressed"}
        assert cell.value is None or cell.value >= 11
    assert release.cells[-1].status == "noisy"  # 40 reviews at ε = 1 (noise scale 2)


# --- mastery gain: a mean of changes, clamped to ±50 ---------------------------------------------

def _progress_events(store, values: list[float]) -> None:
    """Raw mastery progress reports in July, three per pupil (the product's monthly bound)."""
    with store.write.begin() as session:
        for i, value in enumerate(values):
            session.add(EducationEvent(
                event_id=f"progress-{i}", tenant_id=TENANT, product_id="education.progress",
                event_type="mastery_progress", pseudonym=f"pupil-{i // 3:04d}",
                ts=datetime(2026, 7, 10, 9, 0), day=date(2026, 7, 10), month=MONTHS[1],
                h3_cell="87GAS", district="KGL-GAS", age_bucket="6-12", gender="female",
                category=("literacy", "numeracy", "science")[i % 3], value=value))


def test_mastery_gain_is_a_mean_released_with_its_interval_and_clamped(store, catalog):
    """An outlier of +400 points counts as +50: the exact mean moves by at most 50 / n, and
    the noisy mean is released inside ±50 with its interval."""
    values = [3.0] * 999 + [400.0]
    _progress_events(store, values)
    materialize(store, catalog, tenant=TENANT, product="education.progress")
    policy = dataclasses.replace(catalog.policy, periods=_OUT_OF_REACH)
    gate = Gate(store, dataclasses.replace(catalog, policy=policy), clock=lambda: NOW)
    principal = _principal("policy_maker")
    query = Query(product="education.progress", metric="mastery_gain", level="dp_medium",
                  start=MONTHS[1], end=MONTHS[1])
    [exact] = exact_cells(gate, principal, query)
    assert exact.n == 1000.0
    assert exact.value == pytest.approx((999 * 3.0 + 50.0) / 1000)  # not (… + 400) / 1000
    release = gate.release(principal, query)
    [cell] = release.cells
    assert release.measure == "mean" and release.charged == Epsilon(1.0)
    assert cell.status == "noisy"
    assert -50.0 <= cell.lower <= cell.value <= cell.upper <= 50.0
    assert -5.0 < cell.value < 11.0  # loose: sum noise scale ~300 against 1,000 reports
