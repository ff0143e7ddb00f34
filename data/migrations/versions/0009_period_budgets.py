"""period budgets: a lifetime (ε, δ) per tenant, product and data month, shared by every release

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-11 09:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('period_budgets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('product_id', sa.String(length=64), nullable=False),
    sa.Column('period', sa.Date(), nullable=False),
    sa.Column('cap', sa.Float(), nullable=False),
    sa.Column('spent', sa.Float(), nullable=False),
    sa.Column('viewer_spent', sa.Float(), server_default='0', nullable=False),
    sa.Column('delta_cap', sa.Float(), server_default='0', nullable=False),
    sa.Column('delta_spent', sa.Float(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'product_id', 'period', name='uq_period_budget')
    )
    op.create_table('period_charges',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('budget_id', sa.Integer(), nullable=False),
    sa.Column('release_id', sa.String(length=36), nullable=False),
    sa.Column('principal', sa.String(length=256), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('epsilon', sa.Float(), nullable=False),
    sa.Column('delta', sa.Float(), server_default='0', nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['budget_id'], ['period_budgets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('period_charges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_period_charges_budget_id'), ['budget_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('period_charges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_period_charges_budget_id'))
    op.drop_table('period_charges')
    op.drop_table('period_budgets')
