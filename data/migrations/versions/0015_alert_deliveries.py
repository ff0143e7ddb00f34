"""alert deliveries: which alerts the webhook was told about, so each is sent once (issue 20)

Revision ID: 0015
Revises: 0010
Create Date: 2026-12-06 10:00:00

Written after 0009; 0010–0014 are written in parallel, so at integration down_revision becomes
the last of those.
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('alert_key', sa.String(length=256), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.Column('delivered_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('alert_key', name='uq_alert_delivery_key')
    )


def downgrade() -> None:
    op.drop_table('alert_deliveries')
