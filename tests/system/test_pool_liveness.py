"""Pooled PostgreSQL connections (``data.engine``): a connection lost while it sat in the pool
is replaced before anyone uses it, without a ping for a connection used a moment ago; and once
a statement finds one lost, the others are checked before their next use."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, create_engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

import data.engine
from data.models import ProductVersion
from data.prepared import Prepared
from tests.conftest import STORES

# PostgreSQL's: SQLite has no server to lose and its engine no liveness checks
pytestmark = pytest.mark.parametrize("backend", [STORES[1]], indirect=True)

_VERSION = Prepared(select(ProductVersion.data_version)
                    .where(ProductVersion.tenant_id == bindparam("tenant")))


def _backends(store, n: int) -> list[int]:
    """Check ``n`` connections out at once and back in; their server process ids."""
    connections = [store.engine.connect() for _ in range(n)]
    try:
        return [c.execute(text("SELECT pg_backend_pid()")).scalar() for c in connections]
    finally:
        for connection in connections:
            connection.close()


def _terminate(store, pids: list[int]) -> None:
    """Ends the server processes (as a server restart or an administrator would), from a
    connection of its own outside the pool."""
    admin = create_engine(store.engine.url, poolclass=NullPool)
    try:
        with admin.connect() as connection:
            for pid in pids:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()


def _count_pings(monkeypatch, store) -> list[int]:
    pings: list[int] = []
    ping = store.engine.dialect.do_ping

    def counted(dbapi_connection):
        pings.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(store.engine.dialect, "do_ping", counted)
    return pings


def test_a_connection_used_a_moment_ago_is_handed_out_without_a_ping(store, monkeypatch):
    monkeypatch.setattr(data.engine, "ALIVE_BYPASS_SECONDS", 60.0)
    _backends(store, 1)
    pings = _count_pings(monkeypatch, store)
    for _ in range(5):
        with store.read() as session:
            _VERSION.rows(session, {"tenant": "kigali-east"})
    assert pings == []


def test_a_connection_lost_while_idle_in_the_pool_is_replaced_before_use(store, monkeypatch):
    """Idle past the window, a connection is pinged; a failed ping replaces it unseen."""
    pids = _backends(store, 1)
    _terminate(store, pids)
    monkeypatch.setattr(data.engine, "ALIVE_BYPASS_SECONDS", 0.0)  # every connection is idle
    pings = _count_pings(monkeypatch, store)
    with store.read() as session:
        assert _VERSION.rows(session, {"tenant": "kigali-east"}) is not None
        assert session.execute(text("SELECT pg_backend_pid()")).scalar() not in pids
    assert len(pings) >= 1


@pytest.mark.parametrize("through", ["prepared", "sqlalchemy"])
def test_once_a_statement_finds_a_connection_lost_the_others_are_checked(store, monkeypatch,
                                                                         through):
    """Within the window a lost connection fails the statement that finds it (nothing else
    is lost); the pool then pings every connection idle since, so the next request works."""
    monkeypatch.setattr(data.engine, "ALIVE_BYPASS_SECONDS", 60.0)
    pids = _backends(store, 3)
    _terminate(store, pids)
    with pytest.raises(OperationalError), store.read() as session:
        if through == "prepared":
            _VERSION.rows(session, {"tenant": "kigali-east"})
        else:
            session.execute(text("SELECT 1"))
    for _ in range(3):  # every pooled connection in turn
        with store.read() as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar() not in pids
            _VERSION.rows(session, {"tenant": "kigali-east"})
