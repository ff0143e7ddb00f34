"""Answers randomised at collection (issue 20): client → collector → cube → debiased release.

The client randomises true wellbeing answers (70% good, 20% fair, 10% poor, none very poor)
at the product's declared ε = 2 and posts them to the real collector over a socket; the gate
releases debiased estimates with intervals for both noises. Both stores.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, datetime

import httpx
import pytest

from data.bootstrap import demo_username
from data.consent import record_consent
from data.ingest import add_source
from data.ingest.api import ApiLimits, create_app
from data.ingest.client import RandomisingClient
from data.materialize import materialize
from data.pseudonym import pseudonym
from ingest_support import GRANTED_AT, LAT, LNG, SECRET, TENANT, quarantined, serve, stored_events
from privacy import Epsilon, Gate, Principal, Query, QueryRefused

PRODUCT = "health.wellbeing"
MONTH = date(2025, 3, 1)
NOW = datetime(2026, 11, 21, 12, 0)
PEOPLE = 400
DAYS = (3, 10, 17, 24, 31)  # one check-in a week: the monthly bound of 5, one a day
TRUTH = {"good": 0.7, "fair": 0.2, "poor": 0.1, "very_poor": 0.0}


def _answers() -> list[dict]:
    """Every person's five true answers for March 2025, in the truth's proportions."""
    answers = []
    cut = {"good": 0, "fair": int(0.7 * PEOPLE), "poor": int(0.9 * PEOPLE)}
    for person in range(PEOPLE):
        category = max((c for c, start in cut.items() if person >= start),
                       key=lambda c: cut[c])
        for day in DAYS:
            answers.append({
                "event_id": f"wb-{person}-{day}", "subject_id": f"member-{person}",
                "event_type": "wellbeing_checkin", "timestamp": f"2025-03-{day:02d}T09:00:00Z",
                "age": 40, "category": category, "lat": LAT, "lng": LNG})
    return answers


@pytest.fixture
def collector(store, catalog):
    limits = ApiLimits(max_events=1000, max_bytes=1_048_576)
    with store.write.begin() as session:
        _, token = add_source(session, catalog, tenant=TENANT, name="wellbeing-app",
                              products=[PRODUCT])
        for person in range(PEOPLE):
            record_consent(session, catalog, tenant=TENANT,
                           pseudonym=pseudonym(SECRET, f"member-{person}"), vertical="health",
                           status="granted", at=GRANTED_AT)
    with serve(create_app(store, catalog, secret=SECRET, limits=limits)) as url:
        yield RandomisingClient.from_catalog(catalog, url=url, token=token, product=PRODUCT)


def _post_raw(client: RandomisingClient, events: list[dict]) -> dict:
    response = httpx.post(f"{client.url}/api/v1/events", timeout=30,
                          headers={"Authorization": f"Bearer {client.token}"},
                          json={"product": PRODUCT, "events": events})
    assert response.status_code == 200, response.text
    return response.json()


def test_reports_must_declare_the_products_epsilon_and_domain(collector, store):
    """Without the claim, at another ε or outside the domain: rejected and quarantined."""
    true = _answers()[:4]
    wrong = [
        dict(true[0]),                                                  # not randomised
        {**true[1], "randomised_epsilon": 1.0},                         # another ε
        {**true[2], "randomised_epsilon": 2.0, "category": "excellent"},  # undeclared
    ]
    answer = _post_raw(collector, wrong + [collector.randomise(true[3])])
    reasons = [r.get("reason", r["status"]) for r in answer["results"]]
    assert reasons[0].startswith("not randomised: health.wellbeing accepts only reports "
                                 "randomised at collection")
    assert reasons[1] == ("wrong randomisation: health.wellbeing reports must be randomised "
                          "at ε = 2, got ε = 1.0: the gate debiases with the declared ε only")
    assert reasons[2].startswith("unknown category: 'excellent' is not one of: fair, good")
    assert reasons[3] == "accepted"
    assert [row.reason for row in quarantined(store)] == reasons[:3]
    [stored] = stored_events(store)
    assert stored.category in TRUTH


def test_the_release_debiases_the_reports_within_their_intervals(collector, store, catalog):
    """Reported shares are flattened; released estimates recover 70/20/10/0 within their
    stated error, with intervals wider than central noise alone and both ε stated."""
    answers = _answers()
    sent = collector.send(answers)  # two requests of at most 1,000 events
    assert sum(a["accepted"] for a in sent) == len(answers) == PEOPLE * len(DAYS)
    reported = Counter(e.category for e in stored_events(store))
    n = sum(reported.values())
    # randomised response flattens: "good" is reported far less than its 70%, the empty
    # "very poor" about q ≈ 9.6% of the time
    assert reported["good"] / n < 0.6 and reported["very_poor"] / n > 0.06
    materialize(store, catalog, tenant=TENANT, product=PRODUCT)

    gate = Gate(store, catalog, demo_accounts=True, clock=lambda: NOW)
    principal = Principal(subject=demo_username("policy_maker", TENANT), display_name="pm",
                          role="policy_maker", tenant=TENANT, source="demo")
    query = Query(product=PRODUCT, metric="checkins", start=MONTH, end=MONTH,
                  level="dp_medium", group_by=("month", "category"))
    central = gate.preview(principal, query).interval_half_width
    release = gate.release(principal, query)
    cells = {c.key[2]: c for c in release.cells if c.value is not None and c.key[1] == TENANT}
    assert set(cells) == set(TRUTH)
    for category, share in TRUTH.items():
        cell, truth = cells[category], share * n
        half = (cell.upper - cell.lower) / 2
        assert half > central                          # both noises, not the central alone
        # loose on noise (the 95% interval covers, within twice its half-width here: a
        # failure has probability ~1e-4 per category)
        assert abs(cell.value - truth) <= 2 * half, (category, cell.value, truth, half)
        assert cell.lower <= cell.value <= cell.upper
    # undebiased, "good" would sit ~500 below its truth: many stated errors away
    good = cells["good"]
    assert abs(reported["good"] - TRUTH["good"] * n) > 4 * (good.upper - good.lower) / 2
    assert "debiased" in release.mechanism
    assert release.interval_level == catalog.policy.interval_confidence  # normal, at 95%
    again = gate.release(principal, query)  # stored debiased: the same numbers, free
    assert again.reused and again.charged == Epsilon(0.0) and again.cells == release.cells
    assert "ε_local = 2 per report" in release.guarantee
    assert f"at ε = {release.epsilon.value:g}" in release.guarantee
    # debiasing keeps the total: the estimates add up to the (noisy) number of reports
    assert math.isclose(sum(c.value for c in cells.values()), n, abs_tol=0.05 * n)


def test_a_filter_on_one_randomised_category_is_refused(collector, store, catalog):
    """One category's estimate needs every category's reports: group by category instead."""
    collector.send(_answers()[:50])
    materialize(store, catalog, tenant=TENANT, product=PRODUCT)
    gate = Gate(store, catalog, demo_accounts=True, clock=lambda: NOW)
    principal = Principal(subject=demo_username("policy_maker", TENANT), display_name="pm",
                          role="policy_maker", tenant=TENANT, source="demo")
    query = Query(product=PRODUCT, metric="checkins", start=MONTH, end=MONTH,
                  level="dp_medium", filters=(("category", "poor"),))
    with pytest.raises(QueryRefused, match="group by category instead of filtering"):
        gate.release(principal, query)
