"""Signed download links: HMAC-SHA256 over (export id, requester, tenant, expiry) under a key of
its own derived from the deployment secret, verified for the signed-in requester only, and the
download itself checked against the file's recorded SHA-256. Every refusal is audited with the
token cut short (enough to recognise it, never to use it).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from data.errors import AccessDenied, QueryRefused, StoreError, VeilError
from data.models import Export

from privacy.core import Principal, audit
from privacy.exports._base import _ExportsBase
from privacy.exports._values import DownloadLink, ExportFile, ExportStatus

__all__ = ["_Links"]

_LINK_CONTEXT = b"veil export download link v1"


class _Links(_ExportsBase):
    @cached_property
    def _link_key(self) -> bytes:
        # A key of its own, derived from the deployment secret: a link signature can never be
        # confused with a pseudonym keyed by the same secret.
        return hmac.new(self._secret.encode(), _LINK_CONTEXT, hashlib.sha256).digest()

    def link(self, principal: Principal, export_id: str) -> DownloadLink:
        """The signed download link of one of the principal's finished exports."""
        status = self._own(principal, export_id, action="export_link")
        if status.status != "done":
            raise QueryRefused(f"export {export_id[:8]} is {status.status}; a download link "
                               f"exists once it is done")
        if status.purged or status.link_expires_at is None or (
                self._now() >= status.link_expires_at):
            raise QueryRefused(f"the download link of export {export_id[:8]} expired at "
                               f"{status.link_expires_at:%Y-%m-%d %H:%M} UTC and its file was "
                               f"deleted; request the export again")
        expiry = _timestamp(status.link_expires_at)
        signature = self._sign(status.id, status.requester, status.tenant, expiry)
        return DownloadLink(export_id=status.id, token=f"{status.id}.{expiry}.{signature}",
                            expires_at=status.link_expires_at)

    def open_link(self, principal: Principal, token: str) -> ExportStatus:
        """Verify a download link for the signed-in principal; refusals are audited."""
        row = self._verify(principal, token, action="export_link")
        return self._to_status(row, approvals=())

    def download(self, principal: Principal, token: str) -> ExportFile:
        """The file behind a verified link, checked against its recorded digest; audited."""
        row = self._verify(principal, token, action="export_download")
        path = Path(row.file_path)
        try:
            content = path.read_bytes()
        except OSError as exc:
            self._refuse_download(principal, row.id, "file unreadable", str(exc))
            raise StoreError(f"the file of export {row.id[:8]} cannot be read on the server; "
                             f"request the export again") from exc
        digest = hashlib.sha256(content).hexdigest()
        if not hmac.compare_digest(digest, row.digest or ""):
            self._refuse_download(principal, row.id, "digest mismatch", digest)
            raise StoreError(f"the file of export {row.id[:8]} does not match its recorded "
                             f"digest, so it was not served; request the export again")
        audit(self._store, principal=principal.subject, tenant=principal.tenant,
              role=principal.role, action="export_download", target=row.id, outcome="allowed",
              detail={"digest": digest, "bytes": len(content), "rows": row.row_count})
        status = self._to_status(row, approvals=())
        return ExportFile(export_id=row.id, mime=status.mime, content=content, digest=digest,
                          file_name=status.file_name)

    def _refuse_download(self, principal: Principal, export_id: str, reason: str,
                         detail: str) -> None:
        audit(self._store, principal=principal.subject, tenant=principal.tenant,
              role=principal.role, action="export_download", target=export_id,
              outcome="refused", detail={"reason": reason, "detail": detail[:200]})

    def _sign(self, export_id: str, requester: str, tenant: str, expiry: int) -> str:
        message = "\n".join((export_id, requester, tenant, str(expiry))).encode()
        mac = hmac.new(self._link_key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _verify(self, principal: Principal, token: str, *, action: str) -> Export:
        invalid = AccessDenied("This download link is not valid: it may have been altered or "
                               "cut short. Open it again from your list on the Exports page.")
        export_id = "unknown"
        try:
            parts = token.split(".") if isinstance(token, str) else []
            if len(parts) != 3 or not parts[1].isdigit() or len(token) > 200:
                raise _Refusal("malformed", invalid)
            export_id, expiry, signature = parts[0], int(parts[1]), parts[2]
            with self._store.read() as session:
                row = session.get(Export, export_id)
            if row is None:
                raise _Refusal("unknown export", invalid)
            expected = self._sign(row.id, row.requester, row.tenant_id, expiry)
            if not hmac.compare_digest(expected.encode(), signature.encode()):
                raise _Refusal("bad signature", invalid)
            expires = datetime.fromtimestamp(expiry, UTC).replace(tzinfo=None)
            if self._now() >= expires:
                raise _Refusal("expired", AccessDenied(
                    f"This download link expired at {expires:%Y-%m-%d %H:%M} UTC. Request the "
                    f"export again on the Exports page."))
            if principal.tenant != row.tenant_id:
                raise _Refusal("other tenant", AccessDenied(
                    "This download link belongs to another tenant's export. A link works only "
                    "for the person who requested the export, signed in to their tenant."))
            if principal.subject != row.requester:
                raise _Refusal("other principal", AccessDenied(
                    "This download link was issued to another person. A link works only for "
                    "the person who requested the export."))
            if row.status != "done" or row.purged_at is not None or not row.file_path:
                raise _Refusal("not available", QueryRefused(
                    f"export {row.id[:8]} has no file to download (it is {row.status}"
                    f"{', and its file was deleted' if row.purged_at else ''})."))
            return row
        except _Refusal as refusal:
            audit(self._store, principal=principal.subject, tenant=principal.tenant,
                  role=principal.role, action=action, target=export_id, outcome="refused",
                  detail={"reason": refusal.reason, "token": _redact(token)})
            raise refusal.error from None


class _Refusal(Exception):
    def __init__(self, reason: str, error: VeilError):
        super().__init__(reason)
        self.reason, self.error = reason, error


def _timestamp(moment: datetime) -> int:
    return calendar.timegm(moment.timetuple())


def _redact(token) -> str:
    """Enough of a token to recognise it in the audit log, never enough to use it."""
    return str(token)[:48]
