"""The export service's value objects: what a requester asks for and what it gets back.

Owns the request (``ExportRequest``: query, coded purpose, format, justification, umbrella),
checked where it is built so a bad one never reaches a store, and the frozen views of an export
(``ExportStatus``), of an umbrella export awaiting approvers (``PendingApproval``), of a signed
link (``DownloadLink``) and of a served file (``ExportFile``). Holds no state and reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from data.errors import InvalidInput, brief, checked_text

from privacy.core import Epsilon, Query, RecordQuery

__all__ = ["ACTIVE", "DownloadLink", "ExportFile", "ExportRequest", "ExportStatus", "FORMATS",
           "PendingApproval"]

FORMATS = {"csv": ("text/csv", "csv"), "parquet": ("application/vnd.apache.parquet", "parquet")}
#: An export is still under way in these states; the page keeps refreshing while one is.
ACTIVE = ("pending", "queued", "running")
_MAX_JUSTIFICATION = 2000


@dataclass(frozen=True)
class ExportRequest:
    """What to export, in which format, and why. ``purpose`` is a code from the policy."""

    query: Query | RecordQuery
    purpose: str
    format: str = "csv"
    justification: str = ""
    umbrella: bool = False

    def __post_init__(self):
        if not isinstance(self.query, (Query, RecordQuery)):
            raise InvalidInput(f"an export needs a Query (aggregates) or a RecordQuery "
                               f"(records), got {type(self.query).__name__}")
        if not isinstance(self.purpose, str) or not self.purpose.strip():
            raise InvalidInput("An export needs a purpose: choose one from the coded list of "
                               "purposes (the justification alone is not enough).")
        checked_text("the purpose", self.purpose, limit=64)
        if not isinstance(self.format, str) or self.format not in FORMATS:
            raise InvalidInput(f"export format must be one of {sorted(FORMATS)}, "
                               f"got {brief(self.format)}")
        if not isinstance(self.justification, str):
            raise InvalidInput(f"the justification must be text, got {brief(self.justification)}")
        if len(self.justification) > _MAX_JUSTIFICATION:
            raise InvalidInput(f"the justification is limited to {_MAX_JUSTIFICATION} "
                               f"characters, got {len(self.justification)}")
        if any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in self.justification):
            raise InvalidInput("the justification holds a NUL or an unpaired surrogate")
        if self.umbrella and isinstance(self.query, RecordQuery):
            raise InvalidInput("umbrella (cross-tenant) exports are aggregates only: records "
                               "never leave their tenant")

    @property
    def product(self) -> str:
        return self.query.product


@dataclass(frozen=True)
class ExportStatus:
    """An export as its requester (or the compliance page) sees it."""

    id: str
    tenant: str
    requester: str
    role: str
    product: str
    kind: str                       # aggregate | records
    summary: str                    # the query in words
    format: str
    purpose: str
    purpose_title: str
    justification: str
    umbrella: bool
    scope: tuple[str, ...]          # tenants the file covers
    status: str                     # pending | queued | running | done | failed | rejected
    progress: float                 # 0 … 1
    row_count: int | None
    digest: str | None              # SHA-256 of the delivered file
    size_bytes: int | None
    epsilon: Epsilon                # ε charged for this export (0 for records)
    masking: dict[str, str]         # field → treatment applied
    policy_version: str
    approvals: tuple[str, ...]      # approvers so far (umbrella)
    approvals_needed: int
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    link_expires_at: datetime | None
    purged: bool
    releases: tuple[str, ...] = field(default=())

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def file_name(self) -> str:
        return f"veil-{self.product}-{self.id[:8]}.{FORMATS[self.format][1]}"

    @property
    def mime(self) -> str:
        return FORMATS[self.format][0]


@dataclass(frozen=True)
class PendingApproval:
    """An umbrella export waiting for approvers (shown on the admin page's approvals queue)."""

    id: str
    requester: str
    tenant: str                     # the requester's tenant
    product: str
    query_summary: str
    purpose: str
    purpose_title: str
    justification: str
    scope: tuple[str, ...]
    created_at: datetime
    approvals: tuple[str, ...]      # who approved so far
    needed: int


@dataclass(frozen=True)
class DownloadLink:
    """A signed, time-bound link to an export's file, for its requester only."""

    export_id: str
    token: str
    expires_at: datetime            # naive UTC

    @property
    def path(self) -> str:
        """The app-relative URL: the Exports page verifies the token and offers the file."""
        return f"exports?download={self.token}"


@dataclass(frozen=True)
class ExportFile:
    export_id: str
    file_name: str
    mime: str
    content: bytes
    digest: str
