"""policy snapshots; consent history by time; drop the event tables' (tenant, subject) indexes

The (tenant, subject, day) indexes of 0003 serve every lookup the (tenant, subject) ones did
(same leading columns), and each extra random-key index slows ingestion.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 08:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_EVENT_TABLES = ('health_events', 'education_events', 'social_events')


def upgrade() -> None:
    op.create_table('policy_snapshots',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('files', sa.JSON(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.create_index('ix_consent_events_tenant_at',
                              ['tenant_id', 'at', 'vertical', 'status'], unique=False)
    for table in _EVENT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f'ix_{table}_subject')


def downgrade() -> None:
    for table in _EVENT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(f'ix_{table}_subject', ['tenant_id', 'pseudonym'], unique=False)
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_events_tenant_at')
    op.drop_table('policy_snapshots')
