"""GovSahay's event model (health.services): each event type's categories are whitelisted at
ingestion and are the keys of its metrics' releases.

Every test runs on the embedded store and, with VEIL_TEST_POSTGRES_URL, on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from data.bootstrap import demo_username
from data.catalog import PeriodPolicy
from data.ingest import ingest_rows
from data.materialize import materialize
from data.models import CubeMonthly
from privacy import Gate, Principal, Query

from ingest_support import LAT, LNG, SECRET, TENANT, grant, quarantined, stored_events

PRODUCT = "health.services"
MARCH = date(2026, 3, 1)
NOW = datetime(2026, 11, 21, 12, 0)
TYPES = ("complaint_escalated, complaint_resolved, complaint_submitted, daily_wellness_logged, "
         "tele_consultation_completed, tele_request_created, triage_completed")


def _row(n: int, event_type: str, category: Any = ..., **fields: Any) -> dict[str, Any]:
    """A valid GovSahay service event of person-``n`` (one person per row: no bound is near)."""
    row: dict[str, Any] = {"event_id": f"hs-{n}", "subject_id": f"person-{n}",
                           "event_type": event_type, "timestamp": "2026-03-04T10:07:30+02:00",
                           "age": 30, "gender": "female", "lat": LAT, "lng": LNG}
    if category is not ...:
        row["category"] = category
    row.update(fields)
    return row


def _ingest(store, catalog, rows: list[dict[str, Any]]):
    grant(store, catalog, *{row["subject_id"] for row in rows})
    return ingest_rows(store, catalog, rows, tenant=TENANT, product=PRODUCT, secret=SECRET)


def _reasons(store) -> list[str]:
    return [row.reason for row in quarantined(store)]


def test_each_event_type_is_accepted_with_a_category_of_its_own_domain(store, catalog):
    """A triage level, a complaint type, and no category where the type has none: all stored."""
    report = _ingest(store, catalog, [
        _row(1, "triage_completed", "emergency"),
        _row(2, "complaint_resolved", "billing_dispute"),
        _row(3, "tele_request_created"),
        _row(4, "daily_wellness_logged", value=7.5),
    ])
    assert (report.accepted, report.rejected) == (4, 0)
    stored = {(e.event_type, e.category, e.value) for e in stored_events(store)}
    assert stored == {("triage_completed", "emergency", None),
                      ("complaint_resolved", "billing_dispute", None),
                      ("tele_request_created", None, None),
                      ("daily_wellness_logged", None, 7.5)}


def test_an_event_type_outside_the_whitelist_is_quarantined_naming_the_allowed_types(store,
                                                                                    catalog):
    """GovSahay's types that belong elsewhere (or nowhere) are refused with the whitelist."""
    report = _ingest(store, catalog, [_row(1, "triage_emergency", "emergency"),
                                      _row(2, "neuroscreen_completed", "high"),
                                      _row(3, "vaccination_recorded")])
    assert (report.accepted, report.rejected) == (0, 3)
    assert _reasons(store) == [
        f"unknown event type: '{name}' is not one of: {TYPES}"
        for name in ("triage_emergency", "neuroscreen_completed", "vaccination_recorded")]
    assert stored_events(store) == []


def test_a_category_of_another_types_domain_is_quarantined_naming_the_type(store, catalog):
    """A complaint type on a triage, a triage level on a complaint, any category on a
    tele-consultation: each refused with its type and what that type allows."""
    report = _ingest(store, catalog, [
        _row(1, "triage_completed", "service_quality"),
        _row(2, "complaint_submitted", "phc"),
        _row(3, "tele_consultation_completed", "phc"),
        _row(4, "triage_completed"),
    ])
    assert (report.accepted, report.rejected) == (0, 4)
    assert _reasons(store) == [
        "unknown category: 'service_quality' is not a category of triage_completed; one of: "
        "emergency, phc, self_care",
        "unknown category: 'phc' is not a category of complaint_submitted; one of: "
        "billing_dispute, discrimination, facility_issues, medication_error, other, "
        "service_quality, staff_behavior",
        "unknown category: tele_consultation_completed events of health.services have no "
        "categories; got 'phc'",
        "missing field: 'category' is required for triage_completed events of health.services; "
        "one of: emergency, phc, self_care",
    ]
    assert stored_events(store) == []


def test_a_daily_wellness_logger_keeps_their_service_events_of_the_month(store, catalog):
    """The monthly bound (10) holds per event type: a person who logs wellness every day has
    their 11th log of March on quarantined as over the bound, and the triage and complaint they
    have on the 20th stored all the same."""
    logs = [_row(1, "daily_wellness_logged", value=6.0, event_id=f"log-{day}",
                 timestamp=f"2026-03-{day:02d}T08:00:00Z") for day in range(1, 21)]
    services = [_row(1, "triage_completed", "phc", event_id="triage",
                     timestamp="2026-03-20T09:00:00Z"),
                _row(1, "complaint_submitted", "service_quality", event_id="complaint",
                     timestamp="2026-03-20T10:00:00Z")]
    report = _ingest(store, catalog, logs + services)
    assert (report.accepted, report.bounded) == (12, 10)
    assert _reasons(store) == [
        "over monthly contribution bound: the subject already has 10 daily_wellness_logged "
        "event(s) in 2026-03 (at most 10 per subject per month)"] * 10
    stored = sorted((e.event_type, e.day.day) for e in stored_events(store))
    assert stored == sorted([("daily_wellness_logged", day) for day in range(1, 11)]
                            + [("triage_completed", 20), ("complaint_submitted", 20)])


@pytest.fixture
def gate(store, catalog) -> Gate:
    # a month's lifetime budget out of reach: these tests release several metrics of one month
    policy = dataclasses.replace(catalog.policy,
                                 periods=PeriodPolicy(epsilon=1000.0, delta=1e-4, reserved=0.25))
    return Gate(store, dataclasses.replace(catalog, policy=policy), demo_accounts=True,
                clock=lambda: NOW)


def _released_categories(gate: Gate, metric: str) -> list[str]:
    principal = Principal(subject=demo_username("policy_maker", TENANT),
                          display_name="policy_maker", role="policy_maker", tenant=TENANT,
                          source="demo")
    release = gate.release(principal, Query(product=PRODUCT, metric=metric, level="dp_medium",
                                            start=MARCH, end=MARCH,
                                            group_by=("month", "category")))
    return sorted(cell.key[-1] for cell in release.cells)


def _cube(store) -> dict[tuple[str, str], int]:
    with store.read() as session:
        rows = session.execute(
            select(CubeMonthly.metric, CubeMonthly.category, func.sum(CubeMonthly.n_events))
            .where(CubeMonthly.tenant_id == TENANT, CubeMonthly.product_id == PRODUCT)
            .group_by(CubeMonthly.metric, CubeMonthly.category)).all()
    return {(metric, category): int(n) for metric, category, n in rows}


def test_a_per_type_metric_by_category_has_exactly_its_types_declared_categories(store,
                                                                               catalog, gate):
    """Keys come from the metric's event type's domain, zero-filled, never from the data."""
    _ingest(store, catalog, [_row(n, "triage_completed", "self_care") for n in range(1, 9)]
            + [_row(9, "triage_completed", "emergency")]
            + [_row(n, "complaint_submitted", "other") for n in range(10, 13)]
            + [_row(n, "tele_consultation_completed") for n in range(13, 15)])
    materialize(store, catalog, tenant=TENANT, product=PRODUCT)
    assert _cube(store) == {("triages", "self_care"): 8, ("triages", "emergency"): 1,
                            ("emergency_triages", "-"): 1,
                            ("complaints_submitted", "other"): 3, ("teleconsultations", "-"): 2}
    assert _released_categories(gate, "triages") == ["emergency", "phc", "self_care"]
    assert _released_categories(gate, "complaints_submitted") == sorted(
        catalog.domains["complaint_type"])
    assert _released_categories(gate, "teleconsultations") == ["-"]
    # a metric of one category of its type's events, reported without categories
    assert _released_categories(gate, "emergency_triages") == ["-"]
