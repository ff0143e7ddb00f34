"""Alembic migrations build the same schema on the embedded store and on PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, datetime

from sqlalchemy import func, inspect, select, text

from data.bootstrap import init_store
from data.migrate import current_revision, downgrade, head_revision, upgrade
from data.models import (Base, BudgetAccount, BudgetEntry, GeoArea, GeoCell, LocalAccount,
                         RoleMapping, Tenant)


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


def _columns(store, table: str) -> set[str]:
    return {c["name"] for c in inspect(store.engine).get_columns(table)}


def test_budget_delta_columns_upgrade_and_downgrade_keeping_the_ledger(store):
    """0007 adds δ to accounts, entries and releases (0 for what was spent before) and its
    downgrade removes them again; the ε ledger survives both ways."""
    with store.write.begin() as session:
        account = BudgetAccount(tenant_id="kigali-east", principal="p@x", role="researcher",
                                product_id="education.attendance",
                                window_start=date(2026, 11, 1), window_end=date(2026, 11, 30),
                                cap=10.0, spent=0.75, delta_cap=1e-6, delta_spent=2e-7)
        session.add(account)
        session.flush()
        session.add(BudgetEntry(account_id=account.id, epsilon=0.75, delta=2e-7,
                                state="committed", created_at=datetime(2026, 11, 2)))
    downgrade(store, "0006")
    assert current_revision(store) == "0006"
    assert {"delta_cap", "delta_spent"}.isdisjoint(_columns(store, "budget_accounts"))
    assert "delta" not in _columns(store, "budget_entries") | _columns(store, "releases")
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT spent, cap FROM budget_accounts")).all() == [
            (0.75, 10.0)]
        assert connection.execute(text("SELECT epsilon FROM budget_entries")).all() == [(0.75,)]
    upgrade(store)
    assert current_revision(store) == head_revision()
    with store.read() as session:
        account = session.scalars(select(BudgetAccount)).one()
        entry = session.scalars(select(BudgetEntry)).one()
    # what was charged before δ was recorded spent no δ (ε-only ledger rows)
    assert (account.spent, account.delta_spent, account.delta_cap) == (0.75, 0.0, 0.0)
    assert (entry.epsilon, entry.delta) == (0.75, 0.0)
    test_schema_matches_the_models(store)


def test_tenant_settings_column_is_dropped_and_its_downgrade_restores_it(store):
    """0017 drops the unused tenants.settings; its downgrade adds it back, {} for every tenant."""
    assert "settings" not in _columns(store, "tenants")
    downgrade(store, "0016")
    assert "settings" in _columns(store, "tenants")
    with store.engine.connect() as connection:
        values = connection.execute(text("SELECT settings FROM tenants")).scalars().all()
    assert len(values) == 3
    assert all((json.loads(value) if isinstance(value, str) else value) == {} for value in values)
    upgrade(store)
    assert current_revision(store) == head_revision()
    assert "settings" not in _columns(store, "tenants")
    test_schema_matches_the_models(store)
