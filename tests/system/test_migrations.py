"""Alembic migrations build the same schema on the embedded store and on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, inspect, select

from data.bootstrap import init_store
from data.migrate import current_revision, head_revision
from data.models import Base, GeoArea, GeoCell, LocalAccount, RoleMapping, Tenant


def test_migrations_reach_head_with_every_model_table(store):
    """After init the store is at the head revision and has every table the models declare."""
    assert current_revision(store) == head_revision()
    tables = set(inspect(store.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_schema_matches_the_models(store):
    """Autogenerate finds nothing to do: migrations and models agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_init_is_idempotent_and_mirrors_the_catalog(store, catalog):
    """Running init twice changes nothing; tenants, geography and demo identities are present."""
    def counts():
        with store.read() as session:
            return tuple(session.scalar(select(func.count()).select_from(model))
                         for model in (Tenant, GeoArea, GeoCell, LocalAccount, RoleMapping))

    before = counts()
    init_store(store, catalog, demo_accounts=True)
    assert counts() == before
    tenants, areas, cells, accounts, mappings = before
    assert tenants == 3 and areas == 35 and cells > 1000
    assert accounts == mappings == 3 * 6 + 2  # six roles per tenant, two platform admins
