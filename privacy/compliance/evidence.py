"""Evidence bundles (issue 20): one signed archive of what a compliance auditor asks for.

Owns building and verifying the archive for a period of whole months (UTC). It holds

    manifest.json            what the bundle is, and the SHA-256 and size of every member
    manifest.sig             the Ed25519 signature of manifest.json's exact bytes (64 bytes)
    README.txt               what each member is and how to verify the bundle
    policy/versions.json     the policy versions in force during the period (each file's SHA-256)
    policy/diffs/*.diff      unified diffs between consecutive versions of the period
    policy/tenant_settings.json   tenant privacy settings versions proposed, decided or in
                             force during the period, with who proposed and who decided
    releases.csv             the release log: ids, digests, ε/δ charged, policy, created_at
    exports.csv              export records: what, who, why, which policy, ε, file digest
    approvals.csv            decisions on those exports (umbrella approvals and rejections)
    audit_summary.csv        audit entries counted by month, action and outcome
    budgets/period_budgets.csv   lifetime budgets of the period's data months: ε/δ spent of cap
    budgets/charges.csv      ε/δ drawn during the period, per product, data month and role

It never holds a released cell, a record or an export file: digests and counts only.

**Signature.** Ed25519 (``cryptography``), the key derived from the deployment secret
(``VEIL_SECRET``) by HKDF-SHA256 with its own label, so it signs nothing else and the secret
itself never leaves the machine. Anyone holding the public key (``veil evidence key``) can
check a bundle; on a demo store the key comes from the public demo secret, which the manifest
says (``"demo_key": true``): such a bundle proves integrity, not origin.

**Verification** (``verify_bundle``) fails with a message naming what is wrong when the
signature does not hold, a member's bytes do not match their SHA-256 (or a member is missing
or extra), or the archive's own structure differs from the canonical one it was written as
(members stored uncompressed, in manifest order, with fixed times): so a change of any one byte
anywhere in the file is detected.

Part of the compliance service (``privacy.compliance.evidence``): reached by operators through
``veil evidence`` and by compliance officers through ``gate.compliance.evidence_bundle``.
Imported when first used (it loads ``cryptography``).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import struct
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from data.catalog import Catalog
from data.config import DEMO_SECRET
from data.errors import ConfigError, InvalidInput
from data.models import (
    AuditEntry,
    Export,
    ExportApproval,
    PeriodBudget,
    PeriodCharge,
    PolicySnapshot,
    TenantSettingsVersion,
)
from data.models import Release as ReleaseRow
from data.months import add_months, months_between

__all__ = ["Bundle", "EvidenceInvalid", "FORMAT", "build_bundle", "month_span", "public_key",
           "verify_bundle"]

FORMAT = "veil-evidence/1"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
_KEY_LABEL = b"veil evidence bundle signing key v1"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MAX_MONTHS = 60


class EvidenceInvalid(InvalidInput):
    """A bundle does not verify; the message names the member (or part) that fails."""


@dataclass(frozen=True)
class Bundle:
    name: str            # a file name for it: veil-evidence-<tenant>-<from>-<to>.zip
    data: bytes
    manifest: dict

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# --- the key ----------------------------------------------------------------------------------


def _private_key(secret: str) -> Ed25519PrivateKey:
    if not isinstance(secret, str) or len(secret) < 16:
        raise ConfigError("an evidence bundle is signed with a key derived from VEIL_SECRET, "
                          "which is missing or shorter than 16 characters; set VEIL_SECRET")
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_KEY_LABEL).derive(secret.encode("utf-8"))
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(secret: str) -> str:
    """The hex Ed25519 public key that checks bundles signed under ``secret``."""
    return _private_key(secret).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def public_key_pem(secret: str) -> str:
    return _private_key(secret).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# --- the period -------------------------------------------------------------------------------


def month_span(start: date, end: date) -> tuple[datetime, datetime]:
    """[first instant, first instant after] of the months ``start`` .. ``end`` (both included)."""
    for name, value in (("from", start), ("to", end)):
        if not isinstance(value, date) or isinstance(value, datetime) or value.day != 1:
            raise InvalidInput(f"the evidence period's {name} month must be a month (its first "
                               f"day), got {value!r}")
    if start > end:
        raise InvalidInput(f"the evidence period starts after it ends: {start:%Y-%m} > "
                           f"{end:%Y-%m}")
    months = months_between(start, end) + 1
    if months > MAX_MONTHS:
        raise InvalidInput(f"an evidence period covers at most {MAX_MONTHS} months, got "
                           f"{months} ({start:%Y-%m} – {end:%Y-%m})")
    after = add_months(end, 1)
    return datetime.combine(start, time()), datetime.combine(after, time())


# --- building ---------------------------------------------------------------------------------


def _csv(header: list[str], rows) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v.isoformat() if isinstance(v, (date, datetime))
                         else v for v in row])
    return out.getvalue().encode("utf-8")


def _json(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
            + "\n").encode("utf-8")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_bundle(session: Session, catalog: Catalog, *, tenants: list[str], start: date,
                 end: date, secret: str, generated_at: datetime,
                 generated_by: str) -> Bundle:
    """The signed evidence bundle of ``tenants`` for the months ``start`` .. ``end``."""
    key = _private_key(secret)  # fail closed before reading anything
    begin, after = month_span(start, end)
    for tenant in tenants:
        catalog.tenant(tenant)
    members: dict[str, bytes] = {}
    members.update(_policy_members(session, catalog, begin=begin, after=after))
    members["policy/tenant_settings.json"] = _tenant_settings(session, tenants, begin, after)
    members["releases.csv"] = _releases(session, tenants, begin, after)
    members.update(_exports(session, tenants, begin, after))
    members["audit_summary.csv"] = _audit_summary(session, tenants, begin, after)
    members.update(_budgets(session, tenants, start, end, begin, after))
    label = tenants[0] if len(tenants) == 1 else "all-tenants"
    manifest = {
        "format": FORMAT,
        "tenants": sorted(tenants),
        "period": {"from": f"{start:%Y-%m}", "to": f"{end:%Y-%m}",
                   "start": begin.isoformat(), "end_before": after.isoformat()},
        "generated_at": generated_at.isoformat(),
        "generated_by": generated_by,
        "policy_version": catalog.version,
        "signature": {"algorithm": "Ed25519", "member": SIGNATURE,
                      "public_key": key.public_key().public_bytes(
                          serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex(),
                      "demo_key": secret == DEMO_SECRET},
        "members": [],
    }
    readme = _readme(manifest)
    ordered = {"README.txt": readme, **members}
    manifest["members"] = [{"name": name, "sha256": _sha(data), "bytes": len(data)}
                           for name, data in ordered.items()]
    manifest_bytes = _json(manifest)
    signature = key.sign(manifest_bytes)
    data = _write_zip([(MANIFEST, manifest_bytes), (SIGNATURE, signature),
                       *ordered.items()])
    return Bundle(name=f"veil-evidence-{label}-{start:%Y-%m}-{end:%Y-%m}.zip", data=data,
                  manifest=manifest)


def _write_zip(entries) -> bytes:
    """The canonical archive: stored (uncompressed), in this order, with fixed times."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _readme(manifest: dict) -> bytes:
    period = manifest["period"]
    key = manifest["signature"]["public_key"]
    demo = ("\nThis bundle was signed with the DEMO key (the public demo secret): it proves "
            "the bundle is intact, not who made it.\n" if manifest["signature"]["demo_key"]
            else "")
    return f"""Veil evidence bundle ({FORMAT})
Tenants: {', '.join(manifest['tenants'])}
Period: {period['from']} to {period['to']} (UTC months, both included)
Generated: {manifest['generated_at']} by {manifest['generated_by']}
Signing key (Ed25519, hex): {key}
{demo}
Members
  manifest.json              every member's SHA-256 and size; signed
  manifest.sig               Ed25519 signature of manifest.json (64 raw bytes)
  policy/versions.json       policy versions in force during the period
  policy/diffs/*.diff        what changed between consecutive policy versions
  policy/tenant_settings.json  tenant privacy settings versions (k, budgets, levels)
  releases.csv               release log: id, digest, epsilon/delta charged, policy version
  exports.csv, approvals.csv export records and the decisions on them
  audit_summary.csv          audit entries counted by month, action and outcome
  budgets/period_budgets.csv lifetime budget of each data month of the period
  budgets/charges.csv        epsilon/delta drawn during the period, by product, month and role

Verify
  veil evidence verify FILE [--public-key HEX]
checks the signature against the deployment's key (or the key given), every member's SHA-256,
and that the archive is byte for byte as written. By hand: compare each member's
`sha256sum` with manifest.json, and check the signature, e.g. with OpenSSL 3 and the key from
`veil evidence key --pem` saved as key.pem:
  openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in manifest.json -sigfile manifest.sig
""".encode("utf-8")


def _policy_members(session: Session, catalog: Catalog, *, begin: datetime,
                    after: datetime) -> dict[str, bytes]:
    snapshots = session.execute(
        select(PolicySnapshot.version, PolicySnapshot.recorded_at, PolicySnapshot.files)
        .where(PolicySnapshot.recorded_at < after)
        .order_by(PolicySnapshot.recorded_at, PolicySnapshot.version)).all()
    # the version in force when the period began, and every version recorded during it
    before = [s for s in snapshots if s.recorded_at < begin]
    during = [s for s in snapshots if s.recorded_at >= begin]
    chosen = before[-1:] + during
    versions = [{"version": s.version, "recorded_at": s.recorded_at.isoformat(),
                 "in_force_at_start": s.recorded_at < begin,
                 "current": s.version == catalog.version,
                 "files": {name: _sha(text.encode("utf-8"))
                           for name, text in sorted(s.files.items())}} for s in chosen]
    out = {"policy/versions.json": _json({"versions": versions})}
    for i, (old, new) in enumerate(zip(chosen, chosen[1:]), start=1):
        lines = []
        for name in sorted(set(old.files) | set(new.files)):
            a, b = old.files.get(name), new.files.get(name)
            if a == b:
                continue
            lines += difflib.unified_diff(
                (a or "").splitlines(), (b or "").splitlines(),
                fromfile=f"{old.version[:12]}/{name}" if a is not None else "/dev/null",
                tofile=f"{new.version[:12]}/{name}" if b is not None else "/dev/null",
                lineterm="")
        out[f"policy/diffs/{i:02d}-{old.version[:12]}-{new.version[:12]}.diff"] = (
            "\n".join(lines) + "\n").encode("utf-8")
    return out


def _tenant_settings(session: Session, tenants: list[str], begin: datetime,
                     after: datetime) -> bytes:
    rows = session.scalars(
        select(TenantSettingsVersion).where(TenantSettingsVersion.tenant_id.in_(tenants),
                                            TenantSettingsVersion.proposed_at < after)
        .order_by(TenantSettingsVersion.tenant_id, TenantSettingsVersion.version)).all()
    chosen = []
    for tenant in sorted(tenants):
        mine = [r for r in rows if r.tenant_id == tenant]
        in_force = [r for r in mine if r.status in ("active", "superseded")
                    and (r.decided_at or r.proposed_at) < begin]
        keep = {r.id for r in in_force[-1:]}
        keep |= {r.id for r in mine if r.proposed_at >= begin
                 or (r.decided_at is not None and begin <= r.decided_at < after)}
        chosen += [r for r in mine if r.id in keep]
    return _json({"versions": [{
        "tenant": r.tenant_id, "version": r.version, "status": r.status,
        "weakens": bool(r.weakens), "base_version": r.base_version, "overrides": r.overrides,
        "changes": r.changes, "reason": r.reason, "proposed_by": r.proposed_by,
        "proposed_at": r.proposed_at, "decided_by": r.decided_by, "decided_at": r.decided_at,
        "decision_reason": r.decision_reason} for r in chosen],
        "note": "version 0 is the catalog's policy itself and is never stored"})


def _releases(session: Session, tenants: list[str], begin: datetime, after: datetime) -> bytes:
    rows = session.execute(
        select(ReleaseRow.id, ReleaseRow.created_at, ReleaseRow.tenant_id, ReleaseRow.principal,
               ReleaseRow.role, ReleaseRow.product_id, ReleaseRow.query,
               ReleaseRow.policy_version, ReleaseRow.data_version, ReleaseRow.mechanism,
               ReleaseRow.epsilon, ReleaseRow.delta, ReleaseRow.digest, ReleaseRow.published)
        .where(ReleaseRow.tenant_id.in_(tenants), ReleaseRow.created_at >= begin,
               ReleaseRow.created_at < after)
        .order_by(ReleaseRow.created_at, ReleaseRow.id))
    return _csv(["release_id", "created_at", "tenant", "principal", "role", "product", "metric",
                 "level", "months", "policy_version", "data_version", "mechanism",
                 "epsilon_charged", "delta_charged", "digest", "published"],
                ((r.id, r.created_at, r.tenant_id, r.principal, r.role, r.product_id,
                  (r.query or {}).get("metric", ""), (r.query or {}).get("level", ""),
                  f"{str((r.query or {}).get('start', ''))[:7]}.."
                  f"{str((r.query or {}).get('end', ''))[:7]}",
                  r.policy_version, r.data_version, r.mechanism, repr(float(r.epsilon)),
                  repr(float(r.delta or 0.0)), r.digest, "yes" if r.published else "no")
                 for r in rows))


def _exports(session: Session, tenants: list[str], begin: datetime,
             after: datetime) -> dict[str, bytes]:
    # A tenant's exports, and umbrella exports of other tenants that covered its data.
    rows = [r for r in session.execute(
        select(Export.id, Export.created_at, Export.finished_at, Export.tenant_id,
               Export.requester, Export.role, Export.product_id, Export.kind, Export.scope,
               Export.purpose, Export.justification, Export.format, Export.umbrella,
               Export.status, Export.row_count, Export.epsilon, Export.policy_version,
               Export.digest, Export.error)
        .where(Export.created_at >= begin, Export.created_at < after,
               or_(Export.tenant_id.in_(tenants), Export.umbrella.is_(True)))
        .order_by(Export.created_at, Export.id))
        if r.tenant_id in tenants or set(r.scope or ()) & set(tenants)]
    exports = _csv(
        ["export_id", "requested_at", "finished_at", "tenant", "requester", "role", "product",
         "kind", "scope", "purpose", "justification", "format", "umbrella", "status", "rows",
         "epsilon_charged", "policy_version", "file_sha256", "error"],
        ((r.id, r.created_at, r.finished_at, r.tenant_id, r.requester, r.role, r.product_id,
          r.kind, " ".join(r.scope or ()), r.purpose, r.justification, r.format,
          "yes" if r.umbrella else "no", r.status, r.row_count, repr(float(r.epsilon or 0.0)),
          r.policy_version, r.digest, r.error) for r in rows))
    ids = [r.id for r in rows]
    decisions = []
    for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
        decisions += session.execute(
            select(ExportApproval.export_id, ExportApproval.approver, ExportApproval.role,
                   ExportApproval.decision, ExportApproval.reason, ExportApproval.at)
            .where(ExportApproval.export_id.in_(chunk))).all()
    decisions.sort(key=lambda d: (d.at, d.export_id, d.approver))
    approvals = _csv(["export_id", "approver", "role", "decision", "reason", "at"],
                     ((d.export_id, d.approver, d.role, d.decision, d.reason, d.at)
                      for d in decisions))
    return {"exports.csv": exports, "approvals.csv": approvals}


def _audit_summary(session: Session, tenants: list[str], begin: datetime,
                   after: datetime) -> bytes:
    counts: dict[tuple, int] = defaultdict(int)
    # Months one at a time keep the grouping portable (no dialect-specific date formatting).
    month = begin
    while month < after:
        following = datetime(month.year + month.month // 12, month.month % 12 + 1, 1)
        for tenant, action, outcome, n in session.execute(
                select(AuditEntry.tenant_id, AuditEntry.action, AuditEntry.outcome,
                       func.count())
                .where(AuditEntry.tenant_id.in_(tenants), AuditEntry.at >= month,
                       AuditEntry.at < following)
                .group_by(AuditEntry.tenant_id, AuditEntry.action, AuditEntry.outcome)):
            counts[(f"{month:%Y-%m}", tenant, action, outcome)] += int(n)
        month = following
    return _csv(["month", "tenant", "action", "outcome", "entries"],
                (list(k) + [n] for k, n in sorted(counts.items())))


def _budgets(session: Session, tenants: list[str], start: date, end: date, begin: datetime,
             after: datetime) -> dict[str, bytes]:
    budgets = session.execute(
        select(PeriodBudget.tenant_id, PeriodBudget.product_id, PeriodBudget.period,
               PeriodBudget.spent, PeriodBudget.cap, PeriodBudget.viewer_spent,
               PeriodBudget.delta_spent, PeriodBudget.delta_cap)
        .where(PeriodBudget.tenant_id.in_(tenants), PeriodBudget.period >= start,
               PeriodBudget.period <= end)
        .order_by(PeriodBudget.tenant_id, PeriodBudget.product_id, PeriodBudget.period))
    periods = _csv(["tenant", "product", "data_month", "epsilon_spent", "epsilon_cap",
                    "share_used", "viewer_epsilon_spent", "delta_spent", "delta_cap"],
                   ((b.tenant_id, b.product_id, f"{b.period:%Y-%m}", repr(float(b.spent)),
                     repr(float(b.cap)),
                     f"{(b.spent / b.cap if b.cap else 0.0):.4f}",
                     repr(float(b.viewer_spent or 0.0)), repr(float(b.delta_spent or 0.0)),
                     repr(float(b.delta_cap or 0.0))) for b in budgets))
    charges = session.execute(
        select(PeriodBudget.tenant_id, PeriodBudget.product_id, PeriodBudget.period,
               PeriodCharge.role, func.count(PeriodCharge.id), func.sum(PeriodCharge.epsilon),
               func.sum(PeriodCharge.delta))
        .join(PeriodBudget, PeriodCharge.budget_id == PeriodBudget.id)
        .where(PeriodBudget.tenant_id.in_(tenants), PeriodCharge.at >= begin,
               PeriodCharge.at < after)
        .group_by(PeriodBudget.tenant_id, PeriodBudget.product_id, PeriodBudget.period,
                  PeriodCharge.role)
        .order_by(PeriodBudget.tenant_id, PeriodBudget.product_id, PeriodBudget.period,
                  PeriodCharge.role))
    drawn = _csv(["tenant", "product", "data_month", "role", "charges", "epsilon", "delta"],
                 ((c[0], c[1], f"{c[2]:%Y-%m}", c[3], int(c[4]), repr(float(c[5] or 0.0)),
                   repr(float(c[6] or 0.0))) for c in charges))
    return {"budgets/period_budgets.csv": periods, "budgets/charges.csv": drawn}


# --- verifying --------------------------------------------------------------------------------


def _raw_member(data: bytes, info: zipfile.ZipInfo) -> bytes:
    """A stored member's bytes as they are in the file (no CRC check: we hash them instead)."""
    offset = info.header_offset
    header = data[offset:offset + 30]
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise EvidenceInvalid(f"{info.filename}: its zip header is damaged")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    local_name = data[offset + 30:offset + 30 + name_length]
    if local_name != info.filename.encode("utf-8"):
        raise EvidenceInvalid(f"{info.filename}: its zip header names it differently "
                              f"({local_name!r})")
    begin = offset + 30 + name_length + extra_length
    if info.compress_type != zipfile.ZIP_STORED:
        raise EvidenceInvalid(f"{info.filename}: compressed, but a Veil bundle stores every "
                              f"member as written")
    return data[begin:begin + info.compress_size]


def verify_bundle(data: bytes, *, public_key: str | None = None) -> dict:
    """The bundle's manifest if it verifies; EvidenceInvalid naming what fails otherwise.

    ``public_key`` (hex Ed25519) is the key the bundle must be signed with; None accepts the
    key the manifest names (integrity only: anyone can sign with their own key).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise EvidenceInvalid(f"not a readable zip archive ({exc}): the file is damaged or "
                              f"is not an evidence bundle") from None
    infos = archive.infolist()
    names = [i.filename for i in infos]
    for required in (MANIFEST, SIGNATURE):
        if names.count(required) != 1:
            raise EvidenceInvalid(f"{required}: {'missing' if required not in names else 'twice'}"
                                  f" in the archive")
    by_name = {i.filename: i for i in infos}
    raw = {}
    for info in infos:
        if names.count(info.filename) != 1:
            raise EvidenceInvalid(f"{info.filename}: more than once in the archive")
        raw[info.filename] = _raw_member(data, info)
    manifest_bytes, signature = raw[MANIFEST], raw[SIGNATURE]
    try:
        manifest = json.loads(manifest_bytes)
        signed_with = manifest["signature"]["public_key"]
        listed = [(m["name"], m["sha256"], int(m["bytes"])) for m in manifest["members"]]
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise EvidenceInvalid(f"{MANIFEST}: not a Veil evidence manifest ({exc})") from None
    expected = public_key or signed_with
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(expected))
    except ValueError:
        raise EvidenceInvalid(f"the public key {expected!r} is not a hex Ed25519 key") from None
    if public_key is not None and signed_with != public_key:
        raise EvidenceInvalid(f"{MANIFEST}: says it was signed with key {signed_with[:16]}…, "
                              f"not the expected {public_key[:16]}…")
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise EvidenceInvalid(f"{MANIFEST} / {SIGNATURE}: the signature does not match: the "
                              f"manifest or its signature was changed") from None
    known = {MANIFEST, SIGNATURE}
    for name, sha, size in listed:
        if name not in raw:
            raise EvidenceInvalid(f"{name}: listed in the manifest but missing from the archive")
        if _sha(raw[name]) != sha or len(raw[name]) != size:
            raise EvidenceInvalid(f"{name}: its content does not match the SHA-256 in the "
                                  f"signed manifest: the member was changed")
        known.add(name)
    extra = [n for n in names if n not in known]
    if extra:
        raise EvidenceInvalid(f"{extra[0]}: in the archive but not in the signed manifest")
    canonical = _write_zip([(MANIFEST, manifest_bytes), (SIGNATURE, signature),
                            *((name, raw[name]) for name, _, _ in listed)])
    if canonical != data:
        where = _first_difference(canonical, data)
        part = "the zip's central directory"
        for info in sorted(infos, key=lambda i: i.header_offset):
            if info.header_offset <= where:
                part = f"{info.filename} (its zip header)"
        if where >= min((by_name[n].header_offset for n in names), default=0) and \
                where >= _central_directory_offset(data):
            part = "the zip's central directory"
        raise EvidenceInvalid(f"{part}: the archive differs from the one written at byte "
                              f"{where:,}, though every member's content matches")
    return manifest


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _central_directory_offset(data: bytes) -> int:
    end = data.rfind(b"PK\x05\x06")
    if end < 0 or end + 20 > len(data):
        return len(data)
    return struct.unpack("<I", data[end + 16:end + 20])[0]
