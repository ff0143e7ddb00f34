"""Ingestion row rules (SPEC B2): validation, PII defence and de-identification, no store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import h3
import pytest

from data.errors import ConfigError, InvalidInput
from data.ingest import (
    DISTRICT_ONLY_CELL,
    Event,
    Rejection,
    Rules,
    age_bucket,
    floor_to_quarter_hour,
    redacted_copy,
)
from data.ingest._rules import EVENT_COLUMNS
from data.pseudonym import EventKeys, Pseudonymizer, pseudonym

SECRET = "unit-test-secret-0123456789"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LAT, LNG = -1.9536, 30.0606  # Nyarugenge, Kigali


@pytest.fixture(scope="module")
def rules(catalog) -> Rules:
    return Rules(catalog, tenant="kigali-east", product="health.vaccinations", secret=SECRET,
                 now=NOW)


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "ev-1", "subject_id": "person-1", "event_type": "vaccination",
        "timestamp": "2025-03-04T10:07:30Z", "age": 4, "gender": "female",
        "category": "polio", "lat": LAT, "lng": LNG,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def stored(result: Event | Rejection) -> dict[str, Any]:
    assert isinstance(result, Event), result
    return dict(zip(EVENT_COLUMNS, result.row))


def rejected(result: Event | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


# --- time ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "floored"), [
    ("2025-03-04T10:07:30Z", "2025-03-04 10:00:00.000000"),
    ("2025-03-04T10:14:59Z", "2025-03-04 10:00:00.000000"),
    ("2025-03-04T10:15:00Z", "2025-03-04 10:15:00.000000"),
])
def test_event_time_is_floored_to_fifteen_minutes(rules, given, floored):
    """10:07:30 → 10:00, 10:14:59 → 10:00, 10:15:00 → 10:15."""
    assert stored(rules.check(row(timestamp=given)))["ts"] == floored


def test_floor_helper_gives_naive_utc():
    """floor_to_quarter_hour returns naive UTC, floored."""
    moment = datetime(2025, 3, 4, 10, 7, 30, tzinfo=UTC)
    assert floor_to_quarter_hour(moment) == datetime(2025, 3, 4, 10, 0)


def test_time_zones_are_normalised_to_utc(rules):
    """10:07:30+02:00 is stored as 08:00 UTC, with its UTC day and month."""
    event = stored(rules.check(row(timestamp="2025-03-01T01:07:30+02:00")))
    assert (event["ts"], event["day"], event["month"]) == (
        "2025-02-28 23:00:00.000000", "2025-02-28", "2025-02-01")


def test_a_quarter_hour_offset_is_converted_before_flooring(rules):
    """Nepal's +05:45: 10:07 local is 04:22 UTC, floored to 04:15."""
    assert stored(rules.check(row(timestamp="2025-03-04T10:07:00+05:45")))["ts"] == \
        "2025-03-04 04:15:00.000000"


@pytest.mark.parametrize(("given", "why"), [
    ("2025-03-04T10:07:30", "no time zone"),
    ("2025-03-04", "no time zone"),
    ("yesterday", "not an ISO 8601 time"),
    ("1999-12-31T23:59:59Z", "before 2000-01-01"),
    ("2026-11-01T13:00:00Z", "in the future"),
    (1741082850, "must be an ISO 8601 string"),
])
def test_bad_timestamps_are_rejected(rules, given, why):
    """Naive, unparseable, too old, future and numeric timestamps are refused, said why."""
    result = rejected(rules.check(row(timestamp=given)))
    assert result.code == "invalid timestamp" and why in result.detail


# --- age -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("age", "bucket"), [
    (0, "0-5"), (5, "0-5"), (6, "6-12"), (12, "6-12"), (13, "13-18"), (18, "13-18"),
    (19, "19-35"), (35, "19-35"), (36, "36-60"), (60, "36-60"), (61, "60+"), (130, "60+"),
    (None, "unknown"),
])
def test_ages_become_buckets(rules, age, bucket):
    """Ages land in 0-5, 6-12, 13-18, 19-35, 36-60, 60+ or unknown; the age is not kept."""
    assert age_bucket(age) == bucket
    event = stored(rules.check(row(age=age if age is not None else ...)))
    assert event["age_bucket"] == bucket
    assert age is None or age in (0, 5) or age not in event.values()


@pytest.mark.parametrize("age", ["12", 12.0, " 12 "])
def test_ages_as_text_or_whole_floats_are_accepted(rules, age):
    """CSV gives text; some collectors send 12.0."""
    assert stored(rules.check(row(age=age)))["age_bucket"] == "6-12"


@pytest.mark.parametrize("age", [-1, 131, 5.5, "five", True, [4]])
def test_impossible_ages_are_rejected(rules, age):
    """Negative, over 130, fractional, non-numeric ages are invalid values."""
    assert rejected(rules.check(row(age=age))).code == "invalid value"


# --- place -----------------------------------------------------------------------------------


def test_coordinates_become_an_h3_cell_at_resolution_7(rules):
    """lat/lng → the resolution-7 H3 cell and its district; no coordinate is stored."""
    event = stored(rules.check(row()))
    assert event["h3_cell"] == h3.latlng_to_cell(LAT, LNG, 7)
    assert h3.get_resolution(event["h3_cell"]) == 7
    assert event["district"] == "KGL-NYR"
    assert LAT not in event.values() and LNG not in event.values()
    assert not any(isinstance(v, float) for k, v in event.items() if k != "value")


def test_coordinates_as_text_work_too(rules):
    """CSV coordinates arrive as text."""
    assert stored(rules.check(row(lat=str(LAT), lng=str(LNG))))["district"] == "KGL-NYR"


def test_postal_codes_become_districts(rules):
    """A postal code is stored as its district only, with no invented cell."""
    event = stored(rules.check(row(lat=..., lng=..., postal_code="10215")))
    assert (event["district"], event["h3_cell"]) == ("KGL-GAS", DISTRICT_ONLY_CELL)


def test_a_district_code_is_accepted_as_location(rules):
    """A district code is stored as is, with no cell."""
    event = stored(rules.check(row(lat=..., lng=..., district="EAS-RWA")))
    assert (event["district"], event["h3_cell"]) == ("EAS-RWA", DISTRICT_ONLY_CELL)


@pytest.mark.parametrize(("fields", "code"), [
    ({"lat": ..., "lng": ..., "district": "SOU-HUY"}, "outside tenant area"),
    ({"lat": ..., "lng": ..., "postal_code": "20105"}, "outside tenant area"),
    ({"lat": 48.85, "lng": 2.35}, "outside tenant area"),
    ({"lat": ..., "lng": ..., "postal_code": "99999"}, "unknown postal code"),
    ({"lat": ..., "lng": ..., "postal_code": "1021"}, "invalid value"),
    ({"lat": 91.0}, "invalid value"),
    ({"lng": ...}, "missing field"),
    ({"lat": ..., "lng": ...}, "missing field"),
    ({"district": "KGL-NYR"}, "invalid value"),
])
def test_locations_outside_the_tenant_or_malformed_are_rejected(rules, fields, code):
    """Another tenant's district, a point abroad, unknown codes and half coordinates."""
    assert rejected(rules.check(row(**fields))).code == code


# --- identifiers -----------------------------------------------------------------------------


def test_subject_ids_become_keyed_pseudonyms(rules, catalog):
    """The stored pseudonym is HMAC-SHA256(secret, raw id); another secret gives another."""
    event = stored(rules.check(row(subject_id="person-42")))
    assert event["pseudonym"] == pseudonym(SECRET, "person-42")
    assert "person-42" not in json.dumps(list(event.values()))
    other = Rules(catalog, tenant="kigali-east", product="health.vaccinations",
                  secret="another-secret-0123456789", now=NOW)
    assert stored(other.check(row(subject_id="person-42")))["pseudonym"] != event["pseudonym"]


def test_event_ids_are_stored_as_keyed_hashes_scoped_to_tenant_and_product(rules, catalog):
    """A source's event id is never stored; the same id in another product is another key."""
    mine = stored(rules.check(row(event_id="550e8400-e29b-41d4-a716-446655440000")))
    assert mine["event_id"] == EventKeys(SECRET, tenant="kigali-east",
                                         product="health.vaccinations").of(
        "550e8400-e29b-41d4-a716-446655440000")
    assert mine["event_id"] != pseudonym(SECRET, "550e8400-e29b-41d4-a716-446655440000")
    assert len(mine["event_id"]) == 32 and int(mine["event_id"], 16) >= 0
    nutrition = Rules(catalog, tenant="kigali-east", product="health.nutrition", secret=SECRET,
                      now=NOW)
    theirs = stored(nutrition.check(row(event_id="550e8400-e29b-41d4-a716-446655440000",
                                        event_type="nutrition_screening", category=...)))
    assert theirs["event_id"] != mine["event_id"]


def test_a_missing_secret_is_refused(catalog):
    """Pseudonyms cannot be keyed without the deployment secret."""
    with pytest.raises(ConfigError, match="VEIL_SECRET"):
        Rules(catalog, tenant="kigali-east", product="health.vaccinations", secret="")


def test_only_event_products_take_events(catalog):
    """The operational registrations list is not an event product."""
    with pytest.raises(InvalidInput, match="social.registrations.*not an event product"):
        Rules(catalog, tenant="south", product="social.registrations", secret=SECRET)


# --- whitelists and schema -------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "code"), [
    ({"event_type": "autopsy"}, "unknown event type"),
    ({"category": "covid"}, "unknown category"),
    ({"category": ...}, "missing field"),
    ({"gender": "robot"}, "unknown gender"),
    ({"event_id": ...}, "missing field"),
    ({"subject_id": ""}, "missing field"),
    ({"timestamp": None}, "missing field"),
    ({"severity": "high"}, "unknown field"),
    ({"value": "lots"}, "invalid value"),
    ({"value": 2_000_000}, "invalid value"),
    ({"value": float("nan")}, "invalid value"),
    ({"subject_id": ["a"]}, "invalid value"),
    ({"metadata": "note"}, "invalid value"),
])
def test_fields_outside_their_schema_are_rejected(rules, fields, code):
    """Event types and categories come from the catalog; types and ranges are checked."""
    assert rejected(rules.check(row(**fields))).code == code


def test_values_are_kept_to_two_decimals(rules):
    """A value is stored to cents: too few digits to spell a phone number."""
    assert stored(rules.check(row(value="71.456")))["value"] == 71.46
    assert stored(rules.check(row(value=0.250788123456)))["value"] == 0.25


def test_gender_is_case_insensitive_and_defaults_to_unknown(rules):
    """'Female' is 'female'; no gender is 'unknown'."""
    assert stored(rules.check(row(gender="Female")))["gender"] == "female"
    assert stored(rules.check(row(gender=...)))["gender"] == "unknown"


def test_a_product_without_categories_refuses_one(catalog):
    """health.nutrition's category domain is 'none': a category is an error, '-' is none."""
    nutrition = Rules(catalog, tenant="kigali-east", product="health.nutrition",
                      secret=SECRET, now=NOW)
    ok = stored(nutrition.check(row(event_type="nutrition_screening", category=..., value=71.5)))
    assert (ok["category"], ok["value"]) == (None, 71.5)
    assert rejected(nutrition.check(row(event_type="nutrition_screening",
                                        category="polio"))).code == "unknown category"


@pytest.mark.parametrize("value", ["not json", [1, 2], 7, None])
def test_anything_but_an_object_is_a_malformed_row(rules, value):
    """Rows must be objects."""
    assert rejected(rules.check(value)).code == "malformed row"


# --- PII defence -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", [
    "user_id", "username", "phone", "email", "name", "full_name", "address", "gps",
    "latitude", "longitude", "comment", "text", "description", "url", "filename", "evidence",
])
def test_disallowed_keys_are_rejected_anywhere_in_metadata(rules, key):
    """Every listed key is refused, nested two levels deep."""
    result = rejected(rules.check(row(metadata={"visit": {"details": {key: "x"}}})))
    assert result.code == "PII key"
    assert f"metadata.visit.details.{key}" in result.detail


@pytest.mark.parametrize("key", ["Phone", "E-Mail", "FULL NAME", "contactPhoneNumber",
                                 "homeAddress", "mother_name"])
def test_pii_keys_are_matched_case_and_punctuation_insensitively(rules, key):
    """Variants of the listed keys are refused too."""
    assert rejected(rules.check(row(metadata={"contact": {key: "x"}}))).code == "PII key"


def test_a_nested_pii_key_inside_a_list_is_found(rules):
    """Lists inside metadata are searched as well."""
    result = rejected(rules.check(row(metadata={"visits": [{"ok": 1}, {"Email": "x"}]})))
    assert result.code == "PII key" and "metadata.visits[1].Email" in result.detail


def test_a_pii_key_at_the_top_level_is_named_as_such(rules):
    """A top-level 'email' column is a PII key, not just an unknown field."""
    assert rejected(rules.check(row(email="a@b.org"))).code == "PII key"


def test_a_phone_number_in_the_category_field_is_rejected_as_pii(rules):
    """A real attacker puts the phone number in the category field."""
    result = rejected(rules.check(row(category="+250 788 123 456")))
    assert result.reason == "PII value: 'category' holds a phone number"
    assert "788" not in result.reason


@pytest.mark.parametrize(("field", "value", "kind"), [
    ("category", "jane.doe@example.org", "email address"),
    ("category", "0788123456", "phone number"),
    ("gender", "1 1990 8 0012345 0 12", "national id number"),
    ("event_type", "vaccination given to the child of our neighbour", "free text"),
    ("category", "x" * 40, "free text"),
    ("age", "0788-123-456", "phone number"),
    ("value", 250788123456, "phone or id number"),
])
def test_pii_looking_values_in_kept_fields_are_rejected(rules, field, value, kind):
    """Emails, phone numbers, national ids, free text and big numbers in kept fields."""
    result = rejected(rules.check(row(**{field: value})))
    assert result.code == "PII value" and kind in result.detail


@pytest.mark.parametrize(("value", "kind"), [
    ("call me on +250 788 123 456", "phone number"),
    ("jane@example.org", "email address"),
    ("123-45-6789", "national id number"),
    ("PC1234567", "national id number"),
    ("Mother said the child had a fever last week", "free text"),
])
def test_pii_looking_values_in_metadata_are_rejected(rules, value, kind):
    """Metadata values are scanned at any depth."""
    result = rejected(rules.check(row(metadata={"a": [{"b": value}]})))
    assert result.code == "PII value" and kind in result.detail


@pytest.mark.parametrize("value", ["2025-03-04", "2025-03-04 10:07:30", "12345.678",
                                   "tablet-7", "v2.3.1", "AG-001", 3.5, 12_345_678, True,
                                   "3fa85f6457174562b3fc2c963f66afa6"])
def test_ordinary_metadata_values_are_not_mistaken_for_pii(rules, value):
    """Dates, decimals, short codes, small numbers and hex digests pass."""
    assert isinstance(rules.check(row(metadata={"info": value})), Event)


def test_a_metadata_verdict_kept_for_one_row_is_never_given_to_a_different_object(rules):
    """Clean metadata objects are remembered by their items; a later object that differs in a
    value, a key, a type or by nesting is judged afresh."""
    clean = {"device": "tablet-7", "app_version": "2.3.1"}
    assert isinstance(rules.check(row(metadata=dict(clean))), Event)
    assert isinstance(rules.check(row(metadata=dict(clean))), Event)  # from the kept verdict
    for metadata, code in [
        ({"device": "+250 788 123 456", "app_version": "2.3.1"}, "PII value"),
        ({"device": "tablet-7", "app_version": "2.3.1", "email": "x"}, "PII key"),
        ({"device": "tablet-7", "app_version": 250788123456}, "PII value"),
        ({"device": ["tablet-7", "jane@example.org"], "app_version": "2.3.1"}, "PII value"),
        ({"device": {"owner": "jane@example.org"}, "app_version": "2.3.1"}, "PII value"),
    ]:
        assert rejected(rules.check(row(metadata=metadata))).code == code, metadata
    assert isinstance(rules.check(row(metadata={"app_version": "2.3.1", "device": "tablet-7"})),
                      Event)


def test_a_uuid_event_id_is_not_mistaken_for_a_phone_number(rules):
    """Event ids are hashed, never stored, so their digits are harmless."""
    assert isinstance(rules.check(row(event_id="550e8400-e29b-41d4-a716-446655440000")), Event)


def test_reasons_never_echo_an_unsafe_value(rules):
    """An unknown category that holds a long number is not repeated in the reason."""
    result = rejected(rules.check(row(category="ref 9876543")))
    assert "9876543" not in result.reason


def test_metadata_is_bounded_in_depth_and_size(rules):
    """Deep or huge metadata is refused rather than walked forever."""
    deep: Any = {}
    node = deep
    for _ in range(20):
        node["x"] = {}
        node = node["x"]
    assert rejected(rules.check(row(metadata=deep))).code == "invalid value"
    wide = {f"k{i}": i for i in range(500)}
    assert rejected(rules.check(row(metadata=wide))).code == "invalid value"


# --- quarantine copies -----------------------------------------------------------------------


def test_redacted_copies_withhold_subject_ids_coordinates_and_pii(rules):
    """The quarantine copy keeps the row's shape (field names, types, lengths), no values."""
    copy = rules.quarantine_copy(row(subject_id="person-42", category="+250 788 123 456",
                                     metadata={"name": "Alice", "note": {"x": "jane@example.org"},
                                               "device": "tablet-7"}))
    for secret in ("person-42", "788", "Alice", "jane@example.org", str(LAT), str(LNG),
                   "tablet-7", "vaccination", "name", "device"):
        assert secret not in copy
    parsed = json.loads(copy)
    assert set(parsed) == set(row(metadata={}))
    assert parsed["category"].startswith("str:16:") and len(parsed["metadata"]) == 3


def test_redacted_copies_hash_values_with_the_batch_key():
    """Equal values give equal hashes under one key and different ones under another."""
    def copy(key: bytes) -> dict:
        return json.loads(redacted_copy({"category": "polio"}, key=key,
                                        shown_keys=frozenset({"category"})))

    assert copy(b"k1") == copy(b"k1") != copy(b"k2")


def test_redacted_copies_are_ascii_even_for_lone_surrogates(rules):
    """JSON may carry lone surrogates; the copy must still be storable."""
    copy = rules.quarantine_copy({"category": "\ud800abc", "event_type": "vaccination"})
    copy.encode("ascii")


def test_pseudonyms_module_matches_the_demo():
    """data.demo re-exports the shared pseudonym function."""
    from data.demo import pseudonym as demo_pseudonym

    assert demo_pseudonym is pseudonym
    assert Pseudonymizer(SECRET).of("x") == pseudonym(SECRET, "x")


def test_timezone_objects_other_than_utc_work_for_now(catalog):
    """Rules take an aware 'now' in any zone."""
    east = timezone(timedelta(hours=3))
    late = Rules(catalog, tenant="kigali-east", product="health.vaccinations", secret=SECRET,
                 now=NOW.astimezone(east))
    assert isinstance(late.check(row(timestamp="2026-11-01T12:05:00Z")), Event)
