"""A throwaway store for a benchmark: a fresh SQLite file, or a fresh PostgreSQL database that is
dropped afterwards. Never touches the configured store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from data.bootstrap import init_store
from data.catalog import load_catalog
from data.config import load_settings
from data.engine import Store, open_store

__all__ = ["fresh_store"]


@contextmanager
def fresh_store(postgres: str | None, var_dir: Path, *, secret: str) -> Iterator[Store]:
    """An initialised store under ``var_dir`` (SQLite), or in a new database on ``postgres``."""
    env = {"VEIL_VAR_DIR": str(var_dir), "VEIL_DEMO_MODE": "1", "VEIL_SECRET": secret}
    admin = database = None
    if postgres:
        base = make_url(postgres)
        database = f"veil_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
        env["VEIL_DATABASE_URL"] = base.set(database=database).render_as_string(
            hide_password=False)
    settings = load_settings(env)
    store = open_store(settings)
    try:
        init_store(store, load_catalog(settings.catalog_dir), demo_accounts=False)
        yield store
    finally:
        store.dispose()
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin.dispose()
