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
    """The catalog in the repository is valid and covers three verticals and six products."""
    catalog = load_catalog(SOURCE)
    assert {p.vertical for p in catalog.products} == {"health", "education", "social_protection"}
    assert len(catalog.products) == 6
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
