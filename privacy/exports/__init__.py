"""Safe exports (SPEC D6): requests with a coded purpose, a background worker, signed links.

A service beside the gate, reached as ``gate.exports``, written only against the gate core's
public surface (``privacy.core``). Owns an export from its request to its download::

    request ──► pending ──(two approvals: umbrella only)──► queued ──► running ──► done | failed
                   └──► rejected

- **Request** (``_requests``). A product and a query (an aggregate ``Query`` or a
  ``RecordQuery``), CSV or Parquet, a purpose from the policy's coded list (mandatory) and an
  optional justification (``_values.ExportRequest``). It is checked now as the gate will check
  it at run time — role, level (aggregates only at a noisy level: the gate releases no exact
  aggregate), fields, window, and the ε budget through ``gate.preview`` — and refused early,
  spending nothing.
- **Worker** (``_worker``; ``run_worker``: a thread of the dashboard, or ``veil
  export-worker``). It claims a queued job with a conditional UPDATE and holds it by a lease
  that every progress update renews. Aggregates go through ``gate.release`` (ε charged
  atomically and the release stored, so a retry reuses it at no cost); records through the
  role's field treatments (``privacy.core.stream_records``), streamed in chunks, never all in
  memory. The file (``_writers``) is written under a temporary name, renamed, and its SHA-256
  recorded in the same transaction that marks the job done. A job whose worker died is claimed
  again once its lease has run out — at most ``max_attempts`` times, then failed.
- **Umbrella exports** (``_approvals``; every tenant) run only after two distinct approvers
  with the approver role (never the requester) said yes; each tenant's part is released under a
  per-tenant system principal, so each tenant's own budget pays for it.
- **Download** (``_links``) only through a signed link: HMAC-SHA256 over (export id,
  requester, tenant, expiry) keyed by the deployment secret, valid until the link expires, and
  only for the signed-in requester. Expired files are deleted; their records stay.

Every step is audited (``export_request``, ``export_approve``, ``export_reject``,
``export_start``, ``export_retry``, ``export_finish``, ``export_fail``, ``export_download``,
``export_link``). It never writes a value that has not passed the gate, and never serves a file
to anyone but its requester within its link's lifetime.
"""

from __future__ import annotations

from privacy.exports._approvals import _Approvals
from privacy.exports._links import _Links
from privacy.exports._requests import _Requests
from privacy.exports._values import (ACTIVE, FORMATS, DownloadLink, ExportFile, ExportRequest,
                                     ExportStatus, PendingApproval)
from privacy.exports._worker import _Worker

__all__ = ["ACTIVE", "DownloadLink", "ExportFile", "ExportRequest", "ExportStatus", "Exports",
           "FORMATS", "PendingApproval"]


class Exports(_Requests, _Links, _Approvals, _Worker):
    """Safe exports (see the package docstring): ``Exports(gate, store, catalog, secret=…,
    clock=…)``, where ``gate`` is the core gate and ``secret`` the one it was built with."""
