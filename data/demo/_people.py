"""The demo's people: subjects, their consent history, and beneficiary registrations.

Owns drawing each tenant's subjects (home district and cell, age, gender, activity, when they
join, who withdraws consent for which vertical and when) and loading them with their consent
events, current consent and registrations. It stores keyed pseudonyms only, never a raw subject
id, and records consent before any activity of the same day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from sqlalchemy.orm import Session

from data.bulk import bulk_insert
from data.catalog import Catalog, TenantSpec
from data.demo._calendar import _SLOTS_PER_DAY, _Calendar
from data.demo._places import _Geo, _sample_cells
from data.pseudonym import pseudonym

_VERTICALS = ("health", "education", "social_protection")
_WITHDRAWAL_RATE = 0.02
_REGISTRATION_RATE = 0.65
_CONSENT_SLOTS = (24, 28)  # 06:00-06:45: consent is recorded before any activity that day

# Population structure of the tenants' catchment (young, as in the region).
_AGE_POPULATION = {"0-5": 0.16, "6-12": 0.18, "13-18": 0.14, "19-35": 0.25, "36-60": 0.18,
                   "60+": 0.06, "unknown": 0.03}
_GENDER_POPULATION = {"female": 0.505, "male": 0.485, "other": 0.004, "unknown": 0.006}


@dataclass(frozen=True)
class _Subjects:
    """One tenant's people: attributes as parallel arrays, index = person number."""

    tenant: str
    pseudonyms: np.ndarray
    district: np.ndarray  # district index
    cell: np.ndarray  # home cell index
    age: np.ndarray  # index into the age_bucket domain
    gender: np.ndarray  # index into the gender domain
    activity: np.ndarray  # how active the person is, log-normal around 1
    first_day: np.ndarray
    first_slot: np.ndarray
    withdraw_vertical: np.ndarray  # index into _VERTICALS, -1 = never withdraws
    withdraw_day: np.ndarray
    withdraw_slot: np.ndarray
    n_days: int  # days in the demo window

    def __len__(self) -> int:
        return len(self.pseudonyms)

    def active_until(self, vertical: str) -> np.ndarray:
        """Day (exclusive) until which each subject may have events in ``vertical``."""
        v = _VERTICALS.index(vertical)
        return np.where(self.withdraw_vertical == v, self.withdraw_day, self.n_days)


def _weights(domain: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    array = np.array([weights.get(value, 0.0) for value in domain], dtype=float)
    if array.sum() <= 0:
        array = np.ones(len(domain))
    return array / array.sum()


def _make_subjects(rng: np.random.Generator, catalog: Catalog, geo: _Geo, tenant: TenantSpec,
                   count: int, secret: str, n_days: int) -> _Subjects:
    district_index = {code: i for i, code in enumerate(geo.district_codes)}
    districts = catalog.districts_of(tenant.id)
    d_weights = np.array([d.weight for d in districts], dtype=float)
    home = rng.choice(np.array([district_index[d.code] for d in districts]), size=count,
                      p=d_weights / d_weights.sum())
    cell = _sample_cells(geo, home, rng.random(count))
    age = rng.choice(len(catalog.domains["age_bucket"]), size=count,
                     p=_weights(catalog.domains["age_bucket"], _AGE_POPULATION))
    gender = rng.choice(len(catalog.domains["gender"]), size=count,
                        p=_weights(catalog.domains["gender"], _GENDER_POPULATION))
    activity = rng.lognormal(0.0, 0.6, count)
    # Most people are already in the programmes when the window opens; the rest join over time.
    existing = rng.random(count) < 0.55
    first_day = np.where(existing, rng.integers(0, 45, count),
                         rng.integers(0, n_days - 30, count))
    first_slot = rng.integers(*_CONSENT_SLOTS, count)
    withdraws = rng.random(count) < _WITHDRAWAL_RATE
    withdraw_vertical = np.where(withdraws, rng.integers(0, len(_VERTICALS), count), -1)
    room = n_days - first_day - 1
    withdraw_day = first_day + 1 + np.floor(rng.random(count) * room).astype(np.int64)
    withdraw_slot = rng.integers(28, 80, count)
    pseudonyms = np.array(
        [pseudonym(secret, f"{tenant.id}-person-{i}") for i in range(count)], dtype=object)
    return _Subjects(
        tenant=tenant.id, pseudonyms=pseudonyms, district=home, cell=cell, age=age,
        gender=gender, activity=activity, first_day=first_day, first_slot=first_slot,
        withdraw_vertical=withdraw_vertical, withdraw_day=withdraw_day,
        withdraw_slot=withdraw_slot, n_days=n_days,
    )


def _load_people(session: Session, rng: np.random.Generator, subjects: _Subjects,
                 catalog: Catalog, geo: _Geo, cal: _Calendar,
                 genders: np.ndarray) -> dict[str, int]:
    """Subjects, their consent history and current consent, and registrations."""
    n = len(subjects)
    tenant = subjects.tenant
    pseudonyms = subjects.pseudonyms.tolist()
    first_at = cal.ts_str[subjects.first_day * _SLOTS_PER_DAY + subjects.first_slot].tolist()
    districts = geo.district_codes[subjects.district].tolist()
    bulk_insert(session, "subjects", ("tenant_id", "pseudonym", "district", "created_at"),
                zip(repeat(tenant, n), pseudonyms, districts, first_at))

    withdrawn = np.flatnonzero(subjects.withdraw_vertical >= 0)
    withdrawn_at = cal.ts_str[subjects.withdraw_day[withdrawn] * _SLOTS_PER_DAY
                              + subjects.withdraw_slot[withdrawn]].tolist()
    withdrawn_vertical = [_VERTICALS[v] for v in subjects.withdraw_vertical[withdrawn]]
    consent_columns = ("tenant_id", "pseudonym", "vertical", "status", "at")
    grants = ((tenant, pseudonyms[i], vertical, "granted", first_at[i])
              for i in range(n) for vertical in _VERTICALS)
    withdrawals = [(tenant, pseudonyms[i], withdrawn_vertical[k], "withdrawn", withdrawn_at[k])
                   for k, i in enumerate(withdrawn.tolist())]
    bulk_insert(session, "consent_events", consent_columns, grants)
    bulk_insert(session, "consent_events", consent_columns, withdrawals)

    # Current consent is the latest event per vertical: the withdrawal where there is one.
    latest = {(i, withdrawn_vertical[k]): withdrawn_at[k]
              for k, i in enumerate(withdrawn.tolist())}
    current = (
        (tenant, pseudonyms[i], vertical, "granted", first_at[i]) if at is None
        else (tenant, pseudonyms[i], vertical, "withdrawn", at)
        for i in range(n) for vertical in _VERTICALS
        for at in (latest.get((i, vertical)),)
    )
    bulk_insert(session, "subject_consent", ("tenant_id", "pseudonym", "vertical", "status",
                                    "changed_at"), current)

    registrations = _registrations(rng, subjects, catalog, geo, cal, genders)
    bulk_insert(session, "registrations", _REGISTRATION_COLUMNS, registrations)
    return {"subjects": n, "consent_events": 3 * n + len(withdrawals),
            "subject_consent": 3 * n, "registrations": len(registrations),
            "withdrawals": len(withdrawals)}


_REGISTRATION_COLUMNS = ("registration_id", "tenant_id", "pseudonym", "registered_at",
                         "district", "agent_code", "status", "birth_date", "gender",
                         "household_size")
# Age in years at registration, per age bucket: [low, high).
_AGE_YEARS = {"0-5": (0, 6), "6-12": (6, 13), "13-18": (13, 19), "19-35": (19, 36),
              "36-60": (36, 61), "60+": (61, 90), "unknown": (19, 61)}


def _registrations(rng: np.random.Generator, subjects: _Subjects, catalog: Catalog, geo: _Geo,
                   cal: _Calendar, genders: np.ndarray) -> list[tuple]:
    """Registrations of about two thirds of the people, taken by a few agents per district."""
    chosen = np.flatnonzero(rng.random(len(subjects)) < _REGISTRATION_RATE)
    n = len(chosen)
    day = subjects.first_day[chosen]
    slot = rng.integers(32, 68, n)
    t = day / (cal.n_days - 1)
    # A verification backlog: recent registrations are more often still unverified (~15%).
    unverified = rng.random(n) < 0.08 + 0.25 * t
    ages = catalog.domains["age_bucket"]
    bounds = np.array([_AGE_YEARS.get(a, (19, 61)) for a in ages], dtype=float)
    age_lo, age_hi = bounds[subjects.age[chosen], 0], bounds[subjects.age[chosen], 1]
    age_days = np.floor((age_lo + rng.random(n) * (age_hi - age_lo)) * 365.25).astype(np.int64)
    age_days = np.maximum(age_days, 1)  # born at least the day before being registered
    birth = (np.datetime64(cal.start.isoformat(), "D") + day - age_days)
    birth_str = np.datetime_as_string(birth, unit="D").tolist()
    household = np.clip(1 + rng.poisson(3.2, n), 1, 14)
    agents = _agent_codes(catalog, geo)
    agent_pick = rng.random(n)
    district = subjects.district[chosen]
    agent_codes = [
        agents[d][min(int(u * u * len(agents[d])), len(agents[d]) - 1)]  # a few agents do most
        for d, u in zip(district.tolist(), agent_pick.tolist())
    ]
    tenant = subjects.tenant
    return list(zip(
        [f"{tenant}:reg:{k:08d}" for k in range(n)], repeat(tenant, n),
        subjects.pseudonyms[chosen].tolist(),
        cal.ts_str[day * _SLOTS_PER_DAY + slot].tolist(),
        geo.district_codes[district].tolist(), agent_codes,
        np.where(unverified, "unverified", "verified").tolist(), birth_str,
        genders[subjects.gender[chosen]].tolist(), household.tolist(),
    ))


def _agent_codes(catalog: Catalog, geo: _Geo) -> dict[int, list[str]]:
    """A handful of field agents per district (more in populous ones), numbered AG-001…"""
    codes: dict[int, list[str]] = {}
    number = 1
    for d_index, district in enumerate(catalog.districts):
        count = int(min(8, 2 + round(district.weight / 2)))
        codes[d_index] = [f"AG-{number + k:03d}" for k in range(count)]
        number += count
    return codes
