"""Cost showback per domain (issue 20) on both stores: rows stored, rebuild time and ε spent by
releases and exports, per domain of the tenant, over a trailing window — accounting pinned."""

from __future__ import annotations

from datetime import timedelta

import pytest

from data.errors import AccessDenied, InvalidInput
from data.models import HealthEvent, JobRun
from privacy import Gate
from tests.system.test_compliance import NOW, OFFICER, _bias_cube, _cube, _export, _principal, \
    _views


@pytest.fixture
def gate(store, catalog) -> Gate:
    return Gate(store, catalog, demo_accounts=True, clock=lambda: NOW)


def _run(store, *, product: str, started, seconds: float, status: str = "succeeded",
         tenant: str = "kigali-east") -> None:
    with store.write.begin() as session:
        session.add(JobRun(job="materialize", tenant_id=tenant, product_id=product,
                           status=status, started_at=started,
                           finished_at=started + timedelta(seconds=seconds), rows=10,
                           duration_s=seconds))


def _events(store, n: int, *, tenant: str = "kigali-east") -> None:
    with store.write.begin() as session:
        for i in range(n):
            session.add(HealthEvent(
                event_id=f"{tenant}-{i}", tenant_id=tenant, product_id="health.vaccinations",
                event_type="vaccination", pseudonym=f"p{i}", ts=NOW - timedelta(days=40),
                day=(NOW - timedelta(days=40)).date(), month=(NOW - timedelta(days=40)).date()
                .replace(day=1), h3_cell="87GAS", district="KGL-GAS",
                age_bucket="0-5", gender="female", category="polio", value=None))


def _domains(gate, days: int = 30) -> dict:
    return {d.domain: d for d in gate.compliance.cost_showback(OFFICER, days=days).domains}


def test_each_domain_shows_its_storage_rebuilds_and_spending(gate, store):
    """Storage now; rebuilds, releases and exports within the window; this tenant only."""
    _events(store, 3)
    _events(store, 2, tenant="musanze-north")
    _cube(store, cells=(("0-5", "female", 400), ("6-12", "male", 300)))
    _cube(store, tenant="musanze-north")
    _run(store, product="health.vaccinations", started=NOW - timedelta(days=1), seconds=2.5)
    _run(store, product="health.nutrition", started=NOW - timedelta(days=2), seconds=1.0,
         status="failed")
    _run(store, product="health.vaccinations", started=NOW - timedelta(days=45), seconds=9.0)
    _run(store, product="health.vaccinations", started=NOW, seconds=7.0, tenant="musanze-north")
    _export(store)
    _export(store, tenant="musanze-north")
    _bias_cube(store)
    query = gate.compliance.bias_query(OFFICER, product="education.mastery",
                                       metric="mastery_score", months=1, level="dp_high")
    release = gate.release(OFFICER, query)
    gate.release(OFFICER, query)  # stored: no new release, nothing charged

    domains = _domains(gate)
    assert list(domains) == ["health", "education", "social_protection"]
    health, education = domains["health"], domains["education"]
    assert (health.stored_rows, health.cube_rows, health.rebuilds, health.rebuild_seconds,
            health.failed_rebuilds, health.exports, health.export_epsilon,
            health.releases) == (3, 2, 2, 3.5, 1, 1, 0.5, 0)
    assert (education.releases, education.release_epsilon, education.exports,
            education.cube_rows) == (1, release.charged.value, 0, 4)
    assert release.charged.value == pytest.approx(0.5)
    assert domains["social_protection"].epsilon == 0
    # the first two health products, then the design round's (each change pins its own)
    assert health.products[:2] == ("Vaccinations administered", "Child nutrition screening")
    assert "Wellbeing check-ins (self-reported)" in health.products


def test_a_shorter_window_leaves_older_work_out_but_keeps_storage(gate, store):
    """Storage is counted as it stands; work only within the window's days."""
    _cube(store)
    _run(store, product="health.vaccinations", started=NOW - timedelta(days=10), seconds=4.0)
    report = gate.compliance.cost_showback(OFFICER, days=7)
    health = {d.domain: d for d in report.domains}["health"]
    assert (report.days, report.end, health.rebuilds, health.cube_rows) == (7, NOW.date(), 0, 1)
    assert _domains(gate, days=30)["health"].rebuilds == 1


def test_the_showback_is_on_the_record_and_for_compliance_officers_only(gate):
    """Each read is audited; another role is refused and the refusal recorded."""
    gate.compliance.cost_showback(OFFICER, days=30)
    assert [v.detail["days"] for v in _views(gate._store, "cost_showback")] == [30]
    with pytest.raises(AccessDenied):
        gate.compliance.cost_showback(_principal("policy_maker"))
    assert len(_views(gate._store, "cost_showback", "refused")) == 1


@pytest.mark.parametrize("days", [0, 367, 7.5, True])
def test_a_window_outside_one_day_to_a_year_is_refused(gate, days):
    """Bad windows are bad input, quoted."""
    with pytest.raises(InvalidInput, match="1 to 366 days"):
        gate.compliance.cost_showback(OFFICER, days=days)
