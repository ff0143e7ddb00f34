"""release_periods' source index led by the source (issue 18)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 19:10:00

Every fresh release reads the stored measurements it may be derived from by their source keys
(``privacy._derivation``). The index was led by (tenant, product): where the planner's
statistics lag behind the table (PostgreSQL without a recent ANALYZE; autovacuum off or late),
it read the tenant's whole release history for that product through the prefix and filtered
the sources out — measured 13–22 ms per release at 18,000 stored periods, growing with every
release. A source key is a digest that names the tenant and product already, so the index is
led by it: one seek per key whatever the statistics say (0.2 ms at the same size).
"""

from alembic import op


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_release_periods_source', table_name='release_periods')
    op.create_index('ix_release_periods_source', 'release_periods', ['source', 'period'])


def downgrade() -> None:
    op.drop_index('ix_release_periods_source', table_name='release_periods')
    op.create_index('ix_release_periods_source', 'release_periods',
                    ['tenant_id', 'product_id', 'source', 'period'])
