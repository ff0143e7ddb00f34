"""event_versions: a counter of statements that changed each event table (issue 18)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08 11:00:00

Each chunk of an ingestion run read the stored events of its subject-days (or subject-months)
again, one index seek each: on PostgreSQL a fifth of a million-event run's time, although the
run had read or stored most of them itself in earlier chunks. A statement trigger on each
vertical's event table now adds one to that table's row here in the changing transaction, so a
run may keep the counts it read and add what it stores while the counter has moved only by its
own inserts. Like ``consent_versions`` (0020, 0021) the trigger fires in every session
(``ENABLE ALWAYS``: logical replication and some bulk loaders write as ``replica``). A writer
takes the row's lock from its change to its commit; ingestion takes it with its chunk's one COPY,
after its reads, and every other writer of events changes them in one statement. SQLite has no
trigger (its runs check ``PRAGMA data_version``, which every commit moves).
"""

import sqlalchemy as sa
from alembic import op


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

_TABLES = ('health_events', 'education_events', 'social_events')


def upgrade() -> None:
    op.create_table('event_versions',
                    sa.Column('name', sa.String(length=64), nullable=False),
                    sa.Column('version', sa.BigInteger(), nullable=False),
                    sa.PrimaryKeyConstraint('name'))
    for table in _TABLES:
        op.execute(f"INSERT INTO event_versions (name, version) VALUES ('{table}', 0)")
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("""
            CREATE FUNCTION veil_events_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO event_versions (name, version) VALUES (TG_TABLE_NAME, 1)
                ON CONFLICT (name) DO UPDATE SET version = event_versions.version + 1;
                RETURN NULL;
            END $$""")
        for table in _TABLES:
            op.execute(f"""
                CREATE TRIGGER veil_events_changed
                AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION veil_events_changed()""")
            op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER veil_events_changed")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for table in _TABLES:
            op.execute(f"DROP TRIGGER veil_events_changed ON {table}")
        op.execute("DROP FUNCTION veil_events_changed()")
    op.drop_table('event_versions')
