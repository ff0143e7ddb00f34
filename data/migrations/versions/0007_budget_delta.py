"""budgets and releases record δ: a δ cap and δ spent per account, δ per entry and release

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 09:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# Existing rows spent no δ: every release before this revision was charged ε only.
_COLUMNS = {
    'budget_accounts': ('delta_cap', 'delta_spent'),
    'budget_entries': ('delta',),
    'releases': ('delta',),
}


def upgrade() -> None:
    for table, columns in _COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.add_column(sa.Column(column, sa.Float(), nullable=False,
                                              server_default='0'))


def downgrade() -> None:
    # recreate='never': SQLite (>= 3.35) drops the columns in place. Recreating
    # budget_accounts would drop a table that budget_entries references, which SQLite's
    # foreign key enforcement refuses inside the migration's transaction.
    for table, columns in _COLUMNS.items():
        with op.batch_alter_table(table, schema=None, recreate='never') as batch_op:
            for column in reversed(columns):
                batch_op.drop_column(column)
