"""exports: worker lease, attempts and umbrella scope

Adds what the export worker, the signed links and umbrella approvals need, and makes the
export record append-only in the store itself: triggers refuse deleting an export or an
approval, changing an approval, rewriting a request's who/what/why/when, or changing the
status of a finished export. On SQLite a later batch migration that *recreates* ``exports`` or
``export_approvals`` drops their triggers: such a migration must create them again
(``_create_triggers``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 08:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

#: Written once when an export is requested; never updated.
_REQUEST_COLUMNS = ('id', 'tenant_id', 'requester', 'role', 'product_id', 'kind', 'query',
                    'scope', 'purpose', 'justification', 'format', 'umbrella', 'created_at')
_FINAL = "('done', 'failed', 'rejected')"


def upgrade() -> None:
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=32), server_default='',
                                      nullable=False))
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='aggregate',
                                      nullable=False))
        batch_op.add_column(sa.Column('scope', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('size_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('releases', sa.JSON(), server_default='[]',
                                      nullable=False))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('worker', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('started_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('link_expires_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('purged_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_exports_queue', ['status', 'lease_until'], unique=False)
        batch_op.create_index('ix_exports_requester', ['tenant_id', 'requester', 'created_at'],
                              unique=False)
    with op.batch_alter_table('export_approvals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decision', sa.String(length=16),
                                      server_default='approved', nullable=False))
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=True))
    _create_triggers()


def downgrade() -> None:
    _drop_triggers()
    with op.batch_alter_table('export_approvals', schema=None) as batch_op:
        batch_op.drop_column('reason')
        batch_op.drop_column('decision')
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.drop_index('ix_exports_requester')
        batch_op.drop_index('ix_exports_queue')
        for column in ('purged_at', 'link_expires_at', 'started_at', 'lease_until', 'worker',
                       'attempts', 'releases', 'size_bytes', 'scope', 'kind', 'role'):
            batch_op.drop_column(column)


def _create_triggers() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        changed = ' OR '.join(f'NEW.{c}::text IS DISTINCT FROM OLD.{c}::text'
                              for c in _REQUEST_COLUMNS)
        op.execute(f"""
            CREATE FUNCTION veil_exports_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'DELETE' THEN
                    RAISE EXCEPTION 'export records are append-only: % rows are never deleted',
                        TG_TABLE_NAME;
                END IF;
                IF TG_TABLE_NAME = 'export_approvals' THEN
                    RAISE EXCEPTION 'export approvals are append-only: a decision never changes';
                END IF;
                IF {changed} THEN
                    RAISE EXCEPTION 'export records are append-only: a request is never rewritten';
                END IF;
                IF OLD.status IN {_FINAL} AND NEW.status IS DISTINCT FROM OLD.status THEN
                    RAISE EXCEPTION 'export records are append-only: a % export stays %',
                        OLD.status, OLD.status;
                END IF;
                RETURN NEW;
            END $$""")
        for table in ('exports', 'export_approvals'):
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION veil_exports_append_only()")
        return
    changed = ' OR '.join(f'NEW.{c} IS NOT OLD.{c}' for c in _REQUEST_COLUMNS)
    for table in ('exports', 'export_approvals'):
        op.execute(f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} BEGIN "
                   f"SELECT RAISE(ABORT, 'export records are append-only: {table} rows are "
                   f"never deleted'); END")
    op.execute("CREATE TRIGGER export_approvals_no_update BEFORE UPDATE ON export_approvals "
               "BEGIN SELECT RAISE(ABORT, 'export approvals are append-only: a decision never "
               "changes'); END")
    op.execute(f"CREATE TRIGGER exports_request_fixed BEFORE UPDATE ON exports WHEN {changed} "
               f"BEGIN SELECT RAISE(ABORT, 'export records are append-only: a request is never "
               f"rewritten'); END")
    op.execute(f"CREATE TRIGGER exports_final_fixed BEFORE UPDATE OF status ON exports "
               f"WHEN OLD.status IN {_FINAL} AND NEW.status IS NOT OLD.status "
               f"BEGIN SELECT RAISE(ABORT, 'export records are append-only: a finished export "
               f"keeps its status'); END")


def _drop_triggers() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for table in ('exports', 'export_approvals'):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS veil_exports_append_only()")
        return
    for trigger in ('exports_no_delete', 'export_approvals_no_delete',
                    'export_approvals_no_update', 'exports_request_fixed', 'exports_final_fixed'):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
