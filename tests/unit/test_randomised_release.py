"""Answers randomised at collection (issue 20): the catalog's declaration, the client helper,
joint release of a group's categories and their debiased estimates with both noises."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.errors import ConfigError, InvalidInput, VeilBug
from data.ingest.client import BATCH_EVENTS, RandomisingClient
from privacy import Cell, Epsilon, LocalRandomizer, PrivacyLoss
from privacy._engine import Level, Measured, release_cells
from privacy._local import debias_cells
from privacy._sensitivity import guarantee_text

SOURCE = PROJECT_ROOT / "catalog"
CATEGORIES = ("good", "fair", "poor", "very_poor")
TRUTH = {"good": 70_000, "fair": 20_000, "poor": 10_000, "very_poor": 0}
RANDOMIZER = LocalRandomizer(categories=CATEGORIES, epsilon=2.0)
CENTRAL_SCALE = 5.0  # Laplace b of the central noise: sensitivity 5 (a person-month) at ε = 1
CENTRAL_SD = CENTRAL_SCALE * math.sqrt(2)


def _randomise(rng: np.random.Generator, truth: dict[str, int]) -> dict[str, int]:
    """Seeded k-ary randomised response of every answer (numpy's draw of OpenDP's law)."""
    answers = np.repeat(np.arange(len(CATEGORIES)), [truth[c] for c in CATEGORIES])
    k = len(CATEGORIES)
    other = (answers + rng.integers(1, k, len(answers))) % k
    reports = np.where(rng.random(len(answers)) < RANDOMIZER.p, answers, other)
    return dict(zip(CATEGORIES, np.bincount(reports, minlength=k).tolist()))


def _noisy_cells(rng: np.random.Generator, reported: dict[str, int]) -> list[Cell]:
    """The engine's cells of one group: reported counts plus central noise of known sd."""
    cells = []
    for category in CATEGORIES:
        value = reported[category] + round(rng.laplace(0.0, CENTRAL_SCALE))
        cells.append(Cell(key=("2026-01", "T", category), value=float(value), lower=value - 15.0,
                          upper=value + 15.0, noise_scale=CENTRAL_SCALE, status="noisy",
                          n=float(value), sd=CENTRAL_SD))
    return cells


def test_debiased_estimates_on_100000_reports_are_within_their_stated_error():
    """70/20/10/0 over 100,000 randomised reports at ε = 2 plus central noise: each released
    estimate lies within its stated 95% error of the truth (seeded)."""
    rng = np.random.default_rng(20)
    cells = debias_cells(_noisy_cells(rng, _randomise(rng, TRUTH)), RANDOMIZER, at=2,
                         confidence=0.95)
    for cell in cells:
        truth = TRUTH[cell.key[2]]
        assert cell.lower <= truth <= cell.upper, (cell.key, cell.value, truth)
        assert abs(cell.value - truth) / cell.sd < 3
    assert sum(c.value for c in cells) == pytest.approx(100_000, abs=40)  # n is kept


def test_skipping_the_debiasing_misses_by_many_stated_errors():
    """The reported counts themselves are flattened towards 1/k: "good" is reported ~17,000
    short, "poor" ~5,800 and "very poor" ~9,600 over, many stated errors from the truth
    ("fair", at 20%, happens to be reported near its truth at this ε)."""
    rng = np.random.default_rng(20)
    noisy = _noisy_cells(rng, _randomise(rng, TRUTH))
    debiased = {c.key[2]: c for c in debias_cells(noisy, RANDOMIZER, at=2, confidence=0.95)}
    for cell in noisy:
        category = cell.key[2]
        if category == "fair":
            continue
        error = debiased[category].upper - debiased[category].value
        assert abs(cell.value - TRUTH[category]) > 10 * error, category


def test_intervals_combine_both_noises_and_cover_about_95_percent():
    """Over 400 seeded surveys of 2,000 answers with central noise, the intervals cover the
    truth about 95% of the time, and each is wider than the response or central part alone."""
    rng = np.random.default_rng(7)
    truth = {"good": 1_400, "fair": 400, "poor": 200, "very_poor": 0}
    covered = total = 0
    for _ in range(400):
        for cell in debias_cells(_noisy_cells(rng, _randomise(rng, truth)), RANDOMIZER, at=2,
                                 confidence=0.95):
            covered += cell.lower <= truth[cell.key[2]] <= cell.upper
            total += 1
            assert cell.sd > CENTRAL_SD / (RANDOMIZER.p - RANDOMIZER.q) * (1 - RANDOMIZER.q)
    assert 0.93 <= covered / total <= 0.97  # 1,600 intervals: about ±3.5 standard deviations


def test_a_groups_categories_roll_up_together():
    """Districts with one small category move all their categories to the parent: every
    released group holds every category over the same members, and debiases."""
    state = {"A1": "A", "A2": "A", "B1": "B"}
    levels = [Level("district", state.__getitem__), Level("state", lambda _s: "T"),
              Level("tenant", None)]
    keys = [("2026-01", d, c) for d in state for c in CATEGORIES]
    truth = {key: (500, 0.0) for key in keys}
    truth[("2026-01", "A1", "very_poor")] = (2, 0.0)
    truth[("2026-01", "A2", "very_poor")] = (4, 0.0)  # together with A1's: 6 ≥ k in state A
    exact = [Measured(count=None, total=None)] * 3
    alone = release_cells(keys=keys, truth=truth, levels=levels, measured=exact, k=5,
                          measure="count", bounds=None, empty_cell_rate=0.02)
    together = release_cells(keys=keys, truth=truth, levels=levels, measured=exact, k=5,
                             measure="count", bounds=None, empty_cell_rate=0.02, jointly=2)
    status = {c.key: c.status for c in alone}
    assert status[("2026-01", "A1", "good")] == "exact"
    assert status[("2026-01", "A1", "very_poor")] == "rolled_up:A"
    status = {c.key: c.status for c in together}
    assert {status[("2026-01", "A1", c)] for c in CATEGORIES} == {"rolled_up:A"}
    rollups = [c for c in together if c.status == "rollup"]
    assert {c.key[2] for c in rollups} == set(CATEGORIES)
    assert {c.members for c in rollups} == {("A1", "A2")}
    with pytest.raises(VeilBug, match="not all of"):
        debias_cells(alone, RANDOMIZER, at=2, confidence=0.95)
    assert len(debias_cells(together, RANDOMIZER, at=2, confidence=0.95)) == len(together)


def test_the_guarantee_states_the_local_and_the_central_epsilon():
    """Each report's ε_local (and a person-month's), then the release's central ε."""
    product = load_catalog(SOURCE).product("health.wellbeing")
    text = guarantee_text(product, PrivacyLoss(Epsilon(1.0)))
    assert text.startswith("Each report was randomised at collection (k-ary randomised "
                           "response at ε_local = 2 per report; one person's wellbeing "
                           "check-ins in one month (at most 5): ε_local ≤ 10)")
    assert text.endswith("Protects one person's wellbeing check-ins in one month (at most 5) "
                         "at ε = 1.")


# --- the catalog's declaration -------------------------------------------------------------


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(SOURCE, target)
    return target


@pytest.mark.parametrize(("old", "new", "message"), [
    ("randomised = { epsilon = 2.0 }", "randomised = { epsilon = 0 }",
     r"randomised\.epsilon'?: must be a number in \(0, 50\), got 0"),
    ("randomised = { epsilon = 2.0 }", "randomised = { epsilon = 2.0, k = 3 }",
     r"unknown keys \['k'\]"),
    ('id = "checkins"\ntitle = "Check-ins by wellbeing (debiased estimate)"\nmeasure = "count"',
     'id = "checkins"\ntitle = "Check-ins by wellbeing (debiased estimate)"\nmeasure = "count"'
     '\ncategory = "good"',
     r"metric\[checkins\].*no fixed category"),
])
def test_a_bad_randomised_declaration_is_refused(catalog_dir, old, new, message):
    """ε in (0, 50), only known keys, and plain counts over the domain (debiasable)."""
    path = catalog_dir / "products.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=message):
        load_catalog(catalog_dir)


# --- the client helper ------------------------------------------------------------------------


def _client(requests: list[dict]) -> tuple[RandomisingClient, httpx.Client]:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append({"auth": request.headers["authorization"], **body})
        return httpx.Response(200, json={"accepted": len(body["events"]), "duplicate": 0,
                                         "bounded": 0, "rejected": 0, "results": []})

    client = RandomisingClient.from_catalog(load_catalog(SOURCE), url="http://collector",
                                            token="veil_t", product="health.wellbeing")
    return client, httpx.Client(transport=httpx.MockTransport(handle))


def test_the_client_randomises_every_answer_before_posting_it():
    """Reports carry the declared ε and a declared category; batches of at most 1,000."""
    requests: list[dict] = []
    client, http = _client(requests)
    events = [{"event_id": f"e{i}", "category": "good"} for i in range(BATCH_EVENTS + 500)]
    answers = client.send(events, http=http)
    assert [a["accepted"] for a in answers] == [BATCH_EVENTS, 500]
    sent = [e for r in requests for e in r["events"]]
    assert {r["product"] for r in requests} == {"health.wellbeing"}
    assert {r["auth"] for r in requests} == {"Bearer veil_t"}
    assert {e["randomised_epsilon"] for e in sent} == {2.0}
    assert set(e["category"] for e in sent) == set(CATEGORIES)  # truth is all "good"
    kept = sum(e["category"] == "good" for e in sent) / len(sent)
    assert abs(kept - RANDOMIZER.p) < 5 * math.sqrt(RANDOMIZER.p * (1 - RANDOMIZER.p) / 1500)
    assert all(e["category"] == "good" for e in events)  # the caller's events are untouched


def test_the_client_sends_nothing_when_an_answer_is_outside_the_domain():
    """An undeclared answer stops the whole send before the first request."""
    requests: list[dict] = []
    client, http = _client(requests)
    with pytest.raises(InvalidInput, match="'excellent' is not one of the declared categories"):
        client.send([{"category": "good"}, {"category": "excellent"}], http=http)
    assert requests == []


def test_the_client_is_only_for_randomised_products():
    """A product collecting true answers has no randomiser to apply."""
    with pytest.raises(InvalidInput, match="health.vaccinations is not randomised"):
        RandomisingClient.from_catalog(load_catalog(SOURCE), url="http://collector",
                                       token="veil_t", product="health.vaccinations")


# --- the demo stores reports, not answers -----------------------------------------------------


def test_the_demo_stores_randomised_reports_of_a_randomised_product():
    """The demo's true categories are randomised at the declared ε (kept with p, else another
    uniformly), from their own seeded stream; other products' categories are untouched."""
    from types import SimpleNamespace

    from data.demo._events import _Chunk, _randomise_reports
    from data.demo._profiles import _PROFILES

    assert _PROFILES["health.wellbeing"].extra  # on top: no other product's event moves
    catalog = load_catalog(SOURCE)
    n = 100_000
    truth = np.zeros(n, dtype=np.int64)  # everyone answers "good"
    chunk = _Chunk(subject=np.arange(n), day=np.zeros(n, dtype=np.int64),
                   slot=np.zeros(n, dtype=np.int64), cell=np.zeros(n, dtype=np.int64),
                   category=truth, value=None, event_type=None)
    plan = SimpleNamespace(product=catalog.product("health.wellbeing"),
                           categories=np.array(CATEGORIES, dtype=object))
    reported = _randomise_reports(chunk, plan, np.random.default_rng(5)).category
    shares = np.bincount(reported, minlength=4) / n
    assert abs(shares[0] - RANDOMIZER.p) < 0.005
    assert all(abs(s - RANDOMIZER.q) < 0.005 for s in shares[1:])
    again = _randomise_reports(chunk, plan, np.random.default_rng(5)).category
    assert np.array_equal(reported, again)  # seeded: the demo stays deterministic
    plain = SimpleNamespace(product=catalog.product("health.vaccinations"),
                            categories=np.array(catalog.domains["vaccine"], dtype=object))
    assert _randomise_reports(chunk, plain, np.random.default_rng(5)) is chunk


# --- ingestion's rule ---------------------------------------------------------------------------


def _row(**fields) -> dict:
    row = {"event_id": "ev-1", "subject_id": "member-1", "event_type": "wellbeing_checkin",
           "timestamp": "2025-03-04T10:07:30Z", "district": "KGL-GAS", "category": "fair"}
    row.update(fields)
    return row


def test_ingestion_checks_the_randomisation_claim():
    """The declared ε (a CSV cell's text too) is accepted and not stored; no claim, another ε
    or a claim on a product collecting true answers is refused with its reason."""
    from datetime import UTC, datetime

    from data.ingest._rules import Event, Rules

    catalog = load_catalog(SOURCE)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    rules = Rules(catalog, tenant="kigali-east", product="health.wellbeing", secret="s" * 20,
                  now=now)
    for claim in (2.0, 2, "2.0"):
        event = rules.check(_row(randomised_epsilon=claim))
        assert isinstance(event, Event) and event.row[12] == "fair"
        assert claim not in event.row[13:]
    assert rules.check(_row()).code == "not randomised"
    assert rules.check(_row(randomised_epsilon=0.5)).reason == (
        "wrong randomisation: health.wellbeing reports must be randomised at ε = 2, got "
        "ε = 0.5: the gate debiases with the declared ε only")
    assert rules.check(_row(randomised_epsilon=True)).code == "wrong randomisation"
    plain = Rules(catalog, tenant="kigali-east", product="health.vaccinations",
                  secret="s" * 20, now=now)
    refused = plain.check(_row(event_type="vaccination", category="polio",
                               randomised_epsilon=2.0))
    assert refused.reason == ("not randomised: health.vaccinations collects true answers; "
                              "'randomised_epsilon' is not an event field of it")
