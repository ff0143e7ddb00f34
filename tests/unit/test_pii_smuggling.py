"""PII smuggled past ingestion (issue 15, item 4): every disguised form is refused, with a
reason, on the file and collector parsers, and its quarantine copy holds none of it."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from data.ingest import Event, Rejection, Rules, find_pii
from data.ingest._sources import FileSource, loads_json

SECRET = "unit-test-secret-0123456789"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BASE = ('"event_id": "ev-1", "subject_id": "person-1", "event_type": "vaccination", '
        '"timestamp": "2025-03-04T10:07:30Z", "age": 4, "gender": "female", '
        '"lat": -1.9536, "lng": 30.0606')
EMAIL = "alice.uwase@example.org"
PHONE = "0788123456"
PLACE = ("-1.944123", "30.061945")
REFUSALS = {"PII key", "PII value", "duplicate key"}


@dataclass(frozen=True)
class Case:
    name: str
    line: str  # one JSON object, as a source sends it
    needles: tuple[str, ...]  # what must never reach the quarantine, in any encoding

    def __str__(self) -> str:
        return self.name


def meta(metadata: str, category: str = '"polio"') -> str:
    return f'{{{BASE}, "category": {category}, "metadata": {metadata}}}'


def field(name: str, value: str) -> str:
    return f'{{{BASE}, "category": "polio", {json.dumps(name)}: {json.dumps(value)}}}'


def text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


CORPUS = [
    # keys that name personal data in disguise
    Case("fullwidth key", meta('{"Ｅｍａｉｌ": "uwase"}'), ("uwase",)),
    Case("fullwidth top-level key", field("Ｐｈｏｎｅ", "uwase"), ("uwase",)),
    Case("cyrillic lookalike key", meta('{"nаmе": "uwase"}'), ("uwase",)),
    Case("greek lookalike key", meta('{"ΡΗΟΝΕ": "uwase"}'), ("uwase",)),
    Case("accented key", meta('{"Nämé": "uwase"}'), ("uwase",)),
    Case("digits drawn as letters", meta('{"ph0ne": "uwase"}'), ("uwase",)),
    Case("zero-width inside a key", meta('{"e\u200bmail": "uwase"}'), ("uwase",)),
    # a key named twice: the first value is never checked by a plain parser
    Case("duplicate top-level key",
         f'{{{BASE}, "category": {text(EMAIL)}, "category": "polio"}}', (EMAIL, "alice")),
    Case("duplicate key, spaced", f'{{{BASE}, "category" : {text(EMAIL)}, "category":"polio"}}',
         (EMAIL, "alice")),
    Case("duplicate key, escaped spelling",
         f'{{{BASE}, "category": {text(EMAIL)}, "c\\u0061tegory": "polio"}}', (EMAIL, "alice")),
    Case("duplicate metadata key", meta(f'{{"device": {text(PHONE)}, "device": "tablet-7"}}'),
         (PHONE,)),
    Case("duplicate nested key", meta(f'{{"v": [{{"x": {text(EMAIL)}, "x": 1}}]}}'),
         (EMAIL, "alice")),
    # names
    Case("two-word name in metadata", meta('{"who": "Alice Uwase"}'), ("Alice Uwase", "Uwase")),
    Case("two-word name in a kept field", meta("{}", text("Alice Uwase")),
         ("Alice Uwase", "Uwase")),
    Case("surname first, in capitals", meta('{"who": "UWASE Alice"}'), ("UWASE", "Alice")),
    # coordinates under keys other than lat/lng
    Case("coordinates in a string", meta(f'{{"where": "{PLACE[0]},{PLACE[1]}"}}'), PLACE),
    Case("coordinates in a list", meta(f'{{"pos": [{PLACE[0]}, {PLACE[1]}]}}'), PLACE),
    Case("coordinates under x and y", meta(f'{{"y": {PLACE[0]}, "x": {PLACE[1]}}}'), PLACE),
    Case("coordinates as numeric strings",
         meta(f'{{"loc": {{"a": "{PLACE[0]}", "b": "{PLACE[1]}"}}}}'), PLACE),
    Case("coordinates in degrees", meta('{"at": "1°56\'38.8\\"S 30°03\'42.8\\"E"}'),
         ("38.8", "42.8")),
    # e-mail addresses in disguise
    Case("base64 email", meta(f'{{"ref": "{b64(EMAIL)}"}}'), (EMAIL, "alice")),
    Case("url-safe base64 email, unpadded",
         meta(f'{{"ref": "{base64.urlsafe_b64encode(EMAIL.encode()).decode().rstrip("=")}"}}'),
         (EMAIL, "alice")),
    Case("url-encoded email", meta(f'{{"ref": "{quote(EMAIL)}"}}'), (EMAIL, "alice")),
    Case("url-encoded email in a kept field", meta("{}", text(quote(EMAIL))), (EMAIL, "alice")),
    Case("twice url-encoded email", meta(f'{{"ref": "{quote(quote(EMAIL))}"}}'),
         (EMAIL, "alice")),
    Case("fullwidth at sign", meta(f'{{"ref": {text(EMAIL.replace("@", "＠"))}}}'),
         (EMAIL, "alice")),
    Case("small at sign", meta(f'{{"ref": {text(EMAIL.replace("@", "﹫"))}}}'),
         (EMAIL, "alice")),
    Case("(at) email", meta('{"ref": "alice.uwase(at)example.org"}'), (EMAIL, "alice")),
    Case("[at] [dot] email", meta('{"ref": "alice.uwase [at] example [dot] org"}'),
         (EMAIL, "alice")),
    Case("hex email", meta(f'{{"ref": "{EMAIL.encode().hex()}"}}'), (EMAIL, "alice")),
    # phone numbers split by invisible characters or written in other digits
    Case("zero-width spaces in a phone number", meta('{"c": "0788\u200b123\u200b456"}'),
         (PHONE, "0788")),
    Case("zero-width phone in a kept field", meta("{}", text("0788\u200b123\u200b456")),
         (PHONE, "0788")),
    Case("soft hyphens in a phone number", meta('{"c": "0788\u00ad123\u00ad456"}'),
         (PHONE, "0788")),
    Case("word joiners in a phone number", meta('{"c": "+250\u2060788\u2060123\u2060456"}'),
         (PHONE, "0788", "788")),
    Case("fullwidth digits", meta('{"c": "０７８８１２３４５６"}'), (PHONE, "0788")),
    Case("arabic-indic digits", meta('{"c": "٠٧٨٨١٢٣٤٥٦"}'), (PHONE, "0788")),
    Case("bank account number", meta('{"acct": "GB82WEST12345698765432"}'),
         ("GB82WEST12345698765432", "12345698765432")),
    Case("base64 phone number", meta(f'{{"c": "{b64("+250" + PHONE[1:])}"}}'),
         (PHONE[1:], "788")),
]

#: Rows that must still be accepted: ordinary metadata that a careless detector would refuse.
CLEAN = [
    meta('{"device": "tablet-7", "app_version": "2.3.1"}'),
    meta('{"battery": 0.8734, "signal": -0.5123}'),
    meta('{"temp_c": 36.6, "weight_kg": 12.35}'),
    meta('{"build": "3fa85f6457174562b3fc2c963f66afa6", "token": "dGFibGV0LTc"}'),
    meta('{"version": "v2.3.1", "released": "2025-03-04", "ratio": "0.1234"}'),
    meta('{"screen": [1080, 2400], "retries": 3, "duration_ms": 1520.5}'),
    meta('{"language": "Kinyarwanda", "label": "Dark mode", "share": "85%"}'),
    meta('{"scores": [0.1234, 0.5678], "at": "10:07", "codes": ["AG-001", "KGL-GAS"]}'),
    meta('{"nested": {"device": "tablet-7"}, "nested2": {"device": "tablet-7"}}'),
    meta('{"app": "ODK", "mode": "offline", "application": "collect"}'),
]


@pytest.fixture(scope="module")
def rules(catalog) -> Rules:
    return Rules(catalog, tenant="kigali-east", product="health.vaccinations", secret=SECRET,
                 now=NOW)


def from_file(tmp_path: Path, line: str) -> Any:
    path = tmp_path / "rows.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    [(_, row)] = list(FileSource(path).rows())
    return row


def from_collector(line: str) -> Any:
    body = loads_json(f'{{"product": "health.vaccinations", "events": [{line}]}}'.encode())
    [row] = body["events"]
    return row


PARSERS = {"file": from_file, "collector": lambda tmp_path, line: from_collector(line)}


def encodings(needle: str) -> set[str]:
    """A value as it could appear in a reason or a JSON quarantine copy."""
    forms = {needle, needle.lower(), quote(needle), needle.encode().hex(), b64(needle),
             base64.b64encode(needle.encode()).decode().rstrip("="),
             json.dumps(needle)[1:-1], json.dumps(needle, ensure_ascii=False)[1:-1]}
    return {form for form in forms if form}


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [key, *strings_in(item)]]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize("case", CORPUS, ids=str)
def test_smuggled_pii_is_refused_with_a_reason(rules, tmp_path, parser, case):
    """Each disguise is refused as PII (or as a repeated key), never accepted stripped."""
    result = rules.check(PARSERS[parser](tmp_path, case.line))
    assert isinstance(result, Rejection), f"{case.name}: accepted"
    assert result.code in REFUSALS and result.detail, result.reason


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize("case", CORPUS, ids=str)
def test_the_quarantine_keeps_nothing_of_the_smuggled_value(rules, tmp_path, parser, case):
    """Neither the reason nor the copy holds the value, in any of its encodings, and no
    detector finds anything in the copy."""
    row = PARSERS[parser](tmp_path, case.line)
    result = rules.check(row)
    assert isinstance(result, Rejection)
    copy = rules.quarantine_copy(row)
    decoded = json.loads(copy)
    stored = f"{result.reason}\n{copy}\n{json.dumps(decoded, ensure_ascii=False)}"
    for needle in case.needles:
        for form in encodings(needle):
            assert form not in stored, f"{case.name}: {form!r} in {stored}"
    assert all(find_pii(s) is None for s in strings_in(decoded)), copy


@pytest.mark.parametrize("line", CLEAN)
def test_ordinary_rows_are_still_accepted(rules, tmp_path, line):
    """Device codes, versions, ratios, measurements, digests and short labels pass."""
    for parser in PARSERS.values():
        assert isinstance(rules.check(parser(tmp_path, line)), Event), line


def test_every_catalog_domain_value_is_accepted(catalog):
    """No event type or category the catalog declares is mistaken for personal data."""
    checked = 0
    for product in catalog.products:
        if product.kind != "metric_set":
            continue
        rules = Rules(catalog, tenant="kigali-east", product=product.id, secret=SECRET,
                      now=NOW)
        for event_type in sorted(rules.event_types):
            for category in sorted(rules.categories_by_type[event_type]) or [None]:
                row = {"event_id": f"ev-{checked}", "subject_id": "person-1",
                       "event_type": event_type, "timestamp": "2025-03-04T10:07:30Z",
                       "district": sorted(rules.tenant_districts)[0],
                       "metadata": {"device": "tablet-7"}}
                if category is not None:
                    row["category"] = category
                if product.randomised_epsilon is not None:  # a randomised report says so
                    row["randomised_epsilon"] = product.randomised_epsilon
                assert isinstance(rules.check(row), Event), (product.id, row)
                checked += 1
    assert checked > 10


def test_a_collector_envelope_that_names_a_key_twice_is_not_json():
    """A body whose envelope repeats "events" is refused whole: which list would count?"""
    with pytest.raises(ValueError, match="more than once"):
        loads_json(b'{"events": [{"x": 1}], "events": []}')


def test_a_duplicate_key_reason_names_the_key_but_not_its_values(rules, tmp_path):
    """The operator learns which key was repeated, not what it held."""
    row = from_file(tmp_path, f'{{{BASE}, "category": {text(EMAIL)}, "category": "polio"}}')
    result = rules.check(row)
    assert result == Rejection("duplicate key",
                               "the row names the key 'category' more than once")


def test_quarantine_copies_keep_types_lengths_and_hashes_only(rules):
    """The copy of a refused row shows field names, and for each value its type and length."""
    copy = json.loads(rules.quarantine_copy(
        {"category": "Alice Uwase", "age": 4, "metadata": {"who": True, "n": None}}))
    assert copy["category"].startswith("str:11:") and copy["age"].startswith("int:1:")
    assert sorted(copy["metadata"].values(), key=str) == [None, True]
    assert all(key.startswith("key:") for key in copy["metadata"])


@pytest.mark.parametrize("value", ["%ff%fe", "%", "%zz", "=" * 9, "A" * 5_000, "\u200b" * 3_000,
                                   "\ud800" * 10, "Zm9v" * 400, "%2" * 700, "١" * 40])
def test_odd_values_are_judged_without_crashing(rules, value):
    """Broken escapes, huge or invisible values and lone surrogates get a verdict, not an
    exception; their copy is still plain ASCII."""
    row = json.loads(meta("{}"))
    row["metadata"] = {"v": value}
    assert isinstance(rules.check(row), (Event, Rejection))
    rules.quarantine_copy(row).encode("ascii")
