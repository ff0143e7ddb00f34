"""Products only some roles may use (``allowed_roles``), and the learning analytics products of
S2-15 (issue 20) that the catalog declares."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from data.catalog import load_catalog
from data.config import PROJECT_ROOT
from data.errors import ConfigError

SOURCE = PROJECT_ROOT / "catalog"
IEP_ROLES = 'allowed_roles = ["policy_maker"]'


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(SOURCE, target)
    return target


def _edit(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text()
    assert text.count(old) == 1, f"fixture text {old!r} not found once in {name}"
    path.write_text(text.replace(old, new))


def test_mastery_progress_is_a_mean_of_changes_clamped_to_50_points():
    """education.progress: one report per pupil, subject and period; gains clamped to ±50."""
    product = load_catalog(SOURCE).product("education.progress")
    assert (product.k, product.category_domain, product.unit_period, product.unit_bound) == (
        5, "school_subject", "month", 3)
    assert product.allowed_roles is None
    gain = product.metric("mastery_gain")
    assert (gain.measure, gain.value_bounds) == ("mean", (-50.0, 50.0))
    assert product.metric("progress_reports").measure == "count"


def test_iep_is_for_policy_makers_only_behind_a_higher_k():
    """education.iep: k above the policy's, never published, open to policy makers only."""
    catalog = load_catalog(SOURCE)
    product = catalog.product("education.iep")
    assert product.allowed_roles == ("policy_maker",)
    assert product.k == 11 > catalog.policy.k
    assert product.published_series is False
    assert catalog.domains["iep_status"] == ("on_track", "off_track", "met")
    assert product.metric("goals_on_track").category == "on_track"
    assert product.metric("goal_progress").value_bounds == (0.0, 100.0)
    # every other product is open to every role, as before
    assert [p.id for p in catalog.products if p.allowed_roles is not None] == ["education.iep"]


BAD_ROLES = [
    (IEP_ROLES, 'allowed_roles = ["policy_maker", "minister"]',
     r"products\.toml: key 'product\[education\.iep\]\.allowed_roles': unknown role "
     r"'minister'; roles\.toml defines \["),
    (IEP_ROLES, "allowed_roles = []",
     r"key 'product\[education\.iep\]\.allowed_roles': must name at least one role"),
    (IEP_ROLES, 'allowed_roles = ["policy_maker", "policy_maker"]',
     r"key 'product\[education\.iep\]\.allowed_roles': duplicate value 'policy_maker'"),
    (IEP_ROLES, "allowed_roles = [1]",
     r"key 'product\[education\.iep\]\.allowed_roles': must be a list of strings, got 1"),
    (IEP_ROLES, 'allowed_roles = "policy_maker"',
     r"key 'product\[education\.iep\]\.allowed_roles': must be a"),
    ('published_series = false\n# Few, small cells',
     'published_series = true\n# Few, small cells',
     r"key 'product\[education\.iep\]\.allowed_roles': a product restricted to some roles "
     r"cannot be a published series"),
    ('store = "registrations"', 'store = "registrations"\nallowed_roles = ["policy_maker"]',
     r"key 'product\[social\.registrations\]\.allowed_roles': role 'case_worker' reads "
     r"social\.registrations record by record"),
]


@pytest.mark.parametrize("old, new, message", BAD_ROLES,
                         ids=[re.sub(r"\W+", "-", m)[:48] for *_, m in BAD_ROLES])
def test_bad_allowed_roles_are_rejected_with_file_key_and_reason(catalog_dir, old, new,
                                                                 message):
    """Each fault in a product's allowed_roles stops loading with the file, key and reason."""
    _edit(catalog_dir, "products.toml", old, new)
    with pytest.raises(ConfigError, match=message) as caught:
        load_catalog(catalog_dir)
    assert str(catalog_dir / "products.toml") in str(caught.value)

