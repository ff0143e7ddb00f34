"""retention_purges: months whose raw events a retention run purged (issue 20)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 14:00:00

A product may declare ``raw_retention_days`` in the catalog; ``veil retention`` then deletes the
raw events of months closed longer than that and records each purged month here, so that
materialisation keeps those months' cube rows (final) and ingestion refuses their events.
"""

from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'retention_purges',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('tenant_id', sa.String(32), nullable=False),
        sa.Column('product_id', sa.String(64), nullable=False),
        sa.Column('month', sa.Date(), nullable=False),
        sa.Column('rows', sa.BigInteger(), nullable=False),
        sa.Column('retention_days', sa.Integer(), nullable=False),
        sa.Column('purged_at', sa.DateTime(), nullable=False),
        sa.UniqueConstraint('tenant_id', 'product_id', 'month', name='uq_retention_purge'),
    )


def downgrade() -> None:
    op.drop_table('retention_purges')
