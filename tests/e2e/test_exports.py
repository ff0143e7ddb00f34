"""Safe exports (D6) in Debian's Chromium: request, progress, signed link, masked download, and
the export record on the compliance officer's page.

The app's own export worker thread (on by default) builds the file. Screenshots of every step go
to test-artifacts/e2e/. No request leaves 127.0.0.1.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import USERS
from tests.e2e.test_sign_in import audit, settled, sign_in, sign_out

pytestmark = pytest.mark.e2e


def _choose(page, label: str, option: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    page.get_by_role("option", name=option).click()


def test_case_worker_exports_a_masked_list_and_compliance_sees_the_record(
        page, app, shot, external_requests):
    """Purpose required → queued with progress → signed link → masked CSV → export record."""
    user = USERS["carla"]
    sign_in(page, app, user, shot)
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Exports").click()
    expect(page.get_by_role("heading", name="Exports", exact=True)).to_be_visible()
    settled(page)
    shot("exports-page")

    # The purpose is mandatory.
    page.get_by_role("button", name="Request export").click()
    expect(page.get_by_text("An export needs a purpose")).to_be_visible()
    shot("purpose-required")

    _choose(page, "Purpose (required)", "Case follow-up: verification visits and referrals")
    page.get_by_label("Justification (optional)").fill("verification visits next week")
    page.get_by_role("button", name="Request export").click()
    expect(page.get_by_text("is queued; its progress shows below")).to_be_visible()
    # Progress: the card's bar while it is queued or running, then the finished card.
    expect(page.get_by_test_id("stProgress").or_(
        page.get_by_role("button", name="Get download link"))).to_be_visible()
    shot("export-queued")
    link_button = page.get_by_role("button", name="Get download link")
    expect(link_button).to_be_visible(timeout=60_000)  # the fragment refreshes every 2 s
    expect(page.get_by_text("fields treated for your role")).to_be_visible()
    shot("export-ready")

    link_button.click()
    page.wait_for_url(re.compile(r".*[?&]download="))
    token = parse_qs(urlsplit(page.url).query)["download"][0]
    export_id = token.split(".")[0]
    expect(page.get_by_text(f"Export {export_id[:8]} is ready")).to_be_visible()
    shot("download-link")
    with page.expect_download() as info:
        page.get_by_role("button", name=re.compile(r"^Download veil-social\.registrations-"))\
            .click()
    download = info.value
    assert download.suggested_filename == f"veil-social.registrations-{export_id[:8]}.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert rows, "the export has records"
    assert {r["household_size"] for r in rows} == {"•••"}  # sensitive: masked
    assert all(re.fullmatch(r"[0-9a-f]{12}", r["pseudonym"]) for r in rows)  # re-keyed
    assert all(re.fullmatch(r"[0-9a-f]{12}", r["registration_id"]) for r in rows)
    assert {r["status"] for r in rows} == {"unverified"}

    steps = [(a.action, a.outcome) for a in audit(app, target=export_id)]
    assert steps[:3] == [("export_request", "allowed"), ("export_start", "allowed"),
                         ("export_finish", "allowed")]
    assert ("export_download", "allowed") in steps
    sign_out(page, app, user, shot)

    # The compliance officer of the same tenant sees the record on the Compliance page.
    officer = USERS["colin"]
    sign_in(page, app, officer, shot)
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Compliance").click()
    expect(page.get_by_role("heading", name="Export records")).to_be_visible(timeout=60_000)
    expect(page.get_by_text(export_id)).to_be_visible(timeout=60_000)
    expect(page.get_by_text("verification visits next week")).to_be_visible()
    shot("compliance-export-record")
    assert external_requests == []
