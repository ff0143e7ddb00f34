"""consent_versions' trigger fires in every session, replication's included (issue 18)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 08:40:00

The trigger of migration 0020 counts changes to ``subject_consent`` so that an ingestion run may
reuse earlier chunks' consent answers while the count has not moved. An ordinary trigger does
not fire in a session with ``session_replication_role = replica`` — how logical replication
applies changes, and how some bulk tools load tables — so a withdrawal arriving that way would
leave the count alone and a running ingestion would go on storing the subject's events. ``ENABLE
ALWAYS`` makes it fire whatever the session's role. SQLite has no trigger here (its runs check
``PRAGMA data_version``, which every commit moves).
"""

from alembic import op


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE subject_consent ENABLE ALWAYS TRIGGER veil_consent_changed")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE subject_consent ENABLE TRIGGER veil_consent_changed")
