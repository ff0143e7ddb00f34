"""Shared fixtures: the catalog, fresh migrated stores on SQLite and PostgreSQL.

PostgreSQL tests run when VEIL_TEST_POSTGRES_URL names a server (e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres); each test gets a throwaway database.
With VEIL_REQUIRE_POSTGRES=1 (set by .ci/run) an unset or unreachable server fails the run
instead of skipping.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from data.bootstrap import init_store
from data.catalog import Catalog, load_catalog
from data.config import PROJECT_ROOT, Settings, load_settings
from data.engine import Store, _create_private, open_store

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def session_catalog() -> Catalog:
    """The project's catalog, loaded once (``catalog`` unless a module overrides that)."""
    return load_catalog(PROJECT_ROOT / "catalog")


@pytest.fixture(scope="session")
def catalog(session_catalog: Catalog) -> Catalog:
    return session_catalog


def _postgres_base_url() -> str:
    url = os.environ.get("VEIL_TEST_POSTGRES_URL", "")
    if not url:
        if os.environ.get("VEIL_REQUIRE_POSTGRES") == "1":
            pytest.fail("VEIL_REQUIRE_POSTGRES=1 but VEIL_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL tests need VEIL_TEST_POSTGRES_URL")
    return url


def _postgres_database(template: str | None = None) -> Iterator[str]:
    """A throwaway database on the test server (a copy of ``template`` if given)."""
    base = make_url(_postgres_base_url())
    name = f"veil_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    copied = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{copied}'))
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
    """Build Settings for a backend name; PostgreSQL gets a fresh throwaway database. With
    ``template`` (from ``store_template``) the new store starts as a copy of it."""
    cleanups = []

    def build(backend: str, *, template: str | None = None) -> Settings:
        env = {"VEIL_VAR_DIR": str(tmp_path / "var"), "VEIL_DEMO_MODE": "1"}
        if backend == "postgresql":
            generator = _postgres_database(template)
            env["VEIL_DATABASE_URL"] = next(generator)
            cleanups.append(generator)
        settings = load_settings(env)
        if backend == "sqlite" and template:
            _copy_sqlite(Path(template), settings)
        return settings

    yield build
    for generator in cleanups:
        generator.close()


def _copy_sqlite(template: Path, settings: Settings) -> None:
    """The template store copied to the settings' store file, created private as Veil creates
    it (0700 directory, 0600 file)."""
    target = Path(settings.database_url.removeprefix("sqlite:///"))
    _create_private(target)
    with closing(sqlite3.connect(template)) as source, \
            closing(sqlite3.connect(target)) as copy:
        source.backup(copy)


@pytest.fixture(scope="session")
def store_template(tmp_path_factory, session_catalog: Catalog):
    """Per backend, one store migrated and initialised as ``store`` gives it (``init_store``
    with demo accounts: about half a second), built on first use; each test's store is a copy
    (a SQLite backup, or PostgreSQL's ``CREATE DATABASE … TEMPLATE``: a twentieth of that).
    Yields a function: backend → the template (a file path, or a database name)."""
    built: dict[str, str] = {}
    databases: list = []

    def template(backend: str) -> str:
        if backend not in built:
            env = {"VEIL_VAR_DIR": str(tmp_path_factory.mktemp("store-template") / "var"),
                   "VEIL_DEMO_MODE": "1"}
            if backend == "postgresql":
                generator = _postgres_database()
                env["VEIL_DATABASE_URL"] = next(generator)
                databases.append(generator)
            settings = load_settings(env)
            opened = open_store(settings)
            try:
                init_store(opened, session_catalog, demo_accounts=True)
            finally:
                opened.dispose()  # a template database must have no connections
            built[backend] = (make_url(settings.database_url).database
                              if backend == "postgresql"
                              else settings.database_url.removeprefix("sqlite:///"))
        return built[backend]

    yield template
    for generator in databases:
        generator.close()


@pytest.fixture(params=STORES)
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(backend: str, settings_for, catalog: Catalog, session_catalog: Catalog,
          store_template) -> Iterator[Store]:
    """A fresh, migrated store with the catalog mirrored and demo accounts created: a copy of
    ``store_template``'s, or, where a module overrides ``catalog``, initialised with that."""
    if catalog is session_catalog:
        opened = open_store(settings_for(backend, template=store_template(backend)))
    else:
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
