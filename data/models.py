"""The schema: every table Veil keeps, as typed SQLAlchemy 2.0 models.

Owns table shapes only. Record tables hold de-identified rows: subjects appear as keyed
pseudonyms, never raw ids; time is floored to 15 minutes; places are H3 resolution-7 cells or
district codes, never coordinates. Aggregate cubes are what the privacy gate reads. State that
matters (budgets, releases, audit, exports) lives here, never in a UI session.

Times are naive UTC ``DateTime`` columns: the embedded store has no time-zone type, and one
convention everywhere is safer than two.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AuditEntry",
    "Base",
    "BudgetAccount",
    "BudgetEntry",
    "ConsentEvent",
    "ConsentVersion",
    "CubeMonthly",
    "CubePending",
    "RetentionPurge",
    "DataProduct",
    "EducationEvent",
    "EventVersion",
    "Export",
    "ExportApproval",
    "GeoArea",
    "GeoCell",
    "HealthEvent",
    "IngestBatch",
    "IngestSource",
    "JobRun",
    "LocalAccount",
    "ProductVersion",
    "QuarantinedRow",
    "Registration",
    "Release",
    "ReleasePeriod",
    "RoleMapping",
    "SignIn",
    "SocialEvent",
    "Subject",
    "SubjectConsent",
    "Tenant",
    "VERTICAL_EVENT_MODELS",
]

# Short, bounded string widths shared by several tables.
TENANT = String(32)
PRODUCT = String(64)
PSEUDONYM = String(32)
GEO = String(16)
H3 = String(15)


class Base(DeclarativeBase):
    pass


# --- tenants, identity ----------------------------------------------------------------------


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(TENANT, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class RoleMapping(Base):
    """Identity claim → (role, tenant). Unknown identities match nothing and get no access."""

    __tablename__ = "role_mappings"
    __table_args__ = (UniqueConstraint("claim", "value", name="uq_role_mapping_claim_value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    claim: Mapped[str] = mapped_column(String(16))  # email | sub | group
    value: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(256))


class LocalAccount(Base):
    """Demo identity source: a username and an argon2 hash. Role comes from RoleMapping."""

    __tablename__ = "local_accounts"

    username: Mapped[str] = mapped_column(String(256), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class SignIn(Base):
    """One browser sign-in through the identity provider, kept so that its end holds.

    Streamlit's identity cookie carries the ID token's claims and nothing on the server knows
    of it; this row does. ``id`` is a hash of the claims that make the sign-in unique (issuer,
    ``sub``, ``iat``, ``nonce``), so a copied cookie finds the same row. Sign-out and expiry set
    ``ended_at``; a cookie whose row has ended is refused. ``issued_at``/``expires_at`` are the
    token's (wall-clock) times, ``started_at``/``ended_at`` the store's, as in the audit log.
    """

    __tablename__ = "sign_ins"
    __table_args__ = (Index("ix_sign_ins_subject", "subject", "source"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(256))  # the canonical subject
    source: Mapped[str] = mapped_column(String(16))    # oidc
    issuer: Mapped[str] = mapped_column(String(256))
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: signed out | expired
    ended_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)


# --- catalog mirror, geography ----------------------------------------------------------------


class DataProduct(Base):
    """Catalog products mirrored into the store so that foreign keys and joins can use them."""

    __tablename__ = "data_products"

    id: Mapped[str] = mapped_column(PRODUCT, primary_key=True)
    vertical: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(128))
    policy_version: Mapped[str] = mapped_column(String(64))


class GeoArea(Base):
    """A state or district with its real centroid; the parent of a district is its state."""

    __tablename__ = "geo_areas"

    code: Mapped[str] = mapped_column(GEO, primary_key=True)
    level: Mapped[str] = mapped_column(String(16))  # state | district
    name: Mapped[str] = mapped_column(String(64))
    parent_code: Mapped[str | None] = mapped_column(GEO, nullable=True)
    lat: Mapped[float] = mapped_column(Float)
    lng: Mapped[float] = mapped_column(Float)


class GeoCell(Base):
    """An H3 resolution-7 cell and the district it belongs to."""

    __tablename__ = "geo_cells"

    h3_cell: Mapped[str] = mapped_column(H3, primary_key=True)
    district: Mapped[str] = mapped_column(ForeignKey("geo_areas.code"), index=True)


# --- subjects and consent --------------------------------------------------------------------


class Subject(Base):
    __tablename__ = "subjects"

    tenant_id: Mapped[str] = mapped_column(TENANT, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(PSEUDONYM, primary_key=True)
    district: Mapped[str] = mapped_column(GEO)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ConsentEvent(Base):
    """Append-only consent history: every grant and withdrawal with its time."""

    __tablename__ = "consent_events"
    # grants and withdrawals per month for the compliance page, without a table scan
    __table_args__ = (Index("ix_consent_events_tenant_at", "tenant_id", "at", "vertical",
                            "status"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    pseudonym: Mapped[str] = mapped_column(PSEUDONYM)
    vertical: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # granted | withdrawn
    at: Mapped[datetime] = mapped_column(DateTime)


class SubjectConsent(Base):
    """Current consent per subject and vertical (the latest ConsentEvent)."""

    __tablename__ = "subject_consent"
    # The gate asks "latest withdrawal per tenant and vertical" before every fresh release.
    __table_args__ = (Index("ix_subject_consent_withdrawals", "tenant_id", "vertical", "status",
                            "changed_at"),)

    tenant_id: Mapped[str] = mapped_column(TENANT, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(PSEUDONYM, primary_key=True)
    vertical: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime] = mapped_column(DateTime)


class EventVersion(Base):
    """One row per event table counting the statements that changed it: on PostgreSQL a
    statement trigger (migration 0022, ``ENABLE ALWAYS``) adds one in the changing transaction,
    whoever writes — an ingestion, a retention purge, a tool behind Veil's back, a replication
    session. An ingestion run reuses the stored counts per subject-day it read (or stored) in
    earlier chunks while the counter of its table has moved only by its own inserts
    (``data.ingest._count_cache``). On the embedded store the rows stay 0: SQLite's ``PRAGMA
    data_version`` tells the same."""

    __tablename__ = "event_versions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class ConsentVersion(Base):
    """One row counting the statements that changed ``subject_consent``: on PostgreSQL a
    statement trigger (migrations 0020, 0021) adds one in the changing transaction, whoever
    writes — Veil or anyone behind its back, replication sessions included. Ingestion reuses the consent answers of a run's earlier
    chunks while it has not moved (``data.ingest._consent_cache``). On the embedded store it
    stays 0: SQLite's ``PRAGMA data_version`` tells the same, for every table."""

    __tablename__ = "consent_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


# --- record stores ---------------------------------------------------------------------------


class _VerticalEvent:
    """Columns shared by the per-vertical event tables (de-identified at ingestion)."""

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    product_id: Mapped[str] = mapped_column(PRODUCT)
    event_type: Mapped[str] = mapped_column(String(32))
    pseudonym: Mapped[str] = mapped_column(PSEUDONYM)
    ts: Mapped[datetime] = mapped_column(DateTime)  # floored to 15 minutes, UTC
    day: Mapped[date] = mapped_column(Date)
    month: Mapped[date] = mapped_column(Date)  # first day of the month, for cube builds
    h3_cell: Mapped[str] = mapped_column(H3)
    district: Mapped[str] = mapped_column(GEO)
    age_bucket: Mapped[str] = mapped_column(String(8))
    gender: Mapped[str] = mapped_column(String(8))
    category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)


class HealthEvent(_VerticalEvent, Base):
    __tablename__ = "health_events"


class EducationEvent(_VerticalEvent, Base):
    __tablename__ = "education_events"


class SocialEvent(_VerticalEvent, Base):
    __tablename__ = "social_events"


VERTICAL_EVENT_MODELS = {
    "health": HealthEvent,
    "education": EducationEvent,
    "social_protection": SocialEvent,
}


class Registration(Base):
    """Operational record list: beneficiary registrations awaiting or past verification."""

    __tablename__ = "registrations"
    __table_args__ = (Index("ix_registrations_status", "tenant_id", "status", "agent_code"),)

    registration_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    pseudonym: Mapped[str] = mapped_column(PSEUDONYM)
    registered_at: Mapped[datetime] = mapped_column(DateTime)
    district: Mapped[str] = mapped_column(GEO)
    agent_code: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # verified | unverified
    birth_date: Mapped[date] = mapped_column(Date)  # quasi-identifier: case workers only
    gender: Mapped[str] = mapped_column(String(8))
    household_size: Mapped[int] = mapped_column(Integer)


class QuarantinedRow(Base):
    """A rejected input row, kept with its reason and source position. Nothing is lost."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    product_id: Mapped[str] = mapped_column(PRODUCT)
    source: Mapped[str] = mapped_column(String(512))
    position: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(512))
    raw: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime)


# --- aggregates ------------------------------------------------------------------------------


class CubeMonthly(Base):
    """Aggregate cube: metric × month × H3 cell × age bucket × gender × category.

    Built from consenting subjects' bounded events only; ``value_sum`` is clamped to the
    metric's declared bounds at build time.
    """

    __tablename__ = "cube_monthly"
    __table_args__ = (
        # A metric's months, whatever else is filtered: tenant series, maps of one month.
        Index("ix_cube_lookup", "tenant_id", "product_id", "metric", "period"),
        # The dimensions pages filter on, then the months (issue 18): a category and an area of
        # a 12-month series is a seek, not a read of every cell of the metric's months.
        Index("ix_cube_dims", "tenant_id", "product_id", "metric", "category", "district",
              "period"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    product_id: Mapped[str] = mapped_column(PRODUCT)
    metric: Mapped[str] = mapped_column(String(64))
    period: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(GEO)
    district: Mapped[str] = mapped_column(GEO)
    h3_cell: Mapped[str] = mapped_column(H3)
    age_bucket: Mapped[str] = mapped_column(String(8))
    gender: Mapped[str] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(32))
    n_events: Mapped[int] = mapped_column(Integer)
    value_sum: Mapped[float] = mapped_column(Float)


class ProductVersion(Base):
    """Data version per tenant and product, bumped by every successful materialisation."""

    __tablename__ = "product_versions"

    tenant_id: Mapped[str] = mapped_column(TENANT, primary_key=True)
    product_id: Mapped[str] = mapped_column(PRODUCT, primary_key=True)
    data_version: Mapped[int] = mapped_column(Integer)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime)
    cube_rows: Mapped[int] = mapped_column(Integer)


class JobRun(Base):
    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(32))  # materialize | ingest | demo | export
    tenant_id: Mapped[str | None] = mapped_column(TENANT, nullable=True)
    product_id: Mapped[str | None] = mapped_column(PRODUCT, nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


# --- privacy state ---------------------------------------------------------------------------


class BudgetAccount(Base):
    """ε and δ budget of one principal for one product in one refresh window."""

    __tablename__ = "budget_accounts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "principal", "product_id", "window_start",
                         name="uq_budget_account"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    principal: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    product_id: Mapped[str] = mapped_column(PRODUCT)
    window_start: Mapped[date] = mapped_column(Date)
    window_end: Mapped[date] = mapped_column(Date)
    cap: Mapped[float] = mapped_column(Float)
    spent: Mapped[float] = mapped_column(Float)  # committed + reserved
    #: δ cap and δ spent (committed + reserved): Gaussian-noise releases spend δ
    delta_cap: Mapped[float] = mapped_column(Float, server_default="0")
    delta_spent: Mapped[float] = mapped_column(Float, server_default="0")


class BudgetEntry(Base):
    """One reservation against an account: reserved → committed, or reserved → refunded."""

    __tablename__ = "budget_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("budget_accounts.id"), index=True)
    release_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float, server_default="0")
    state: Mapped[str] = mapped_column(String(16))  # reserved | committed | refunded
    created_at: Mapped[datetime] = mapped_column(DateTime)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class PeriodBudget(Base):
    """The lifetime (ε, δ) of one month of one product's data in one tenant, shared by every
    release that reads that month: any principal, role, export or publication (issue 16).

    Months are disjoint in the data (the privacy unit is within a month), so a release of a
    12-month series costs each month its ε once (parallel composition), and what any one person
    can lose about a month is at most ``spent`` ≤ ``cap`` however many people look, and for ever.
    """

    __tablename__ = "period_budgets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "product_id", "period", name="uq_period_budget"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    product_id: Mapped[str] = mapped_column(PRODUCT)
    period: Mapped[date] = mapped_column(Date)  # the data month's first day
    cap: Mapped[float] = mapped_column(Float)
    spent: Mapped[float] = mapped_column(Float)  # by everyone
    #: by viewers alone (not publication or umbrella exports), against the viewers' share
    viewer_spent: Mapped[float] = mapped_column(Float, server_default="0")
    delta_cap: Mapped[float] = mapped_column(Float, server_default="0")
    delta_spent: Mapped[float] = mapped_column(Float, server_default="0")


class PeriodCharge(Base):
    """What one release drew from one data month: who, as which role, for which release."""

    __tablename__ = "period_charges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("period_budgets.id"), index=True)
    release_id: Mapped[str] = mapped_column(String(36))
    principal: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float, server_default="0")
    at: Mapped[datetime] = mapped_column(DateTime)


class Release(Base):
    """Append-only release log: every answer the gate gave, with what it cost."""

    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    query_key: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    principal: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    product_id: Mapped[str] = mapped_column(PRODUCT)
    query: Mapped[dict] = mapped_column(JSON)
    policy_version: Mapped[str] = mapped_column(String(64))
    data_version: Mapped[int] = mapped_column(Integer)
    mechanism: Mapped[str] = mapped_column(String(64))
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float, server_default="0")  # 0: pure ε-DP
    cells: Mapped[list] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    tenant_id: Mapped[str | None] = mapped_column(TENANT, nullable=True)
    principal: Mapped[str] = mapped_column(String(256))
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(16))  # allowed | refused | error
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class Export(Base):
    """One safe export (D6): the request, its processing, and what was delivered.

    The record is permanent and append-only: the request's columns (who, what, why, when) are
    written once, a finished export's status never changes, and no row is ever deleted —
    migration 0005 installs triggers that refuse such changes on both stores. Status:
    ``pending`` (an umbrella export awaiting its approvals) → ``queued`` → ``running`` →
    ``done`` | ``failed``; or ``pending`` → ``rejected``. A worker holds a ``running`` job by a
    lease (``worker``, ``lease_until``) that it renews with each progress update; a job whose
    lease ran out is claimed again, at most ``max_attempts`` times in all.
    """

    __tablename__ = "exports"
    __table_args__ = (
        Index("ix_exports_queue", "status", "lease_until"),
        Index("ix_exports_requester", "tenant_id", "requester", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    requester: Mapped[str] = mapped_column(String(256))
    #: the requester's role: the worker releases under it, so the same rules apply as on a page
    role: Mapped[str] = mapped_column(String(32), server_default="")
    product_id: Mapped[str] = mapped_column(PRODUCT)
    kind: Mapped[str] = mapped_column(String(16), server_default="aggregate")  # | records
    query: Mapped[dict] = mapped_column(JSON)
    #: tenants the file covers: the requester's own, or every tenant for an umbrella export
    scope: Mapped[list] = mapped_column(JSON, server_default="[]")
    purpose: Mapped[str] = mapped_column(String(32))
    justification: Mapped[str | None] = mapped_column(Text, nullable=True)
    format: Mapped[str] = mapped_column(String(8))  # csv | parquet
    umbrella: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # pending|queued|running|done|failed|rejected
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    row_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)  # SHA-256 of the file
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    policy_version: Mapped[str] = mapped_column(String(64))
    epsilon: Mapped[float] = mapped_column(Float, default=0.0)  # ε charged for this export
    #: releases the file was built from: [{"tenant", "release", "epsilon"}] (aggregates)
    releases: Mapped[list] = mapped_column(JSON, server_default="[]")
    masking: Mapped[dict] = mapped_column(JSON, default=dict)  # field → treatment applied
    file_path: Mapped[str | None] = mapped_column(String(512), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: the download link works until then; afterwards the file is deleted (the record stays)
    link_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ExportApproval(Base):
    """A platform administrator's decision on an umbrella export. Append-only."""

    __tablename__ = "export_approvals"
    __table_args__ = (UniqueConstraint("export_id", "approver", name="uq_export_approver"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    export_id: Mapped[str] = mapped_column(ForeignKey("exports.id"))
    approver: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    decision: Mapped[str] = mapped_column(String(16), server_default="approved")  # | rejected
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime)


class ReleasePeriod(Base):
    """One atomic period (month) of a released series, stored once and reused by every later
    query that covers it, so overlapping windows see the same noise (no averaging attack)."""

    __tablename__ = "release_periods"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    period_key: Mapped[str] = mapped_column(String(64), unique=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    product_id: Mapped[str] = mapped_column(PRODUCT)
    period: Mapped[date] = mapped_column(Date)
    cells: Mapped[list] = mapped_column(JSON)
    #: The finest level's noisy counts over the period's whole public key set (released or
    #: not) with the query and mechanism that made them: what coarser views are derived from
    #: by post-processing (``privacy._derive``). Never shown; None for derived periods and
    #: for sums and means.
    measurement: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    #: what a measurement can be summed with: a digest of its tenant settings, metric, data
    #: and policy version (None without a measurement), so the planner reads only candidates
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: whether the period was derived from stored measurements (charged nothing)
    derived: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    #: led by the source (a digest naming tenant and product): one seek per candidate key,
    #: whatever the planner's statistics say (migration 0019)
    __table_args__ = (Index("ix_release_periods_source", "source", "period"),)



class PolicySnapshot(Base):
    """The catalog's files as they were under one policy version (its content hash), recorded
    when a store is initialised or a gate opens, so that any two versions can be compared."""

    __tablename__ = "policy_snapshots"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    files: Mapped[dict] = mapped_column(JSON)  # file name → text
    recorded_at: Mapped[datetime] = mapped_column(DateTime)

# --- ingestion and incremental materialisation ------------------------------------------------


class IngestSource(Base):
    """A collector's bearer token for ``POST /api/v1/events``, bound to one tenant's products.

    Only the token's SHA-256 is stored (tokens are 256-bit random, so a plain hash cannot be
    brute-forced); ``token_hint`` is its first characters, to recognise it in a listing. A
    revoked source keeps its row (and name) so that history stays explainable.
    """

    __tablename__ = "ingest_sources"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_ingest_source_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(64))
    products: Mapped[list] = mapped_column(JSON)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class IngestBatch(Base):
    """One ingestion batch (a file, an API request, a Python batch) and its running report.

    Counts and ``position`` (the last source position whose chunk is committed) are updated in
    the same transaction as each chunk's rows, so a batch killed mid-file resumes exactly where
    its last commit ended. ``fingerprint`` is the SHA-256 of a file's bytes.
    """

    __tablename__ = "ingest_batches"
    __table_args__ = (
        Index("ix_ingest_batches_fingerprint", "tenant_id", "product_id", "fingerprint"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    product_id: Mapped[str] = mapped_column(PRODUCT)
    source: Mapped[str] = mapped_column(String(512))
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    position: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    accepted: Mapped[int] = mapped_column(BigInteger)
    duplicate: Mapped[int] = mapped_column(BigInteger)
    bounded: Mapped[int] = mapped_column(BigInteger)
    rejected: Mapped[int] = mapped_column(BigInteger)
    reasons: Mapped[dict] = mapped_column(JSON)  # rejection reason → rows
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class CubePending(Base):
    """A month of a (tenant, product) cube that is behind its record store.

    Written in the same transaction as the events (or consent change) that made it stale, and
    deleted by the incremental materialisation that rebuilt that month: the durable list of
    periods to refresh. Rows are append-only and deleted by id, so a mark written while a
    rebuild runs is never lost.
    """

    __tablename__ = "cube_pending"
    __table_args__ = (Index("ix_cube_pending_product", "tenant_id", "product_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    product_id: Mapped[str] = mapped_column(PRODUCT)
    month: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(String(16))  # ingest | consent
    marked_at: Mapped[datetime] = mapped_column(DateTime)


class RetentionPurge(Base):
    """A month of a (tenant, product) whose raw events a retention run purged: from then on its
    cube rows are final (never deleted or rebuilt) and no event of it is accepted again."""

    __tablename__ = "retention_purges"
    __table_args__ = (UniqueConstraint("tenant_id", "product_id", "month",
                                       name="uq_retention_purge"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(TENANT)
    product_id: Mapped[str] = mapped_column(PRODUCT)
    month: Mapped[date] = mapped_column(Date)
    rows: Mapped[int] = mapped_column(BigInteger)       # raw events deleted
    retention_days: Mapped[int] = mapped_column(Integer)
    purged_at: Mapped[datetime] = mapped_column(DateTime)


# Event-table indexes for ingestion and incremental materialisation: a (tenant, product, month)
# slice for rebuilding one period, and (tenant, subject, day) for the contribution bound, which
# must read a subject's events of a few days, not their whole history.
for _model in (HealthEvent, EducationEvent, SocialEvent):
    _table = _model.__table__
    Index(f"ix_{_table.name}_period", _table.c.tenant_id, _table.c.product_id, _table.c.month)
    Index(f"ix_{_table.name}_subject_day", _table.c.tenant_id, _table.c.pseudonym, _table.c.day)
del _model, _table


# --- administration (D8): tenant privacy settings and role mapping history --------------------


class TenantSettingsVersion(Base):
    """One version of a tenant's privacy settings: applied at once (tightening) or proposed and
    awaiting a second administrator (anything that weakens privacy).

    ``overrides`` holds only the values that differ from the catalog (``k``, ``budgets`` per
    role, ``levels`` ε per level, ``disabled_levels``); everything else follows the catalog.
    ``changes`` records each changed setting with its value before and after, as seen when the
    version was proposed. Version 0 is the catalog itself and is never stored.
    """

    __tablename__ = "tenant_settings_versions"
    __table_args__ = (UniqueConstraint("tenant_id", "version", name="uq_tenant_settings_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    version: Mapped[int] = mapped_column(Integer)
    overrides: Mapped[dict] = mapped_column(JSON)
    changes: Mapped[list] = mapped_column(JSON)
    weakens: Mapped[bool] = mapped_column(Boolean)
    base_version: Mapped[int] = mapped_column(Integer)  # the active version it changes
    #: proposed | active | rejected | superseded
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    proposed_by: Mapped[str] = mapped_column(String(256))
    proposed_at: Mapped[datetime] = mapped_column(DateTime)
    decided_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class RoleMappingChange(Base):
    """Append-only history of role mappings added or removed on the admin page, numbered per
    tenant (the tenant's mapping version). The file and demo mappings are versioned elsewhere
    (``config/role_mappings.toml`` in git; ``veil init``)."""

    __tablename__ = "role_mapping_changes"
    __table_args__ = (
        UniqueConstraint("tenant_id", "version", name="uq_role_mapping_change_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))  # add | remove
    claim: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    changed_by: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime)


# --- alerts (issue 20): which attention items the webhook has been told about -----------------


class AlertDelivery(Base):
    """One alert (an SLO breach, a budget near its cap, a failed job) and its webhook delivery.

    ``alert_key`` names the occurrence (e.g. ``job:materialize:42``), so an alert is delivered
    at most once: a row with ``delivered_at`` set is never sent again. A failed attempt leaves
    ``delivered_at`` empty, counts ``attempts`` and keeps ``last_error``; the next run retries.
    A sender takes an alert by a conditional UPDATE of ``claimed_until`` (a short lease), so
    two senders running at once do not both post it.
    """

    __tablename__ = "alert_deliveries"
    __table_args__ = (UniqueConstraint("alert_key", name="uq_alert_delivery_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_key: Mapped[str] = mapped_column(String(256))
    tenant_id: Mapped[str | None] = mapped_column(TENANT, nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSON)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: a sender's claim while it posts (cleared when the attempt ends either way)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
