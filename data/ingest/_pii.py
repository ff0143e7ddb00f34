"""PII detection and redaction for ingestion: what a personal key or value looks like.

Owns the disallowed-key list (compared case- and punctuation-insensitively, at any depth), the
value detectors (email addresses, phone numbers, national-id and passport patterns, long digit
runs, free text) and ``redacted_copy``, the only form in which a rejected row reaches the
quarantine. It never stores anything and never echoes a value it has not judged safe: reasons
and quarantine copies show a value only when it is a short token that no detector matches.

Detectors look for whole tokens (no letter or digit directly before or after), so the hex of a
keyed pseudonym never reads as a phone number, while ``+250 788 123 456``, ``0788-123-456`` and
``1 1990 8 0012345 0 12`` do.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "DISALLOWED_KEYS",
    "FREE_TEXT_CHARS",
    "find_pii",
    "is_pii_key",
    "number_pii",
    "redacted_copy",
    "safe_token",
    "show",
]

#: A category is at most this long (the ``category`` column); a longer string is free text.
FREE_TEXT_CHARS = 32
#: Three or more words is a sentence, not a code.
_FREE_TEXT_WORDS = 3

#: Keys that name personal data, normalised (lower case, letters and digits only). A key that
#: equals one of these, or contains one of ``_KEY_FRAGMENTS``, or ends in "name", is refused.
DISALLOWED_KEYS = frozenset({
    "userid", "username", "user", "login", "phone", "phonenumber", "telephone", "tel", "mobile",
    "msisdn", "email", "emailaddress", "mail", "name", "firstname", "lastname", "surname",
    "fullname", "middlename", "givenname", "familyname", "nickname", "address", "street",
    "streetaddress", "homeaddress", "gps", "lat", "lng", "lon", "long", "latitude", "longitude",
    "coordinates", "coords", "geolocation", "geo", "location", "comment", "comments", "note",
    "notes", "remark", "remarks", "text", "freetext", "description", "message", "url", "uri",
    "link", "website", "filename", "file", "filepath", "attachment", "evidence", "photo",
    "picture", "image", "signature", "ip", "ipaddress", "deviceid", "imei", "macaddress",
    "nationalid", "nid", "idnumber", "idno", "passport", "passportnumber", "ssn", "taxid",
    "birthdate", "dateofbirth", "dob", "birthday", "contact", "password",
})
_KEY_FRAGMENTS = ("email", "phone", "mobile", "address", "latitude", "longitude", "gps",
                  "comment", "description", "passport", "nationalid", "username", "userid",
                  "filename", "evidence", "birthdate", "dateofbirth")

_NOT_ALNUM = re.compile(r"[^0-9a-z]")

_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+\.[^\W\d_]{2,}")
# 16 digits starting with 1 or 2, optionally grouped like a Rwandan national id card
# (1 1990 8 0012345 0 12); a US-style 123-45-6789; a passport number (one or two capitals then
# 6-9 digits).
_NATIONAL_ID = re.compile(
    r"(?<![^\W_])(?:[12][ -]?\d{4}[ -]?\d[ -]?\d{7}[ -]?\d[ -]?\d{2}|\d{3}-\d{2}-\d{4}|"
    r"[A-Z]{1,2}\d{6,9})(?![^\W_])")
# 9-15 digits, optionally led by + and grouped by single spaces, dots, dashes or parentheses.
_PHONE = re.compile(r"(?<![^\W_])\+?\(?\d(?:[ .()-]{0,2}\d){8,14}(?![^\W_])")
# Any other run of 16+ digits: a card, account or id number.
_LONG_NUMBER = re.compile(r"(?<![^\W_])\d(?:[ -]?\d){15,}(?![^\W_])")
# Dates, times and plain decimals are not phone numbers even when their digits add up to nine.
_NOT_A_NUMBER = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|[+-]?\d+\.\d+")
# For quarantine copies only: any run of 7+ digits anywhere is withheld.
_DIGIT_RUN = re.compile(r"\d{7,}")


# Verdicts on short strings are cached: metadata keys and values repeat across millions of rows
# (device models, app versions), and ingestion must check each in well under a microsecond.
_CACHE_LIMIT = 65_536
_CACHED_CHARS = 64
_key_verdicts: dict[str, bool] = {}
_value_verdicts: dict[str, str | None] = {}


def is_pii_key(key: str) -> bool:
    """True when a field name names personal data (``Full-Name``, ``contact.phoneNumber``…)."""
    verdict = _key_verdicts.get(key)
    if verdict is None:
        verdict = _is_pii_key(key)
        if len(key) <= _CACHED_CHARS:
            if len(_key_verdicts) >= _CACHE_LIMIT:
                _key_verdicts.clear()
            _key_verdicts[key] = verdict
    return verdict


def _is_pii_key(key: str) -> bool:
    norm = _NOT_ALNUM.sub("", key.lower())
    if norm in DISALLOWED_KEYS or (norm.endswith("name") and norm != "name" and len(norm) > 4):
        return True
    return any(fragment in norm for fragment in _KEY_FRAGMENTS)


def find_pii(value: str) -> str | None:
    """The kind of personal data a string looks like, or None.

    Kinds: "email address", "national id number", "phone number", "long number", "free text".
    """
    try:
        return _value_verdicts[value]
    except KeyError:
        pass
    kind = _find_pii(value)
    if len(value) <= _CACHED_CHARS:
        if len(_value_verdicts) >= _CACHE_LIMIT:
            _value_verdicts.clear()
        _value_verdicts[value] = kind
    return kind


def _find_pii(value: str) -> str | None:
    if "@" in value and _EMAIL.search(value):
        return "email address"
    if sum(ch.isdigit() for ch in value) >= 9 and _NOT_A_NUMBER.fullmatch(value.strip()) is None:
        if _NATIONAL_ID.search(value):
            return "national id number"
        if _PHONE.search(value):
            return "phone number"
        if _LONG_NUMBER.search(value):
            return "long number"
    elif _NATIONAL_ID.search(value):  # passport numbers have fewer than nine digits
        return "national id number"
    if len(value) > FREE_TEXT_CHARS or len(value.split()) >= _FREE_TEXT_WORDS:
        return "free text"
    return None


def number_pii(value: int | float) -> str | None:
    """A number with nine or more integer digits is a phone or id number, not a measurement."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None
        value = int(value)
    return "phone or id number" if abs(value) >= 100_000_000 else None


def safe_token(value: str) -> bool:
    """A string that may be shown in a reason or a quarantine copy: short, printable, no PII."""
    return (len(value) <= FREE_TEXT_CHARS and value.isprintable() and _encodable(value)
            and not _DIGIT_RUN.search(value) and find_pii(value) is None)


def show(value: Any) -> str:
    """``repr`` of a value for a reason text, or a placeholder when it is not safe to show."""
    if isinstance(value, str):
        return repr(value) if safe_token(value) else "<withheld>"
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value) if _safe_number(value) else "<withheld number>"
    return f"<{type(value).__name__}>"


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, which JSON can carry
        return False
    return True


def _safe_number(value: int | float) -> bool:
    """At most six digits: too few to spell a phone or id number (0.250788123456 has 12)."""
    if isinstance(value, float) and not math.isfinite(value):
        return True  # nan/inf carry no identity; shown so the reason makes sense
    return sum(ch.isdigit() for ch in repr(value)) <= 6


# --- quarantine copies -----------------------------------------------------------------------

#: Top-level fields whose values are never copied, whatever they look like.
_WITHHELD_FIELDS = {"subject_id": "<subject id withheld>", "lat": "<coordinate withheld>",
                    "lng": "<coordinate withheld>"}
_MAX_DEPTH = 6
_MAX_ITEMS = 200
_MAX_CHARS = 4_000


def redacted_copy(row: Any) -> str:
    """JSON of ``row`` with every value that could identify someone replaced by a placeholder.

    Keeps the row's shape (keys, types, safe codes such as event types and categories, small
    numbers) so an operator can see what was wrong, and finds the original by its position in
    the source. Raw subject ids and coordinates are always withheld. ASCII only.
    """
    budget = [_MAX_ITEMS]
    if isinstance(row, dict):
        copy: Any = {}
        for key, value in row.items():
            shown_key = _copy_key(key, len(copy))
            if isinstance(key, str) and key in _WITHHELD_FIELDS and value not in (None, ""):
                copy[shown_key] = _WITHHELD_FIELDS[key]
            elif isinstance(key, str) and is_pii_key(key) and key not in _WITHHELD_FIELDS:
                copy[shown_key] = "<withheld>"
            else:
                copy[shown_key] = _copy(value, 1, budget)
    else:
        copy = _copy(row, 0, budget)
    text = json.dumps(copy, ensure_ascii=True)
    if len(text) > _MAX_CHARS:
        text = json.dumps({"truncated": f"{len(text)} characters"}, ensure_ascii=True)
    return text


def _copy_key(key: Any, index: int) -> str:
    if isinstance(key, str) and safe_token(key):
        return key
    return f"<key {index} withheld>"


def _copy(value: Any, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        return "<...>"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return repr(value)
        return value if _safe_number(value) else "<number withheld>"
    if isinstance(value, str):
        if safe_token(value):
            return value
        kind = find_pii(value) if _encodable(value) else None
        return f"<{kind} withheld>" if kind else f"<{len(value)} characters withheld>"
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            shown = _copy_key(key, len(out))
            if isinstance(key, str) and is_pii_key(key):
                out[shown] = "<withheld>"  # a name under "name" is short and looks harmless
            else:
                out[shown] = _copy(item, depth + 1, budget)
        return out
    if isinstance(value, (list, tuple)):
        return [_copy(item, depth + 1, budget) for item in value]
    return f"<{type(value).__name__}>"
