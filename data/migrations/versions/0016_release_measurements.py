"""release measurements: the finest level's noisy counts of each released period, for deriving

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 10:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('release_periods') as batch:
        batch.add_column(sa.Column('measurement', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('source', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('derived', sa.Boolean(), server_default=sa.false(),
                                   nullable=False))
    op.create_index('ix_release_periods_source', 'release_periods',
                    ['tenant_id', 'product_id', 'source', 'period'])


def downgrade() -> None:
    op.drop_index('ix_release_periods_source', table_name='release_periods')
    with op.batch_alter_table('release_periods') as batch:
        batch.drop_column('derived')
        batch.drop_column('source')
        batch.drop_column('measurement')
