"""The catalog loader accepts the shipped catalog and rejects each kind of bad file precisely."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.errors import ConfigError

SOURCE = PROJECT_ROOT / "catalog"


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(SOURCE, target)
    return target


def _edit(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text()
    assert old in text, f"fixture text {old!r} not found in {name}"
    path.write_text(text.replace(old, new))


def test_shipped_catalog_loads():
    """The catalog in the repository is valid and covers three verticals and the first six
    products, then those of the design round (each change's test pins its own)."""
    catalog = load_catalog(SOURCE)
    assert {p.vertical for p in catalog.products} == {"health", "education", "social_protection"}
    assert [p.id for p in catalog.products[:6]] == [
        "health.vaccinations", "health.nutrition", "education.attendance",
        "education.mastery", "social.registrations", "social.grants"]
    assert "education.sessions" in {p.id for p in catalog.products}
    assert len(catalog.tenants) == 3
    assert catalog.product("health.nutrition").metric("nutrition_score").versions[1].version == 2


def test_policy_version_is_the_content_hash(catalog_dir):
    """Same bytes → same version; any edit → a new version."""
    before = load_catalog(catalog_dir).version
    assert load_catalog(catalog_dir).version == before == load_catalog(SOURCE).version
    _edit(catalog_dir, "policy.toml", "max_group_by = 3", "max_group_by = 4")
    assert load_catalog(catalog_dir).version != before


def test_missing_directory_names_the_setting(tmp_path):
    """A catalog directory that does not exist is named with its setting."""
    with pytest.raises(ConfigError, match="VEIL_CATALOG_DIR=.*does not exist"):
        load_catalog(tmp_path / "nowhere")


def test_missing_file_is_named(catalog_dir):
    """A missing catalog file stops loading with that file's path."""
    (catalog_dir / "roles.toml").unlink()
    with pytest.raises(ConfigError, match=r"roles\.toml: catalog file is missing"):
        load_catalog(catalog_dir)


BAD_EDITS = [
    ("products.toml", 'id = "health.nutrition"', 'id = "health.nutrition', r"products\.toml: not valid TOML"),
    ("products.toml", 'owner = "Ministry of Health — nutrition unit"\n', "",
     r"products\.toml: key 'product\[health\.nutrition\]\.owner': is required but missing"),
    ("products.toml", 'k = 5\nmax_events_per_subject_per_day = 1\n# A child is screened',
     'k = "five"\nmax_events_per_subject_per_day = 1\n# A child is screened',
     r"key 'product\[health\.nutrition\]\.k': must be an integer, got 'five'"),
    ("products.toml", 'k = 5\nmax_events_per_subject_per_day = 1\n# A child is screened',
     'k = 3\nmax_events_per_subject_per_day = 1\n# A child is screened',
     r"key 'product\[health\.nutrition\]\.k': must be >= the policy's k=5, got 3"),
    ("products.toml", "max_events_per_subject_per_month = 2\nprivacy_unit = \"one child",
     "max_events_per_subject_per_month = 0\nprivacy_unit = \"one child",
     r"key 'product\[health\.nutrition\]\.max_events_per_subject_per_month': must be >= 1, got 0"),
    ("products.toml", "max_events_per_subject_per_month = 3\nprivacy_unit = \"one person's",
     "max_events_per_subject_per_month = 2\nprivacy_unit = \"one person's",
     r"key 'product\[health\.vaccinations\]\.max_events_per_subject_per_month': must be >= "
     r"max_events_per_subject_per_day \(3\), got 2"),
    ("products.toml", "max_events_per_subject_per_month = 2\nprivacy_unit = \"one child",
     "max_events_per_subject_per_month = 2\nraw_retention_days = 10\nprivacy_unit = \"one child",
     r"key 'product\[health\.nutrition\]\.raw_retention_days': must be >= 31, got 10"),
    ("products.toml", 'store = "registrations"', 'store = "registrations"\nraw_retention_days = 400',
     r"key 'product\[social\.registrations\]\.raw_retention_days': applies to event products "
     r"only"),
    ("products.toml", 'value      = { classification = "sensitive"',
     'value      = { classification = "secret"',
     r"key 'event_fields\.value\.classification': must be one of .*got 'secret'"),
    ("products.toml", 'id = "education.mastery"', 'id = "health.vaccinations"',
     r"key 'product\[\]\.id': duplicate value 'health\.vaccinations'"),
    ("products.toml", "value_bounds = [0.0, 200.0]", "value_bounds = [200.0, 0.0]",
     r"value_bounds': must be \[lower, upper\] with lower < upper"),
    ("products.toml", 'measure = "sum"\nevent_type = "grant_disbursement"\nvalue_bounds = [0.0, 200.0]',
     'measure = "sum"\nevent_type = "grant_disbursement"',
     r"metric\[1\]\.value_bounds': a sum metric needs clamping bounds"),
    ("products.toml", 'version = 2\neffective_from = "2025-07-01"',
     'version = 2\neffective_from = "2023-07-01"',
     r"effective_from dates must strictly increase"),
    ("products.toml", 'effective_from = "2025-07-01"', 'effective_from = "July 2025"',
     r"effective_from': must be a date YYYY-MM-DD, got 'July 2025'"),
    ("products.toml", 'category = "present"', 'category = "asleep"',
     r"metric\[0\]\.category': must be one of \['present', 'absent', 'excused'\], got 'asleep'"),
    ("products.toml", 'kind = "metric_set"\nstore = "health_events"\nevent_types = ["vaccination"]',
     'kind = "dashboard"\nstore = "health_events"\nevent_types = ["vaccination"]',
     r"product\[health\.vaccinations\]\.kind': must be one of"),
    ("roles.toml", 'pages = ["home", "donor"]', 'pages = ["home", "donations"]',
     r"roles\.toml: key 'role\.donor\.pages': unknown page 'donations'"),
    ("roles.toml", 'privacy_levels = ["dp_medium", "dp_high"]\ndefault_level = "dp_medium"',
     'privacy_levels = ["dp_medium", "dp_extreme"]\ndefault_level = "dp_medium"',
     r"role\.researcher\.privacy_levels': unknown privacy level 'dp_extreme'"),
    ("roles.toml", 'sensitive = "mask"', 'sensitive = "blur"',
     r"role\.case_worker\.treatment\.sensitive': must be one of .*got 'blur'"),
    ("roles.toml", "[role.donor", "[role.sponsor", r"key 'role\.donor': is required but missing"),
    ("policy.toml", "epsilon = 0.0", "epsilon = 0.5",
     r"policy\.toml: key 'levels\.anonymized\.epsilon': must be 0"),
    ("policy.toml", "k = 5", "k = 1", r"key 'defaults\.k': must be >= 2, got 1"),
    ("policy.toml", "interval_confidence = 0.95", "interval_confidence = 95",
     r"defaults\.interval_confidence': must be in \[0\.5, 1\), got 95"),
    ("policy.toml", "empty_cell_rate = 0.02", "empty_cell_rate = 0.5",
     r"defaults\.empty_cell_rate': must be in \(0, 0\.1\], got 0\.5"),
    ("policy.toml", "delta_cap = 1e-6", "delta_cap = 5e-8",
     r"defaults\.delta_cap': must be >= delta \(1e-07\), or no Gaussian-noise release"),
    ("policy.toml", "delta_cap = 1e-6", "delta_cap = 0.01",
     r"defaults\.delta_cap': must be in \(0, 0\.001\), got 0\.01"),
    ("geography.toml", "lat = -1.8862", "lat = -181.8862",
     r"geography\.toml: key 'district\[1\]\.lat': must be a latitude in \[-90, 90\]"),
    ("geography.toml", 'state = "NOR"\nlat = -1.5014', 'state = "NRT"\nlat = -1.5014',
     r"key 'district\[3\]\.state': must be one of .*got 'NRT'"),
    ("tenants.toml", 'states = ["SOU"]', 'states = ["SOU", "XXX"]',
     r"tenants\.toml: key 'tenant\[2\]\.states': unknown state 'XXX'"),
    ("tenants.toml", 'id = "south"', 'id = "south pole!"',
     r"tenant\[2\]\.id': must be 1-32 letters, digits or '-'"),
    ("domains.toml", 'values = ["female", "male", "other", "unknown"]',
     'values = ["female", "male", "female"]', r"domain\.gender\.values': contains duplicates"),
]


@pytest.mark.parametrize("name, old, new, message", BAD_EDITS,
                         ids=[re.sub(r"\W+", "-", m)[:48] for *_, m in BAD_EDITS])
def test_bad_file_is_rejected_with_file_key_and_reason(catalog_dir, name, old, new, message):
    """Each kind of fault stops loading with the file, the key and the reason."""
    _edit(catalog_dir, name, old, new)
    with pytest.raises(ConfigError, match=message) as caught:
        load_catalog(catalog_dir)
    assert str(catalog_dir / name) in str(caught.value) or "not valid TOML" not in message


# --- GovSahay's event model: health.services (per-type category domains) and health.neuroscreen

def test_health_services_gives_each_event_type_its_own_category_domain():
    """health.services whitelists GovSahay's event types, each with its own category domain."""
    catalog = load_catalog(SOURCE)
    services = catalog.product("health.services")
    assert dict(services.event_categories) == {
        "triage_completed": "triage_level", "complaint_submitted": "complaint_type",
        "complaint_resolved": "complaint_type", "complaint_escalated": "complaint_type",
        "tele_request_created": "none", "tele_consultation_completed": "none",
        "daily_wellness_logged": "none"}
    assert catalog.domains["triage_level"] == ("self_care", "phc", "emergency")
    assert catalog.domains["neuroscreen_band"] == ("low", "medium", "high")
    assert services.category_domain == "none"
    assert (services.unit_period, services.unit_bound) == ("month", 10)


def test_a_metric_takes_its_event_types_domain_unless_it_declares_none():
    """Each metric's categories are its event type's; "none" adds them up."""
    services = load_catalog(SOURCE).product("health.services")
    assert services.metric("triages").category_domain == "triage_level"
    assert services.metric("complaints_escalated").category_domain == "complaint_type"
    assert services.metric("teleconsultations").category_domain == "none"
    assert services.metric("wellness_score").value_bounds == (0.0, 10.0)
    emergencies = services.metric("emergency_triages")
    assert (emergencies.category, emergencies.category_domain) == ("emergency", "none")
    assert services.domain_of("complaint_resolved") == "complaint_type"


def test_neuroscreen_bands_are_their_own_product_at_a_higher_k():
    """NeuroScreen bands (a health condition) are released at k = 10, one screen a month."""
    catalog = load_catalog(SOURCE)
    neuro = catalog.product("health.neuroscreen")
    assert neuro.k == 10 > catalog.policy.k
    assert neuro.metric("screenings").category_domain == "neuroscreen_band"
    assert (neuro.unit_period, neuro.unit_bound) == ("month", 1)
    assert "neuroscreen_completed" not in catalog.product("health.services").event_types
    assert "vaccination_recorded" not in catalog.product("health.services").event_types


EVENT_CATEGORY_EDITS = [
    ('tele_request_created        = "none"', 'tele_requested = "none"',
     r"products\.toml: key 'product\[health\.services\]\.event_categories\.tele_requested': is "
     r"not one of the product's event_types"),
    ('triage_completed            = "triage_level"', 'triage_completed = "triage_colour"',
     r"key 'product\[health\.services\]\.event_categories\.triage_completed': must be one of "
     r".*got 'triage_colour'"),
    ('triage_completed            = "triage_level"', 'triage_completed = 3',
     r"key 'product\[health\.services\]\.event_categories\.triage_completed': must be a string"),
    ('[product.event_categories]\ntriage_completed            = "triage_level"',
     'event_categories = []\ntriage_completed            = "triage_level"',
     r"key 'product\[health\.services\]\.event_categories': must be a table"),
    ('measure = "count"\nevent_type = "triage_completed"\n[[product.metric.version]]',
     'measure = "count"\nevent_type = "triage_completed"\ncategory_domain = "complaint_type"\n'
     '[[product.metric.version]]',
     r"metric\[0\]\.category_domain': the events of 'triage_completed' have categories from "
     r"'triage_level' \(event_categories\)"),
    ('category = "emergency"', 'category = "discrimination"',
     r"metric\[1\]\.category': must be one of \['self_care', 'phc', 'emergency'\], "
     r"got 'discrimination'"),
    ('privacy_unit = "one person\'s GovSahay service events',
     'randomised = { epsilon = 2.0 }\nprivacy_unit = "one person\'s GovSahay service events',
     r"key 'product\[health\.services\]\.event_categories': a product randomised at "
     r"collection has one category domain"),
]


@pytest.mark.parametrize("old, new, message", EVENT_CATEGORY_EDITS,
                         ids=[re.sub(r"\W+", "-", m)[-48:] for *_, m in EVENT_CATEGORY_EDITS])
def test_bad_event_categories_are_rejected_with_file_key_and_reason(catalog_dir, old, new,
                                                                   message):
    """A per-type domain must name a declared event type and a known domain."""
    _edit(catalog_dir, "products.toml", old, new)
    with pytest.raises(ConfigError, match=message):
        load_catalog(catalog_dir)
