"""Row rules for one (tenant, product): validation, PII defence and de-identification.

Owns turning one raw input row into either a de-identified event ready to store or a
``Rejection`` with a reason. Pure and store-free: consent, duplicates and contribution bounds
need the store and live in ``_admission`` (decisions) and ``_sql`` (the reads).

What a row may hold (anything else is refused, so personal data cannot ride in on a new key):

    event_id     required  the source's id; stored only as a keyed hash (idempotency key)
    subject_id   required  the source's subject id; stored only as a keyed pseudonym
    event_type   required  one of the product's event types
    timestamp    required  ISO 8601 *with* a time zone; stored in UTC, floored to 15 minutes
    category     required unless the event type's category domain is "none"; from that domain
                 (the type's own in ``event_categories``, else the product's)
    age          optional  whole years 0-130, stored as a bucket (missing: "unknown")
    gender       optional  from the gender domain (missing: "unknown")
    value        optional  a finite number with |value| <= 1,000,000, stored to 2 decimals
    lat, lng     | exactly one location: coordinates (stored as the H3 cell and its district,
    postal_code  | never as coordinates), a postal code (stored as its district) or a
    district     | district code; it must lie in the tenant's states
    metadata     optional  an object; checked for PII keys and values at any depth, then dropped
    randomised_epsilon     required by a product randomised at collection, refused by others:
                 the per-report ε the source randomised ``category`` at, which must be the
                 product's declared ε (``_randomised``); not stored

A row that carries personal data anywhere is refused whole (and quarantined with the reason),
never stored with the personal part stripped: the source must learn that it sends it. So is a
row whose JSON names a key twice (``DuplicateKeys``), whose earlier value nothing has checked.

It must never let a value into the stored row that did not come from a whitelist, a keyed hash
or a generalisation (bucket, floor, cell), and never put an unsafe value into a reason text.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import h3
from h3.api import basic_int as h3_int

from data.catalog import Catalog, ProductSpec
from data.errors import ConfigError, InvalidInput
from data.geo import geography
from data.ingest._pii import (
    coordinate_like,
    find_pii,
    holds_coordinates,
    is_pii_key,
    number_pii,
    redacted_copy,
    safe_token,
    show,
)
from data.ingest._sources import DuplicateKeys
from data.months import month_start
from data.pseudonym import EventKeys, Pseudonymizer

__all__ = [
    "AGE_BUCKETS",
    "DISTRICT_ONLY_CELL",
    "EVENT_COLUMNS",
    "Event",
    "FIELDS",
    "Rejection",
    "Rules",
    "age_bucket",
    "floor_to_quarter_hour",
]

REQUIRED = ("event_id", "subject_id", "event_type", "timestamp")
OPTIONAL = ("category", "age", "gender", "value", "lat", "lng", "postal_code", "district",
            "metadata", "randomised_epsilon")
FIELDS = frozenset(REQUIRED + OPTIONAL)

#: (upper bound in whole years, bucket); "60+" means 61 and over, as in the demo data.
AGE_BUCKETS = ((5, "0-5"), (12, "6-12"), (18, "13-18"), (35, "19-35"), (60, "36-60"))
_MAX_AGE = 130
_MAX_ABS_VALUE = 1_000_000.0
_MAX_ID_CHARS = 128
_QUARTER = 900  # seconds
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
#: Clock skew tolerated between a collector and this server.
_FUTURE_SLACK = timedelta(minutes=10)
_METADATA_DEPTH = 6
_METADATA_ITEMS = 100
_CLEAN_METADATA_LIMIT = 4_096
#: ``h3_cell`` of an event placed by postal code or district only: the cube then holds it at
#: district level (the map counts it there) instead of inventing a cell.
DISTRICT_ONLY_CELL = "-"

#: Column order of an event row as the pipeline inserts it.
EVENT_COLUMNS = ("event_id", "tenant_id", "product_id", "event_type", "pseudonym", "ts", "day",
                 "month", "h3_cell", "district", "age_bucket", "gender", "category", "value")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a row was refused: a short ``code`` (grouped in reports) and a specific detail."""

    code: str
    detail: str

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


class _Reject(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(code)
        self.rejection = Rejection(code, detail)


class Event(NamedTuple):
    """A valid, de-identified event. ``row`` is what is stored (``EVENT_COLUMNS`` order);
    ``at`` is the exact UTC time (epoch seconds), used for the consent check only."""

    row: tuple
    at: float

    @property
    def key(self) -> str:
        return self.row[0]

    @property
    def event_type(self) -> str:
        return self.row[3]

    @property
    def pseudonym(self) -> str:
        return self.row[4]

    @property
    def ts(self) -> str:
        return self.row[5]

    @property
    def day(self) -> str:
        return self.row[6]

    @property
    def month(self) -> str:
        return self.row[7]

    @property
    def district(self) -> str:
        return self.row[9]


_MISSING = (None, "")


def age_bucket(age: int | None) -> str:
    """Whole years → the public age bucket (0-5, 6-12, 13-18, 19-35, 36-60, 60+, unknown)."""
    if age is None:
        return "unknown"
    for upper, bucket in AGE_BUCKETS:
        if age <= upper:
            return bucket
    return "60+"


_BUCKET_OF_AGE = tuple(age_bucket(age) for age in range(_MAX_AGE + 1))
_CLOCK = tuple(f"{q // 4:02d}:{q % 4 * 15:02d}:00.000000" for q in range(96))


def floor_to_quarter_hour(moment: datetime) -> datetime:
    """An aware time → naive UTC floored to 15 minutes (10:07:30 → 10:00, 10:15:00 → 10:15)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput("a time without a time zone cannot be normalised to UTC")
    epoch = moment.timestamp()
    return datetime.fromtimestamp(epoch - epoch % _QUARTER, UTC).replace(tzinfo=None)


def _load_postal_register(catalog: Catalog) -> dict[str, str]:
    """postal_codes.toml: three-digit prefix → district. Missing file: no postal codes."""
    path = Path(catalog.directory) / "postal_codes.toml"
    if not path.is_file():
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    table = doc.get("prefix")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: key 'prefix': must be a table of prefix = district")
    known = {d.code for d in catalog.districts}
    register = {}
    for prefix, district in table.items():
        if not (len(prefix) == 3 and prefix.isdigit()):
            raise ConfigError(f"{path}: key 'prefix.{prefix}': must be three digits")
        if district not in known:
            raise ConfigError(f"{path}: key 'prefix.{prefix}': unknown district {district!r}")
        register[prefix] = district
    return register


_Reference = tuple[dict[str, str], dict[str, str], dict[int, tuple[str, str]]]
_REFERENCE_CACHE: dict[tuple[str, str], _Reference] = {}


def _reference(catalog: Catalog) -> _Reference:
    """H3 cell → district, postal prefix → district, and H3 cell as an integer → (the cell
    string, district), built once per catalog version (an API request builds its Rules afresh
    and must not recompute the geography). The integer form spares the hot path formatting
    every row's cell as hex (a third of the lookup's time)."""
    key = (str(catalog.directory), catalog.version)
    cached = _REFERENCE_CACHE.get(key)
    if cached is None:
        cells = geography(catalog).cells
        cached = _REFERENCE_CACHE[key] = (
            cells, _load_postal_register(catalog),
            {h3.str_to_int(cell): (cell, district) for cell, district in cells.items()})
    return cached


class Rules:
    """Validation and de-identification for one tenant and product, prepared once per batch.

    ``check(row)`` returns an ``Event`` or a ``Rejection`` and never raises for bad input.
    """

    def __init__(self, catalog: Catalog, *, tenant: str, product: str, secret: str,
                 now: datetime | None = None, closed_before: date | None = None):
        event_products = [p.id for p in catalog.products if p.kind == "metric_set"]
        try:
            spec = catalog.product(product)
        except ConfigError:
            raise InvalidInput(f"unknown product {product!r}; event products: "
                               f"{', '.join(event_products)}") from None
        if spec.kind != "metric_set":
            raise InvalidInput(
                f"{product!r} is a {spec.kind.replace('_', ' ')}, not an event product; events "
                f"can be ingested into: {', '.join(event_products)}")
        try:
            tenant_spec = catalog.tenant(tenant)
        except ConfigError:
            raise InvalidInput(f"unknown tenant {tenant!r}; known: "
                               f"{', '.join(t.id for t in catalog.tenants)}") from None
        self.tenant, self.product = tenant, spec.id
        self.spec: ProductSpec = spec
        self.event_types = frozenset(spec.event_types)
        domain = catalog.domains[spec.category_domain]
        self.no_category = domain == ("-",)
        self.categories = frozenset(domain)
        #: Each event type's whitelist of categories (empty: its events have none): the
        #: product's domain, or the type's own when the product declares ``event_categories``.
        self.categories_by_type: dict[str, frozenset[str]] = {}
        for name in spec.event_types:
            values = catalog.domains[spec.domain_of(name)]
            self.categories_by_type[name] = frozenset() if values == ("-",) else frozenset(values)
        self.genders = frozenset(catalog.domains["gender"])
        #: a product randomised at collection: the per-report ε its reports must declare
        self.randomised = spec.randomised_epsilon
        self.resolution = catalog.h3_resolution
        states = set(tenant_spec.states)
        self.tenant_districts = frozenset(d.code for d in catalog.districts if d.state in states)
        self.known_districts = frozenset(d.code for d in catalog.districts)
        self.cells, self.postal, self._placed = _reference(catalog)
        # A kept value is handed on as one shared string per distinct value (the whitelist's,
        # the geography's, a cached time), never the copy each input row brings: rows then
        # reference a few objects, which is what makes a chunk cheap to pass to the store's
        # process (``_checking``) — pickle writes a repeated object once.
        self._event_types = {name: name for name in self.event_types}
        self._categories = {} if self.no_category else {name: name for name in self.categories}
        self._type_categories = {name: {value: value for value in allowed}
                                 for name, allowed in self.categories_by_type.items()}
        self._genders = {name: name for name in self.genders}
        self._hash = Pseudonymizer(secret)
        # Its own key, so a copy's hashes never equal a stored pseudonym or event key.
        self._copy_key = hmac.new(secret.encode(), b"veil quarantine copy",
                                  hashlib.sha256).digest()
        self._event_key = EventKeys(secret, tenant=tenant, product=spec.id).of
        now = now or datetime.now(UTC)
        self._latest = (now + _FUTURE_SLACK).timestamp()
        # Months before ``closed_before`` are closed by the product's raw-event retention
        # (data/retention.py): their raw events are (or are about to be) purged and their
        # aggregates are final, so no event of theirs is stored again.
        self.closed_before = closed_before
        self._open_from = (_EARLIEST if closed_before is None else
                           datetime.combine(closed_before, time(), tzinfo=UTC).timestamp())
        self._days: dict[int, tuple[str, str]] = {}
        self._quarters: dict[int, tuple[str, str, str]] = {}
        self._subjects: dict[str, str] = {}
        self._clean_metadata: dict[tuple, bool] = {}  # see _flat_metadata_is_clean

    # --- the one entry point -----------------------------------------------------------------

    def quarantine_copy(self, row: Any) -> str:
        """What the quarantine keeps of a refused row: its shape, and of each value only the
        type, length and a hash keyed by this batch's secret (``redacted_copy``)."""
        return redacted_copy(row, key=self._copy_key, shown_keys=FIELDS)

    def check(self, row: Any) -> Event | Rejection:
        try:
            return self._check(row)
        except _Reject as exc:
            return exc.rejection
        except RecursionError:
            return Rejection("malformed row", "nested too deeply")

    def _check(self, row: Any) -> Event:
        # Written for speed (this runs for every row): the common, valid case takes the fast
        # branch of each field; anything unusual falls through to the careful helper.
        if type(row) is not dict:
            if type(row) is DuplicateKeys:
                raise _Reject("duplicate key", f"the row {_repeated(row)} more than once")
            raise _Reject("malformed row", f"expected an object, got {_kind(row)}")
        if not row.keys() <= FIELDS:
            self._unknown_fields(row)
        get = row.get
        for name in REQUIRED:
            if get(name) in _MISSING:
                raise _Reject("missing field", f"{name!r} is required")
        metadata = get("metadata")
        if metadata is not None:
            self._check_metadata(metadata)

        event_type = row["event_type"]
        known = self._event_types.get(event_type) if type(event_type) is str else None
        event_type = (known if known is not None else
                      self._whitelisted(row, "event_type", self.event_types))
        category = get("category")
        known = (self._type_categories[event_type].get(category) if type(category) is str
                 else None)
        category = known if known is not None else self._category(category, event_type)
        if self.randomised is not None or "randomised_epsilon" in row:
            self._randomised(get("randomised_epsilon"))
        gender = get("gender")
        if gender is None:
            gender = "unknown"
        else:
            known = self._genders.get(gender) if type(gender) is str else None
            gender = known if known is not None else self._gender(gender)
        at, quarter = self._time(row["timestamp"])
        ts, day, month = self._quarters.get(quarter) or self._time_strings(quarter)
        cell, district = self._location(row)
        age = get("age")
        if type(age) is int and 0 <= age <= _MAX_AGE:
            bucket = _BUCKET_OF_AGE[age]
        else:
            bucket = age_bucket(self._age(age))
        value = get("value")
        if value is not None:
            value = self._value(value)
        subject_id = row["subject_id"]
        if type(subject_id) is not str or len(subject_id) > _MAX_ID_CHARS:
            subject_id = self._identifier(row, "subject_id")
        subject = self._subjects.get(subject_id) or self._pseudonym(subject_id)
        event_id = row["event_id"]
        if type(event_id) is not str or len(event_id) > _MAX_ID_CHARS:
            event_id = self._identifier(row, "event_id")
        event_key = self._event_key(event_id)
        stored = (event_key, self.tenant, self.product, event_type, subject, ts, day, month, cell,
                  district, bucket, gender, category, value)
        return Event(stored, at)

    def _randomised(self, declared: Any) -> None:
        """A randomised product's report must say it was randomised at the declared ε (its
        category is already checked against the declared domain); any other product's must
        not claim it. Stored rows hold the randomised category only, never the claim."""
        if self.randomised is None:
            raise _Reject("not randomised", f"{self.product} collects true answers; "
                                            f"'randomised_epsilon' is not an event field of it")
        if declared in _MISSING:
            raise _Reject("not randomised",
                          f"{self.product} accepts only reports randomised at collection: "
                          f"randomise 'category' with k-ary randomised response at ε = "
                          f"{self.randomised:g} and send 'randomised_epsilon': "
                          f"{self.randomised:g} (data.ingest.client does both)")
        if type(declared) is str:  # a CSV cell
            parsed = _parse_float(declared)
            declared = parsed if parsed is not None else declared
        if type(declared) not in (int, float) or not math.isfinite(declared):
            _refuse_pii("randomised_epsilon", declared)
            raise _Reject("wrong randomisation", f"'randomised_epsilon' must be a number, got "
                                                 f"{_kind(declared)}")
        if not math.isclose(declared, self.randomised, rel_tol=1e-9, abs_tol=1e-12):
            _refuse_pii("randomised_epsilon", declared)
            raise _Reject("wrong randomisation",
                          f"{self.product} reports must be randomised at ε = "
                          f"{self.randomised:g}, got ε = {show(declared)}: the gate debiases "
                          f"with the declared ε only")

    def _gender(self, value: Any) -> str:
        if value == "":
            return "unknown"
        lowered = value.lower() if isinstance(value, str) else value
        return self._whitelisted({}, "gender", self.genders, value=lowered)

    # --- field rules -------------------------------------------------------------------------

    def _unknown_fields(self, row: dict) -> None:
        for key in row:
            if key in FIELDS:
                continue
            if not isinstance(key, str):
                raise _Reject("unknown field", "field names must be strings")
            if is_pii_key(key):
                hint = (" (coordinates go in 'lat' and 'lng')"
                        if any(k in key.lower() for k in ("lat", "lon", "gps")) else "")
                raise _Reject("PII key", f"field {show(key)} names personal data{hint}")
            kind = find_pii(key)
            if kind:
                raise _Reject("PII value", f"a field name looks like {_holds(kind)}")
            raise _Reject("unknown field", f"{show(key)} is not an event field; allowed: "
                                           f"{', '.join(sorted(FIELDS))}")

    def _check_metadata(self, metadata: Any) -> None:
        if type(metadata) is not dict:
            if type(metadata) is DuplicateKeys:
                raise _Reject("duplicate key", f"'metadata' {_repeated(metadata)} more than once")
            raise _Reject("invalid value", f"'metadata' must be an object, got {_kind(metadata)}")
        if len(metadata) <= _METADATA_ITEMS and self._flat_metadata_is_clean(metadata):
            return
        stack: list[tuple[tuple[str, ...], Any]] = [(("metadata",), metadata)]
        seen = 0
        while stack:
            path, node = stack.pop()
            seen += 1
            if seen > _METADATA_ITEMS:
                raise _Reject("invalid value", f"'metadata' holds more than {_METADATA_ITEMS} "
                                               f"values")
            if len(path) > _METADATA_DEPTH + 1:
                raise _Reject("invalid value", f"'metadata' is nested deeper than "
                                               f"{_METADATA_DEPTH} levels")
            kind_of = type(node)
            if kind_of is str:
                kind = find_pii(node)
                if kind is not None:
                    raise _Reject("PII value", f"{_path(path)} holds {_holds(kind)}")
            elif kind_of is dict:
                if holds_coordinates(node.values()):
                    raise _Reject("PII value", f"{_path(path)} holds coordinates")
                for key, item in node.items():
                    if type(key) is not str:
                        raise _Reject("invalid value", f"{_path(path)} has a non-string key")
                    if is_pii_key(key):
                        raise _Reject("PII key",
                                      f"{_path(path + (key,))} names personal data")
                    kind = find_pii(key)
                    if kind is not None and kind != "free text":
                        raise _Reject("PII value",
                                      f"a key in {_path(path)} looks like {_holds(kind)}")
                    stack.append((path + (key,), item))
            elif kind_of is list:
                if holds_coordinates(node):
                    raise _Reject("PII value", f"{_path(path)} holds coordinates")
                stack.extend((path + (f"[{i}]",), item) for i, item in enumerate(node))
            elif kind_of is int or kind_of is float:
                kind = number_pii(node)
                if kind is not None:
                    raise _Reject("PII value", f"{_path(path)} holds {_holds(kind)}")
            elif kind_of is DuplicateKeys:
                raise _Reject("duplicate key", f"{_path(path)} {_repeated(node)} more than once")
            elif node is not None and kind_of is not bool:
                raise _Reject("invalid value", f"{_path(path)} holds {_kind(node)}; metadata "
                                               f"holds objects, lists, strings, numbers and "
                                               f"booleans")

    def _flat_metadata_is_clean(self, metadata: dict) -> bool:
        """The common case, answered from cached verdicts: string keys, short text values.
        False means "not sure": the full walk then decides (and names the problem).

        Sources send the same few metadata objects over and over (device, app version), so
        the verdict on a whole object is kept too, by its items. Only objects whose values are
        all strings or null are kept: a string equals only a string, so a hit is an object
        with exactly these keys and values (whereas ``1 == True == 1.0``)."""
        try:
            items = tuple(metadata.items())
            if self._clean_metadata.get(items):
                return True
        except TypeError:  # an unhashable value (a list, an object): not the common case
            return False
        for key, value in metadata.items():
            if type(key) is not str or is_pii_key(key) or find_pii(key) is not None:
                return False
            if type(value) is str:
                if find_pii(value) is not None or coordinate_like(value):
                    return False  # one half of a position: the walk looks for the other
            elif value is not None and type(value) is not bool:
                return False
        if all(type(value) is str or value is None for value in metadata.values()):
            if len(self._clean_metadata) >= _CLEAN_METADATA_LIMIT:
                self._clean_metadata.clear()
            self._clean_metadata[items] = True
        return True

    def _whitelisted(self, row: dict, name: str, allowed: frozenset[str], *,
                     value: Any = ...) -> str:
        """A kept string field: in its whitelist, or refused — as PII if it looks like PII."""
        if value is ...:
            value = row.get(name)
        if isinstance(value, str) and value in allowed:
            return value
        _refuse_pii(name, value)
        raise _Reject(f"unknown {name.replace('_', ' ')}",
                      f"{show(value)} is not one of: {', '.join(sorted(allowed))}")

    def _category(self, value: Any, event_type: str) -> str | None:
        if self.spec.event_categories:
            return self._type_category(value, event_type)
        if self.no_category:
            if value in (None, "", "-"):
                return None
            _refuse_pii("category", value)
            raise _Reject("unknown category",
                          f"{self.product} has no categories; got {show(value)}")
        if value in (None, ""):
            raise _Reject("missing field", f"'category' is required for {self.product}")
        if isinstance(value, str) and value in self.categories:
            return value
        _refuse_pii("category", value)
        raise _Reject("unknown category", f"{show(value)} is not one of: "
                                          f"{', '.join(sorted(self.categories))}")

    def _type_category(self, value: Any, event_type: str) -> str | None:
        """A category checked against its event type's whitelist (``event_categories``); the
        reason names the type and what it allows."""
        allowed = self.categories_by_type[event_type]
        if not allowed:
            if value in (None, "", "-"):
                return None
            _refuse_pii("category", value)
            raise _Reject("unknown category", f"{event_type} events of {self.product} have no "
                                              f"categories; got {show(value)}")
        if value in (None, ""):
            raise _Reject("missing field", f"'category' is required for {event_type} events of "
                                           f"{self.product}; one of: {', '.join(sorted(allowed))}")
        if isinstance(value, str) and value in allowed:
            return value
        _refuse_pii("category", value)
        raise _Reject("unknown category", f"{show(value)} is not a category of {event_type}; "
                                          f"one of: {', '.join(sorted(allowed))}")

    def _time(self, value: Any) -> tuple[float, int]:
        if not isinstance(value, str):
            raise _Reject("invalid timestamp", f"'timestamp' must be an ISO 8601 string with a "
                                               f"time zone, got {_kind(value)}")
        try:
            moment = datetime.fromisoformat(value)
        except (ValueError, OverflowError, TypeError):
            _refuse_pii("timestamp", value)
            raise _Reject("invalid timestamp",
                          f"{show(value)} is not an ISO 8601 time such as "
                          f"2025-03-04T10:07:30+02:00") from None
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise _Reject("invalid timestamp",
                          f"{show(value)} has no time zone; add Z or an offset such as +02:00")
        try:
            at = moment.timestamp()
        except (OverflowError, ValueError):
            raise _Reject("invalid timestamp", f"{show(value)} is out of range") from None
        if at < _EARLIEST:
            raise _Reject("invalid timestamp", f"{show(value)} is before 2000-01-01")
        if at > self._latest:
            raise _Reject("invalid timestamp", f"{show(value)} is in the future")
        if at < self._open_from:
            raise _Reject("closed month", f"{show(value)} falls before "
                                          f"{self.closed_before:%B %Y}: {self.product} keeps "
                                          f"raw events {self.spec.raw_retention_days} days after "
                                          f"their month ends, and the aggregates of older months "
                                          f"are final")
        return at, int(at // _QUARTER)

    def _time_strings(self, quarter: int) -> tuple[str, str, str]:
        """(ts, day, month) as stored: 'YYYY-MM-DD HH:MM:00.000000', 'YYYY-MM-DD', month start."""
        day_number, slot = divmod(quarter, 96)
        cached = self._days.get(day_number)
        if cached is None:
            day = date(1970, 1, 1) + timedelta(days=day_number)
            cached = self._days[day_number] = (day.isoformat(), month_start(day).isoformat())
        if len(self._quarters) >= 200_000:  # about six years of quarter hours
            self._quarters.clear()
        strings = self._quarters[quarter] = (f"{cached[0]} {_CLOCK[slot]}", cached[0],
                                             cached[1])
        return strings

    def _location(self, row: dict) -> tuple[str, str]:
        lat, lng = row.get("lat"), row.get("lng")
        postal, district = row.get("postal_code"), row.get("district")
        if (type(lat) is float and type(lng) is float and postal is None and district is None
                and -90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
            placed = self._placed.get(h3_int.latlng_to_cell(lat, lng, self.resolution))
            if placed is not None and placed[1] in self.tenant_districts:
                return placed
        has_coordinates = lat not in (None, "") or lng not in (None, "")
        forms = has_coordinates + (postal not in (None, "")) + (district not in (None, ""))
        if forms == 0:
            raise _Reject("missing field", "a location is required: 'lat' and 'lng', "
                                           "'postal_code' or 'district'")
        if forms > 1:
            raise _Reject("invalid value", "give one location: 'lat' and 'lng', 'postal_code' "
                                           "or 'district', not several")
        if has_coordinates:
            if lat in (None, "") or lng in (None, ""):
                raise _Reject("missing field", "coordinates need both 'lat' and 'lng'")
            latitude = self._number(lat, "lat", -90.0, 90.0)
            longitude = self._number(lng, "lng", -180.0, 180.0)
            cell = h3.latlng_to_cell(latitude, longitude, self.resolution)
            found = self.cells.get(cell)
            if found is None:
                raise _Reject("outside tenant area",
                              "the coordinates fall outside the mapped geography")
            return cell, self._in_tenant(found)
        if postal not in (None, ""):
            if isinstance(postal, int) and not isinstance(postal, bool):
                postal = f"{postal:05d}"
            if not (isinstance(postal, str) and len(postal) == 5 and postal.isascii()
                    and postal.isdigit()):
                _refuse_pii("postal_code", postal)
                raise _Reject("invalid value", f"postal code {show(postal)} must be five digits")
            found = self.postal.get(postal[:3])
            if found is None:
                raise _Reject("unknown postal code", f"{show(postal)} is not in the postal-code "
                                                     f"register")
            return DISTRICT_ONLY_CELL, self._in_tenant(found)
        code = self._whitelisted(row, "district", self.known_districts)
        return DISTRICT_ONLY_CELL, self._in_tenant(code)

    def _in_tenant(self, district: str) -> str:
        if district not in self.tenant_districts:
            raise _Reject("outside tenant area",
                          f"district {district} is not in tenant {self.tenant}'s area")
        return district

    def _age(self, value: Any) -> int | None:
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            raise _Reject("invalid value", "'age' must be whole years, got a boolean")
        if isinstance(value, str):
            text = value.strip()
            if not (text.isascii() and text.isdigit()):
                _refuse_pii("age", value)
                raise _Reject("invalid value", f"'age' must be whole years, got {show(value)}")
            if len(text) > 3:
                raise _Reject("invalid value", f"'age' must be 0-{_MAX_AGE}")
            value = int(text)
        elif isinstance(value, float):
            if not (math.isfinite(value) and value == int(value)):
                raise _Reject("invalid value", f"'age' must be whole years, got {show(value)}")
            value = int(value)
        elif not isinstance(value, int):
            raise _Reject("invalid value", f"'age' must be whole years, got {_kind(value)}")
        if not 0 <= value <= _MAX_AGE:
            raise _Reject("invalid value", f"'age' must be 0-{_MAX_AGE}, got {show(value)}")
        return value

    def _value(self, value: Any) -> float | None:
        """A bounded number rounded to two decimals: at most eight digits, so a stored value
        can never spell out a phone or id number."""
        if value in (None, ""):
            return None
        return round(self._number(value, "value", -_MAX_ABS_VALUE, _MAX_ABS_VALUE), 2)

    def _number(self, value: Any, name: str, low: float, high: float) -> float:
        if isinstance(value, bool):
            raise _Reject("invalid value", f"{name!r} must be a number, got a boolean")
        if isinstance(value, str):
            number = _parse_float(value)
            if number is None:
                _refuse_pii(name, value)
                raise _Reject("invalid value", f"{name!r} must be a number, got {show(value)}")
        elif isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
        else:
            raise _Reject("invalid value", f"{name!r} must be a number, got {_kind(value)}")
        if not math.isfinite(number):
            raise _Reject("invalid value", f"{name!r} must be a finite number")
        if not low <= number <= high:
            kind = number_pii(number)
            if kind is not None:
                raise _Reject("PII value", f"{name!r} holds {_holds(kind)}")
            raise _Reject("invalid value", f"{name!r} must be between {low:g} and {high:g}, "
                                           f"got {show(number)}")
        return number

    def _identifier(self, row: dict, name: str) -> str:
        value = row[name]
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise _Reject("invalid value", f"{name!r} must be a string, got {_kind(value)}")
        if len(value) > _MAX_ID_CHARS:
            raise _Reject("invalid value", f"{name!r} is longer than {_MAX_ID_CHARS} characters")
        return value

    def _pseudonym(self, raw: str) -> str:
        if len(self._subjects) >= 1_000_000:  # bound memory on very large files
            self._subjects.clear()
        known = self._subjects[raw] = self._hash.of(raw)
        return known


def _refuse_pii(name: str, value: Any) -> None:
    """Raise a PII rejection when a refused value looks personal, so the reason says so."""
    if isinstance(value, str):
        kind = find_pii(value)
        if kind is not None:
            raise _Reject("PII value", f"{name!r} holds {_holds(kind)}")
    elif isinstance(value, (int, float)):
        kind = number_pii(value)
        if kind is not None:
            raise _Reject("PII value", f"{name!r} holds {_holds(kind)}")


def _repeated(node: DuplicateKeys) -> str:
    """'names the key 'device'' — or 'names a key', when the key is not safe to show."""
    key = node.repeated[0] if node.repeated else ""
    return f"names the key {show(key)}" if safe_token(key) else "names a key"


def _path(parts: tuple[str, ...]) -> str:
    """metadata.contact.phone — any part not safe to show becomes <key>."""
    shown = []
    for part in parts:
        if part.startswith("[") or safe_token(part):
            shown.append(part if part.startswith("[") or not shown else f".{part}")
        else:
            shown.append(".<key>")
    return "".join(shown)


def _parse_float(text: str) -> float | None:
    text = text.strip()
    if len(text) > 32 or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _holds(kind: str) -> str:
    """'free text', 'an email address', 'a phone number'."""
    if kind == "free text":
        return kind
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "a number",
             float: "a number", bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)
