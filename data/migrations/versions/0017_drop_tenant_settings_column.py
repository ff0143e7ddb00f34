"""drop tenants.settings: never read or written since tenant settings became versioned (0006)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 13:10:00

Tenant privacy settings live in ``tenant_settings_versions`` (0006); the JSON column on
``tenants`` was only ever written as ``{}``. Dropped in place on both stores (SQLite 3.35+ drops
a column without rebuilding the table, which other tables reference). The downgrade adds it
back as it was, ``{}`` for every existing tenant.
"""

from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tenants', recreate='never') as batch:
        batch.drop_column('settings')


def downgrade() -> None:
    with op.batch_alter_table('tenants', recreate='never') as batch:
        batch.add_column(sa.Column('settings', sa.JSON(), server_default='{}', nullable=False))
    if op.get_bind().dialect.name == 'postgresql':
        # as 0001 created it: no server default (SQLite cannot drop one in place)
        op.alter_column('tenants', 'settings', server_default=None)
