"""Engines and session factories, built once per process.

Owns the translation of ``VEIL_DATABASE_URL`` into a working SQLAlchemy engine for the embedded
store (SQLite in WAL mode under var/) or PostgreSQL (psycopg 3). It never runs queries of its
own beyond a connectivity check, and it translates driver errors into StoreError/ConfigError at
this boundary so that no driver traceback reaches a page.

Write transactions on SQLite take the write lock up front (``BEGIN IMMEDIATE``): a deferred
transaction that reads and then writes can fail with "database is locked" when another process
wrote in between, which busy_timeout does not retry.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (ArgumentError, DisconnectionError, NoSuchModuleError,
                            OperationalError, SQLAlchemyError)
from sqlalchemy.orm import Session, sessionmaker

from data.config import Settings, start_up_error
from data.errors import ConfigError, StoreError

__all__ = ["Store", "make_engine", "open_store"]

_SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Page size of a new embedded store (an existing one keeps its own until a VACUUM). Event
#: tables carry indexes with random keys (keyed hashes), so a bulk insert dirties pages all over
#: them; 16 KiB pages make those trees shallower and a commit writes fewer, fuller WAL frames
#: (measured: bulk inserts of a million events 15-25% faster than with the default 4 KiB).
_SQLITE_PAGE_SIZE = 16_384


@dataclass(frozen=True)
class Store:
    """An engine with its two session factories: ``read`` and ``write`` (locks early on SQLite)."""

    engine: Engine
    read: sessionmaker[Session]
    write: sessionmaker[Session]
    #: Reads whose statements each see what was committed before it began, with no transaction
    #: around them: on PostgreSQL an autocommit session — READ COMMITTED already gives every
    #: statement its own snapshot, so a transaction would only add its BEGIN and ROLLBACK round
    #: trips; on SQLite the same as ``read`` (a read transaction there is in-process and keeps
    #: one snapshot). The gate's release reads use it.
    glance: sessionmaker[Session]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    """Build an engine for ``url``; malformed or unsupported URLs raise ConfigError."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"VEIL_DATABASE_URL is not a valid database URL: {url!r} ({exc})"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        if parsed.drivername in {"postgresql", "postgres"}:
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            engine = create_engine(parsed, pool_size=10, max_overflow=40)
        except (NoSuchModuleError, ArgumentError) as exc:
            raise ConfigError(f"VEIL_DATABASE_URL uses an unsupported driver: {url!r}") from exc
        _ping_when_idle(engine)
        return engine
    raise ConfigError(
        f"VEIL_DATABASE_URL must be a sqlite:/// or postgresql:// URL, got {parsed.drivername!r}"
    )


#: A pooled PostgreSQL connection used this recently is handed out without a ping (HikariCP's
#: ``aliveBypassWindowMs``, whose default this is): see ``_ping_when_idle``.
ALIVE_BYPASS_SECONDS = 0.5
_IDLE_SINCE = "veil.idle_since"


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before handing it out only when it has sat idle in the pool for
    ``ALIVE_BYPASS_SECONDS`` or more, or its driver knows it is closed.

    A ping on every checkout (``pool_pre_ping``) is a round trip and a twentieth of a fresh
    release's Python, twice per release (its reads and its write each check a connection
    out), and under load every connection comes back within milliseconds of its last use. A
    connection idle longer is pinged, and one whose ping fails is replaced before anyone uses
    it (``DisconnectionError``: the pool discards it and connects again, up to three times):
    after a server restart or a dropped connection, the next request finds fresh
    connections. A server lost in the half second after a connection's last use fails the
    statement that finds it, as a StoreError that spends nothing; SQLAlchemy then invalidates
    that connection (its rollback fails, whichever way the statement was sent), and every
    connection idle since is pinged at its next checkout, so the request after it finds
    working connections."""
    dialect = engine.dialect
    stale_before = [0.0]  # a connection idle since before this is pinged whatever its age

    @event.listens_for(engine, "connect")
    def _connected(dbapi_connection, record):
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record):
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "invalidate")
    def _invalidated(dbapi_connection, record, exception):
        # a connection found lost: the others may be too (a server restart loses them all)
        stale_before[0] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy):
        since = record.info.get(_IDLE_SINCE)
        if (since is not None and since > stale_before[0]
                and time.monotonic() - since < ALIVE_BYPASS_SECONDS
                and not dbapi_connection.closed):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc


def _sqlite_engine(parsed) -> Engine:
    database = parsed.database
    if database and database != ":memory:":
        _create_private(Path(database))
    engine = create_engine(parsed, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Only takes effect on a database with no tables yet, so it must precede WAL mode.
        cursor.execute(f"PRAGMA page_size={_SQLITE_PAGE_SIZE}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _create_private(path: Path) -> None:
    """Create a missing store directory 0700 and a missing store file 0600 (empty: SQLite takes
    it as a new database, and gives its -wal and -shm files the same mode). Left to SQLite, the
    file holding pseudonymised records would be created as the umask allows, often 0644. An
    existing directory or file keeps the mode its owner gave it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def open_store(settings: Settings, *, check: bool = True) -> Store:
    """Open the configured store; with ``check`` a failed connection raises StoreError."""
    try:
        engine = make_engine(settings.database_url)
    except OSError as exc:  # the store's folder or file cannot be made: name the setting
        raise start_up_error(settings, exc) from exc
    if check:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except OperationalError as exc:
            engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StoreError(
                f"Cannot reach the store at VEIL_DATABASE_URL={_redact(settings.database_url)}: "
                f"{reason}. Check that the server is running and the URL is right."
            ) from exc
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(
                f"The store at VEIL_DATABASE_URL={_redact(settings.database_url)} refused the "
                f"connection: {exc}"
            ) from exc
    write_engine = engine.execution_options(sqlite_begin="IMMEDIATE")
    read = sessionmaker(engine, expire_on_commit=False)
    return Store(
        engine=engine, read=read,
        write=sessionmaker(write_engine, expire_on_commit=False),
        glance=(sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"),
                             expire_on_commit=False)
                if engine.dialect.name == "postgresql" else read),
    )


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed>"
