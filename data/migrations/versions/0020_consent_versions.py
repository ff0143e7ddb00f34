"""consent_versions: a counter of changes to subject_consent (issue 18)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 06:40:00

Ingestion on PostgreSQL read every chunk's subjects' consent again (the embedded store reuses
earlier chunks' answers while ``PRAGMA data_version`` shows that nobody else wrote): 2.7 s of a
million-event run. A statement trigger on ``subject_consent`` now adds one to a single counter
row in the changing transaction, so a run may reuse its answers while the counter, read in each
chunk's transaction before its consent read, has not moved. Every writer of consent takes the
counter row's lock until it commits; consent changes are one subject per transaction
(``data.consent``) or one bulk load (the demo), so they queue, never cross.
"""

import sqlalchemy as sa
from alembic import op


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('consent_versions',
                    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column('version', sa.BigInteger(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    op.execute("INSERT INTO consent_versions (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("""
            CREATE FUNCTION veil_consent_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE consent_versions SET version = version + 1 WHERE id = 1;
                RETURN NULL;
            END $$""")
        op.execute("""
            CREATE TRIGGER veil_consent_changed
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subject_consent
            FOR EACH STATEMENT EXECUTE FUNCTION veil_consent_changed()""")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER veil_consent_changed ON subject_consent")
        op.execute("DROP FUNCTION veil_consent_changed()")
    op.drop_table('consent_versions')
