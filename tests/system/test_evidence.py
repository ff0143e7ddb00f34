"""Evidence bundles (issue 20) on real stores: what a period's bundle holds (and leaves out),
its signed manifest, and verification that fails — naming the member — after any one byte of
the file changes; the compliance read and `veil evidence`."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
import zipfile
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import select

from data.models import (
    AuditEntry,
    ExportApproval,
    PeriodBudget,
    PeriodCharge,
    PolicySnapshot,
    TenantSettingsVersion,
)
from data.models import Release as ReleaseRow
from ops_support import NOW, SECRET, TENANT, cli, export_run, principal
from privacy import AccessDenied, ConfigError, Gate, InvalidInput
from privacy.compliance.evidence import (EvidenceInvalid, build_bundle, public_key,
                                         verify_bundle)

JAN, JUN = date(2026, 1, 1), date(2026, 6, 1)
IN_PERIOD = datetime(2026, 3, 10, 9, 0)
BEFORE = datetime(2025, 12, 20, 9, 0)
AFTER = datetime(2026, 7, 2, 9, 0)


@pytest.fixture
def gate(store, catalog) -> Gate:
    return Gate(store, catalog, demo_accounts=True, secret=SECRET, clock=lambda: NOW)


def _release(store, *, at: datetime, tenant: str = TENANT, epsilon: float = 0.5) -> str:
    release_id = str(uuid.uuid4())
    with store.write.begin() as session:
        session.add(ReleaseRow(
            id=release_id, query_key=uuid.uuid4().hex, tenant_id=tenant,
            principal=f"policy.maker@{tenant}.demo", role="policy_maker",
            product_id="health.vaccinations",
            query={"metric": "doses", "level": "dp_medium", "start": "2025-10-01",
                   "end": "2026-01-01"},
            policy_version="pv" * 32, data_version=3, mechanism="discrete Laplace (OpenDP)",
            epsilon=epsilon, delta=0.0, cells=[{"value": 123}], digest=f"{release_id[:8]}" * 8,
            published=False, created_at=at))
    return release_id


@pytest.fixture
def records(store):
    """A period's worth of evidence for the tenant, with decoys outside the period or tenant."""
    ids = {"release": _release(store, at=IN_PERIOD),
           "release_before": _release(store, at=BEFORE),
           "release_after": _release(store, at=AFTER),
           "release_other": _release(store, at=IN_PERIOD, tenant="south")}
    ids["export"] = export_run(store, status="done", created=IN_PERIOD, started=IN_PERIOD,
                               finished=IN_PERIOD + timedelta(minutes=1))
    ids["umbrella"] = export_run(store, status="done", created=IN_PERIOD, tenant="south",
                                 umbrella=True, scope=("kigali-east", "north-west", "south"))
    ids["export_other"] = export_run(store, status="done", created=IN_PERIOD, tenant="south")
    with store.write.begin() as session:
        for i, approver in enumerate(("admin.one@platform.demo", "admin.two@platform.demo")):
            session.add(ExportApproval(export_id=ids["umbrella"], approver=approver,
                                       role="platform_admin", at=IN_PERIOD + timedelta(hours=i)))
        session.add(PolicySnapshot(version="a" * 64, recorded_at=BEFORE,
                                   files={"policy.toml": "k = 5\nlevel = 1\n"}))
        session.add(PolicySnapshot(version="b" * 64, recorded_at=IN_PERIOD,
                                   files={"policy.toml": "k = 7\nlevel = 1\n"}))
        session.add(PolicySnapshot(version="c" * 64, recorded_at=AFTER,
                                   files={"policy.toml": "k = 9\n"}))
        session.add(TenantSettingsVersion(
            tenant_id=TENANT, version=1, overrides={"k": 8},
            changes=[{"setting": "k", "before": 5, "after": 8}], weakens=False, base_version=0,
            status="active", reason="tighten small cells", proposed_by="tenant.admin@x.demo",
            proposed_at=IN_PERIOD))
        for at, action, outcome in ((IN_PERIOD, "release", "allowed"),
                                    (IN_PERIOD, "release", "allowed"),
                                    (IN_PERIOD, "page_view", "refused"),
                                    (datetime(2026, 5, 3), "release", "allowed"),
                                    (AFTER, "release", "allowed")):
            session.add(AuditEntry(at=at, tenant_id=TENANT, principal="p@x.demo",
                                   role="policy_maker", action=action, target="trends",
                                   outcome=outcome, detail={}))
        budget = PeriodBudget(tenant_id=TENANT, product_id="health.vaccinations",
                              period=date(2026, 2, 1), cap=4.0, spent=1.5, viewer_spent=1.0,
                              delta_cap=1e-6, delta_spent=0.0)
        session.add(budget)
        session.add(PeriodBudget(tenant_id=TENANT, product_id="health.vaccinations",
                                 period=date(2025, 11, 1), cap=4.0, spent=0.5, viewer_spent=0.5,
                                 delta_cap=1e-6, delta_spent=0.0))
        session.flush()
        session.add(PeriodCharge(budget_id=budget.id, release_id=ids["release"],
                                 principal="policy.maker@kigali-east.demo", role="policy_maker",
                                 epsilon=0.5, delta=0.0, at=IN_PERIOD))
    return ids


def _bundle(store, catalog, *, tenants=(TENANT,), secret: str = SECRET):
    with store.read() as session:
        return build_bundle(session, catalog, tenants=list(tenants), start=JAN, end=JUN,
                            secret=secret, generated_at=NOW, generated_by="test")


def _member(bundle, name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(bundle.data)).read(name)


def _rows(bundle, name: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(_member(bundle, name).decode())))


# --- what a bundle holds ------------------------------------------------------------------------


def test_the_bundle_holds_the_periods_releases_with_digests_and_cost(store, catalog, records):
    """releases.csv: the tenant's releases made in the period, with digest and ε/δ charged."""
    bundle = _bundle(store, catalog)
    [row] = _rows(bundle, "releases.csv")
    assert row["release_id"] == records["release"]
    assert (row["digest"], row["epsilon_charged"], row["delta_charged"], row["created_at"]) == (
        records["release"][:8] * 8, "0.5", "0.0", "2026-03-10T09:00:00")
    assert b'"value"' not in bundle.data  # never a released cell


def test_the_bundle_holds_exports_covering_the_tenant_and_their_approvals(store, catalog,
                                                                         records):
    """The tenant's exports and umbrella exports that covered it, with both approvals."""
    bundle = _bundle(store, catalog)
    exports = {r["export_id"]: r for r in _rows(bundle, "exports.csv")}
    assert set(exports) == {records["export"], records["umbrella"]}
    assert exports[records["umbrella"]]["umbrella"] == "yes"
    approvals = _rows(bundle, "approvals.csv")
    assert [(a["export_id"], a["approver"], a["decision"]) for a in approvals] == [
        (records["umbrella"], "admin.one@platform.demo", "approved"),
        (records["umbrella"], "admin.two@platform.demo", "approved")]


def test_the_bundle_holds_policy_versions_in_force_and_their_diff(store, catalog, records):
    """The version in force at the start and the one recorded during the period, with the
    diff between them; the later one is left out."""
    bundle = _bundle(store, catalog)
    versions = json.loads(_member(bundle, "policy/versions.json"))["versions"]
    assert [v["version"][:1] for v in versions] == ["a", "b"]
    assert [v["in_force_at_start"] for v in versions] == [True, False]
    diff = _member(bundle, f"policy/diffs/01-{'a' * 12}-{'b' * 12}.diff").decode()
    assert "-k = 5\n+k = 7" in diff
    settings = json.loads(_member(bundle, "policy/tenant_settings.json"))["versions"]
    assert [(s["version"], s["status"], s["overrides"]) for s in settings] == [
        (1, "active", {"k": 8})]


def test_the_bundle_summarises_the_audit_log_and_period_budgets(store, catalog, records):
    """Audit entries counted by month, action and outcome; the period's data months' budgets
    and what was drawn from them during the period."""
    bundle = _bundle(store, catalog)
    summary = [(r["month"], r["action"], r["outcome"], r["entries"])
               for r in _rows(bundle, "audit_summary.csv")]
    assert summary == [("2026-03", "page_view", "refused", "1"),
                       ("2026-03", "release", "allowed", "2"),
                       ("2026-05", "release", "allowed", "1")]
    [budget] = _rows(bundle, "budgets/period_budgets.csv")
    assert (budget["data_month"], budget["epsilon_spent"], budget["epsilon_cap"],
            budget["share_used"]) == ("2026-02", "1.5", "4.0", "0.3750")
    [charge] = _rows(bundle, "budgets/charges.csv")
    assert (charge["role"], charge["charges"], charge["epsilon"]) == ("policy_maker", "1", "0.5")


def test_the_manifest_lists_every_member_with_its_sha256_and_is_signed(store, catalog,
                                                                      records):
    """Every member but the manifest and its signature is listed with its SHA-256; the
    signature is by the deployment's key."""
    import hashlib

    bundle = _bundle(store, catalog)
    archive = zipfile.ZipFile(io.BytesIO(bundle.data))
    listed = {m["name"]: m["sha256"] for m in bundle.manifest["members"]}
    assert set(listed) == set(archive.namelist()) - {"manifest.json", "manifest.sig"}
    assert all(hashlib.sha256(archive.read(n)).hexdigest() == sha for n, sha in listed.items())
    assert bundle.manifest["signature"]["public_key"] == public_key(SECRET)
    assert bundle.manifest["signature"]["demo_key"] is False
    assert verify_bundle(bundle.data, public_key=public_key(SECRET)) == bundle.manifest


# --- verification -----------------------------------------------------------------------------


def _flip(data: bytes, offset: int) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 0x01
    return bytes(changed)


def _data_offset(data: bytes, info: zipfile.ZipInfo) -> int:
    header = data[info.header_offset:info.header_offset + 30]
    return info.header_offset + 30 + int.from_bytes(header[26:28], "little") + \
        int.from_bytes(header[28:30], "little")


def test_one_changed_byte_in_any_member_fails_naming_that_member(store, catalog, records):
    """For every member, flipping one byte of its content fails verification, and the
    message names the member (the manifest and signature: the signature fails)."""
    bundle = _bundle(store, catalog)
    key = public_key(SECRET)
    for info in zipfile.ZipFile(io.BytesIO(bundle.data)).infolist():
        offset = _data_offset(bundle.data, info) + info.file_size // 2
        with pytest.raises(EvidenceInvalid) as failure:
            verify_bundle(_flip(bundle.data, offset), public_key=key)
        assert info.filename in str(failure.value), (info.filename, str(failure.value))


def test_one_changed_byte_anywhere_fails_verification(store, catalog, records):
    """Any single byte changed anywhere — headers, central directory, content — is caught."""
    bundle = _bundle(store, catalog)
    key = public_key(SECRET)
    positions = random.Random(20).sample(range(len(bundle.data)), 150) + [
        0, len(bundle.data) - 1, len(bundle.data) - 22]
    for offset in positions:
        with pytest.raises(EvidenceInvalid):
            verify_bundle(_flip(bundle.data, offset), public_key=key)


def test_a_bundle_signed_by_another_key_does_not_verify(store, catalog, records):
    """Re-signed under another secret, the bundle fails against this deployment's key."""
    forged = _bundle(store, catalog, secret="another-secret-0123456789abcdef")
    with pytest.raises(EvidenceInvalid, match="signed with key .* not the expected"):
        verify_bundle(forged.data, public_key=public_key(SECRET))


def test_a_bundle_cannot_be_signed_without_a_secret(store, catalog):
    """No deployment secret: no bundle (fail closed), the variable named."""
    with pytest.raises(ConfigError, match="VEIL_SECRET"):
        _bundle(store, catalog, secret="")


# --- the compliance read and the command line -----------------------------------------------


def test_the_officer_downloads_their_tenants_bundle_and_it_is_audited(gate, store, records):
    """gate.compliance.evidence_bundle: the officer's tenant only, verifiable, audited with
    the bundle's SHA-256; another role is refused."""
    bundle = gate.compliance.evidence_bundle(principal(), start=JAN, end=JUN)
    assert bundle.manifest["tenants"] == [TENANT]
    assert bundle.name == f"veil-evidence-{TENANT}-2026-01-2026-06.zip"
    verify_bundle(bundle.data, public_key=gate.compliance.evidence_key(principal()))
    with store.read() as session:
        [entry] = session.scalars(select(AuditEntry).where(
            AuditEntry.target == "evidence_bundle")).all()
    assert entry.outcome == "allowed" and entry.detail["sha256"] == bundle.sha256
    with pytest.raises(AccessDenied):
        gate.compliance.evidence_bundle(principal("researcher"), start=JAN, end=JUN)
    with pytest.raises(InvalidInput, match="starts after it ends: 2026-06 > 2026-01"):
        gate.compliance.evidence_bundle(principal(), start=JUN, end=JAN)


def test_veil_evidence_writes_and_verifies_and_fails_after_one_byte(store, records, tmp_path,
                                                                   monkeypatch, capsys):
    """`veil evidence --from --to --out` writes a bundle that `veil evidence verify` accepts;
    after one byte of a member changes it exits 2 naming the member."""
    veil = cli(monkeypatch, capsys, store)
    out = tmp_path / "evidence.zip"
    status, printed, err = veil("evidence", "--from", "2026-01", "--to", "2026-06", "--tenant",
                                TENANT, "--out", str(out))
    assert status == 0, err
    assert f"{out} (" in printed and public_key(SECRET) in printed
    status, printed, err = veil("evidence", "verify", str(out))
    assert status == 0, err
    assert "verified" in printed
    data = out.read_bytes()
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("exports.csv")
    out.write_bytes(_flip(data, _data_offset(data, info) + 5))
    status, _, err = veil("evidence", "verify", str(out))
    assert status == 2 and "exports.csv" in err and "does not match" in err
    status, printed, _ = veil("evidence", "key")
    assert status == 0 and printed.strip() == public_key(SECRET)


def test_veil_evidence_refuses_a_malformed_period(store, tmp_path, monkeypatch, capsys):
    """A month that is not YYYY-MM is refused by the parser; a reversed period by the bundle."""
    veil = cli(monkeypatch, capsys, store)
    status, _, err = veil("evidence", "--from", "2026-06", "--to", "2026-01", "--out",
                          str(tmp_path / "x.zip"))
    assert status == 2 and "starts after it ends" in err
    assert not (tmp_path / "x.zip").exists()
    with pytest.raises(SystemExit):
        veil("evidence", "--from", "June", "--to", "2026-01", "--out", str(tmp_path / "x.zip"))
