"""cube dimension index: the dimensions pages filter on, then the months (issue 18)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 11:00:00

(tenant, product, metric, category, district, period) beside the (tenant, product, metric,
period) lookup: a 12-month series of one category in one district seeks its rows instead of
reading every cell of the metric's months (bench/cube_index.py measured both orders and the
alternatives). Chained after 0009 here; 0015 and 0016 were written in parallel, so at
integration the chain is put in order.
"""

from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cube_monthly', schema=None) as batch_op:
        batch_op.create_index('ix_cube_dims', ['tenant_id', 'product_id', 'metric', 'category',
                                               'district', 'period'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cube_monthly', schema=None) as batch_op:
        batch_op.drop_index('ix_cube_dims')
