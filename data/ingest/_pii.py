"""PII detection and redaction for ingestion: what a personal key or value looks like.

Owns the disallowed-key list, the value detectors (email addresses, phone numbers, national-id
and passport patterns, long digit runs, coordinates, IBANs, two-word person names, free text) and
``redacted_copy``, the only form in which a rejected row reaches the quarantine. It never stores
anything and never echoes a value it has not judged safe: reasons show a value only when it is
a short token that no detector matches, and quarantine copies show no source value at all.

Smuggled forms are undone before the detectors look:

* keys are folded before they are compared: NFKC (fullwidth ``Ｅｍａｉｌ``), Cyrillic and Greek
  letters drawn like Latin ones (``nаme`` with a Cyrillic а), accents, case, punctuation and
  digits drawn like letters (``ph0ne``);
* values are NFKC-normalised with format and combining characters removed (zero-width spaces
  between the digits of a phone number), other scripts' digits read as digits and every dash
  as ``-``; then the detectors also read the value URL-decoded, base64- and hex-decoded, and
  with ``(at)``/``[at]``/`` at `` and ``(dot)`` spelt out.

Detectors look for whole tokens (no letter or digit directly before or after), so the hex of a
keyed pseudonym never reads as a phone number, while ``+250 788 123 456``, ``0788-123-456`` and
``1 1990 8 0012345 0 12`` do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from stdnum import iban

__all__ = [
    "DISALLOWED_KEYS",
    "FREE_TEXT_CHARS",
    "coordinate_like",
    "find_pii",
    "fold_key",
    "holds_coordinates",
    "is_pii_key",
    "normalised",
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
#: Cyrillic and Greek letters drawn like Latin ones (from Unicode's confusables list, the
#: letters a key could be spelt with). Applied before case folding, so both cases count.
_LOOKALIKES = str.maketrans(dict(zip(
    "АВЕЅІЈКМНОРСТХУԚԜ" "аеіјкмнорсухѕԁһԛԝӏвт" "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ" "αεικνορτυχη" "ıȷɡɑ",
    "ABESIJKMHOPCTXYQW" "aeijkmhopcyxsdhqwlbt" "ABEZHIKMNOPTYX" "aeikvoptuxn" "ijga")))
#: Digits drawn like letters, for a second reading of a key (``ph0ne``, ``emai1``).
_DIGIT_LOOKALIKES = str.maketrans("013457", "oleast")

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
# For reasons only: any run of 7+ digits anywhere is withheld.
_DIGIT_RUN = re.compile(r"\d{7,}")
# Two decimals with three or more places each, side by side: "-1.9441,30.0619", "30.06 -1.94".
_COORDINATE_PAIR = re.compile(
    r"(?<![\w.])([-+]?\d{1,3}\.\d{3,})\s*[,;/ ]\s*([-+]?\d{1,3}\.\d{3,})(?![\w.])")
_COORDINATE = re.compile(r"[-+]?\d{1,3}\.\d{4,}")
# The shape of an IBAN (GB82 WEST 1234 5698 7654 32); python-stdnum checks its checksum.
_IBAN = re.compile(r"(?<![^\W_])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![^\W_])")
_DEGREES = re.compile(r"\d{1,3}\s*°\s*\d{1,2}")  # 1°56'38.8"S
_NAME_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['’-](?=[^\W\d_]))+")
_SPELT_AT = re.compile(r"\s*[(\[{<]\s*(?:at|@)\s*[)\]}>]\s*|\s+at\s+", re.IGNORECASE)
_SPELT_DOT = re.compile(r"\s*[(\[{<]\s*(?:dot|\.)\s*[)\]}>]\s*|\s+dot\s+", re.IGNORECASE)
#: The base64 (and URL-safe base64) alphabet; hex is a subset. Shorter strings are codes.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_MIN_ENCODED_CHARS = 8
#: Longer strings are free text without a closer look (the rules refuse them either way), so
#: that a 64 KiB value costs no more than a short one.
_LONG_TEXT_CHARS = 1_024
#: Unicode categories removed before detection: format (zero-width space and joiner, soft
#: hyphen, bidi marks), control, combining marks, unassigned and private use.
_DROPPED = frozenset({"Cf", "Cc", "Mn", "Me", "Cn", "Co", "Cs"})
#: Letters that are drawn as nothing (Hangul fillers).
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


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
    norm = fold_key(key)
    return _names_pii(norm) or (not norm.isalpha() and _names_pii(
        norm.translate(_DIGIT_LOOKALIKES)))


def _names_pii(norm: str) -> bool:
    if norm in DISALLOWED_KEYS or (norm.endswith("name") and norm != "name" and len(norm) > 4):
        return True
    return any(fragment in norm for fragment in _KEY_FRAGMENTS)


def fold_key(key: str) -> str:
    """A key as compared with the disallowed list: ``Ｅ-ｍａｉｌ``, ``nаme`` (Cyrillic а) and
    ``Nämé`` become ``email``, ``name``, ``name``: lower-case ASCII letters and digits only."""
    if not key.isascii():
        text = unicodedata.normalize("NFKC", key).translate(_LOOKALIKES)
        key = "".join(ch for ch in unicodedata.normalize("NFKD", text)
                      if not unicodedata.combining(ch))
    return _NOT_ALNUM.sub("", key.lower())


def find_pii(value: str) -> str | None:
    """The kind of personal data a string looks like, or None.

    Kinds: "email address", "national id number", "phone number", "long number",
    "coordinates", "bank account number", "person name", "free text"; a kind found only in a
    decoded reading says so, e.g. "email address (base64-encoded)".
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
    if len(value) > _LONG_TEXT_CHARS:
        return "free text"  # whatever else it holds, and without reading it all
    text = value if value.isascii() and value.isprintable() else normalised(value)
    return _specific(text) or _in_disguise(text) or _textual(text)


def _specific(text: str) -> str | None:
    """The detectors that look for one kind of identifier in a normalised string."""
    if "@" in text and _EMAIL.search(text):
        return "email address"
    if "." in text and _has_coordinates(text) or "°" in text and _DEGREES.search(text):
        return "coordinates"
    if any(iban.is_valid(match[0]) for match in _IBAN.finditer(text)):
        return "bank account number"
    if sum(ch.isdigit() for ch in text) >= 9 and _NOT_A_NUMBER.fullmatch(text.strip()) is None:
        if _NATIONAL_ID.search(text):
            return "national id number"
        if _PHONE.search(text):
            return "phone number"
        if _LONG_NUMBER.search(text):
            return "long number"
    elif _NATIONAL_ID.search(text):  # passport numbers have fewer than nine digits
        return "national id number"
    return None


def _textual(text: str) -> str | None:
    if len(text) > FREE_TEXT_CHARS or len(text.split()) >= _FREE_TEXT_WORDS:
        return "free text"
    if " " in text and _looks_like_a_name(text):
        return "person name"
    return None


def _in_disguise(text: str) -> str | None:
    """What the string holds once decoded: URL-encoding, base64, hex or a spelt-out "at"."""
    if "%" in text:
        decoded = text
        for _ in range(3):  # %2540 is a URL-encoded %40
            decoded, previous = unquote(decoded, errors="replace"), decoded
            if decoded == previous:
                break
        if decoded != text:
            kind = _plainly(normalised(decoded))
            if kind:
                return f"{kind} (URL-encoded)"
    if _SPELT_AT.search(text):
        spelt = _SPELT_DOT.sub(".", _SPELT_AT.sub("@", text))
        if _EMAIL.search(spelt):
            return "email address (spelt out)"
    if len(text) >= _MIN_ENCODED_CHARS and _BASE64.fullmatch(text):
        for decode, name in ((_from_hex, "hex"), (_from_base64, "base64")):
            decoded = decode(text)
            if decoded is not None:
                kind = _plainly(decoded)
                if kind:
                    return f"{kind} ({name}-encoded)"
    return None


def _plainly(text: str) -> str | None:
    return _specific(text) or _textual(text)


def normalised(value: str) -> str:
    """``value`` as the detectors read it: NFKC (fullwidth ＠ and digits become ASCII), format,
    control and combining characters removed (a zero-width space splits no number), other
    scripts' digits as ASCII digits, every dash as ``-`` and every space as a space."""
    out = []
    for ch in unicodedata.normalize("NFKC", value):
        if ch.isascii() and ch.isprintable():
            out.append(ch)
            continue
        category = unicodedata.category(ch)
        if category in _DROPPED or ch in _BLANK_LETTERS:
            continue
        if category == "Nd":
            out.append(str(unicodedata.decimal(ch)))
        elif category == "Pd":
            out.append("-")
        elif category[0] == "Z" or ch.isspace():
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _from_base64(text: str) -> str | None:
    raw = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        data = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return _printable(data)


def _from_hex(text: str) -> str | None:
    if len(text) % 2 or _HEX.fullmatch(text) is None:
        return None
    return _printable(bytes.fromhex(text))


def _printable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = normalised(text)
    return text if text.isprintable() and text.strip() else None


def _has_coordinates(text: str) -> bool:
    """Two decimal numbers side by side that can be a latitude and a longitude."""
    for match in _COORDINATE_PAIR.finditer(text):
        if _a_position(float(match[1]), float(match[2])):
            return True
    return False


def _a_position(a: float, b: float) -> bool:
    """(a, b) or (b, a) is a latitude and longitude on land: both within one degree of (0, 0)
    is the Gulf of Guinea, and more likely two ratios."""
    if abs(a) <= 1 and abs(b) <= 1:
        return False
    return (abs(a) <= 90 and abs(b) <= 180) or (abs(b) <= 90 and abs(a) <= 180)


def _looks_like_a_name(text: str) -> bool:
    """Two capitalised words of letters (``Alice Uwimana``, ``UWIMANA Alice``)."""
    words = text.split()
    return (len(words) == 2
            and all(word[0].isupper() and _NAME_WORD.fullmatch(word) for word in words)
            and any(word[1:].islower() for word in words))


def coordinate_like(value: Any) -> bool:
    """A number (or a number in a string) precise enough to be one half of a GPS position:
    at most 180 in size, with four or more decimals (about 10 m)."""
    if type(value) is float:
        if not (math.isfinite(value) and abs(value) <= 180):
            return False
        text = repr(value)
        return "e" not in text and len(text) - text.index(".") > 4
    return type(value) is str and _COORDINATE.fullmatch(value.strip()) is not None


def holds_coordinates(values: Iterable[Any]) -> bool:
    """Two of ``values`` (the items of one object or list) can be a latitude and longitude."""
    found = [float(value) for value in values if coordinate_like(value)]
    return any(_a_position(a, b) for i, a in enumerate(found) for b in found[i + 1:])


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

_MAX_DEPTH = 6
_MAX_ITEMS = 200
_MAX_CHARS = 4_000
#: Hashes are written in 16 consonants instead of hex digits, so that no detector (nor a
#: reader) can take one for a number; 12 of them carry 48 bits.
_HASH_LETTERS = str.maketrans("0123456789abcdef", "bcdfghjkmnpqrstv")


def redacted_copy(row: Any, *, key: bytes, shown_keys: frozenset[str] = frozenset()) -> str:
    """JSON of ``row``'s shape with every source value replaced by its type, length and a hash
    keyed by ``key``: ``{"category": "str:16:hkvmbq…", "metadata": {"key:5:dfsr…": …}}``, each
    one token, so that no detector reads even these as text.

    Only the top-level keys in ``shown_keys`` (the event fields, which come from our own list)
    are written as they are; null and booleans stay, as they carry no identity. Whatever the
    row held, the copy holds nothing a detector could read, in any encoding: an operator finds
    the original by its position in the source and can match a value against the hash with
    the key. ASCII only.
    """
    budget = [_MAX_ITEMS]
    if isinstance(row, dict):
        copy: Any = {}
        for name, value in row.items():
            shown = name if type(name) is str and name in shown_keys else _hashed_key(name, key)
            copy[shown] = _copy(value, 1, budget, key)
    else:
        copy = _copy(row, 0, budget, key)
    text = json.dumps(copy, ensure_ascii=True)
    if len(text) > _MAX_CHARS:
        text = json.dumps({"truncated": f"{len(text)} characters"}, ensure_ascii=True)
    return text


def _hash(value: Any, key: bytes) -> str:
    if isinstance(value, str):
        data = b"s" + value.encode("utf-8", "surrogatepass")
    else:
        data = type(value).__name__.encode() + b":" + repr(value).encode("ascii", "replace")
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:12].translate(_HASH_LETTERS)


def _hashed_key(name: Any, key: bytes) -> str:
    size = len(name) if isinstance(name, str) else len(repr(name))
    return f"key:{size}:{_hash(name, key)}"


def _copy(value: Any, depth: int, budget: list[int], key: bytes) -> Any:
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        return "<...>"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return f"str:{len(value)}:{_hash(value, key)}"
    if isinstance(value, (int, float)):
        return f"{type(value).__name__}:{len(repr(value))}:{_hash(value, key)}"
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            out[_hashed_key(name, key)] = _copy(item, depth + 1, budget, key)
        return out
    if isinstance(value, (list, tuple)):
        return [_copy(item, depth + 1, budget, key) for item in value]
    return f"<{type(value).__name__}>"
