"""Shared fixtures: the catalog, fresh migrated stores on SQLite and PostgreSQL.

PostgreSQL tests run when VEIL_TEST_POSTGRES_URL names a server (e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres); each test gets a throwaway database.
With VEIL_REQUIRE_POSTGRES=1 (set by .ci/run) an unset or unreachable server fails the run
instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from data.bootstrap import init_store
from data.catalog import Catalog, load_catalog
from data.config import PROJECT_ROOT, Settings, load_settings
from data.engine import Store, open_store

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(PROJECT_ROOT / "catalog")


def _postgres_base_url() -> str:
    url = os.environ.get("VEIL_TEST_POSTGRES_URL", "")
    if not url:
        if os.environ.get("VEIL_REQUIRE_POSTGRES") == "1":
            pytest.fail("VEIL_REQUIRE_POSTGRES=1 but VEIL_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL tests need VEIL_TEST_POSTGRES_URL")
    return url


def _postgres_database() -> Iterator[str]:
    base = make_url(_postgres_base_url())
    name = f"veil_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        pytest.fail(f"cannot create a test database on {base.render_as_string()}: {exc}")
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings_for(tmp_path: Path):
    """Build Settings for a backend name; PostgreSQL gets a fresh throwaway database."""
    cleanups = []

    def build(backend: str) -> Settings:
        env = {"VEIL_VAR_DIR": str(tmp_path / "var"), "VEIL_DEMO_MODE": "1"}
        if backend == "postgresql":
            generator = _postgres_database()
            env["VEIL_DATABASE_URL"] = next(generator)
            cleanups.append(generator)
        return load_settings(env)

    yield build
    for generator in cleanups:
        generator.close()


@pytest.fixture(params=STORES)
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(backend: str, settings_for, catalog: Catalog) -> Iterator[Store]:
    """A fresh, migrated store with the catalog mirrored and demo accounts created."""
    opened = open_store(settings_for(backend))
    init_store(opened, catalog, demo_accounts=True)
    yield opened
    opened.dispose()


_FORK_CHILD = "VEIL_TEST_FORK_ALONE"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``fork_alone`` test needs a process with one thread (forking copies other threads'
    locks). Earlier tests leave threads behind (a dashboard's export worker, for one), so when
    this process has any, the test runs alone in a fresh interpreter and its outcome is that
    run's; it is never skipped for it."""
    if item.get_closest_marker("fork_alone") is None:
        return
    from data.ingest import _checking

    if _checking._may_fork():
        return
    if os.environ.get(_FORK_CHILD) == "1":
        pytest.fail("a fresh test process cannot fork the ingestion worker (not Linux?)")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", item.nodeid],
        cwd=PROJECT_ROOT, env={**os.environ, _FORK_CHILD: "1"}, capture_output=True,
        text=True, timeout=900)
    if result.returncode != 0 or " passed" not in result.stdout:
        pytest.fail(f"{item.nodeid} failed when run alone in a fresh process:\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    item.ran_alone = True
    item.runtest = lambda: None  # it passed in the fresh process; nothing more to run here
