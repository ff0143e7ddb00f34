"""Store tuning for a bulk ingest run: SQLite's page cache and checkpoints, PostgreSQL's statistics.

Owns what a run changes in the store's settings, or asks of it, so that chunk after chunk of
bulk inserts stays fast: ``_BulkSettings`` (the embedded store's page cache and WAL checkpoints
for the run, put back when it ends) and ``_Statistics`` (PostgreSQL's planner statistics kept
in step with the tables the run reads and grows). It never writes a row, never changes
durability (every commit is as durable as without it) and never outlives the run.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from data.bulk import SQLITE_BULK_CACHE_KIB
from data.engine import Store
from data.models import SubjectConsent

_CONSENT = SubjectConsent.__tablename__

#: The event table's columns a chunk's reads filter on.
_CHECKED_COLUMNS = "event_id, tenant_id, product_id, pseudonym, day"


class _Statistics:
    """Keeps PostgreSQL's planner statistics in step with the tables a run reads and grows.

    Bulk inserts do not update statistics and autovacuum gets to them late. Without column
    statistics every equality looks equally selective, and the planner may read a chunk's
    keys through the wrong index — the tenant's granted consents, or a product's events, per
    key — and ingestion turns quadratic (measured: a few hundred rows/s once the table held
    100,000 rows). The chunk's reads are index seeks per key, with sequential scans off for the
    chunk's transaction, and they stay right as long as the statistics are within a factor of
    two of the table. So the consent and event tables are
    analysed when a run starts if they changed by more than their analysed size (and 10,000
    rows) since they were last analysed, and the event table again whenever the run has added
    as many rows as it held when last analysed: a doubling schedule, five times for a million
    rows into an empty table, where analysing after almost every chunk had cost an eighth of
    the run. When a run that added 10,000 rows and a fifth of the table's size ends, the table
    is analysed once more for the queries that come after it (materialisation). Small runs (an
    API request) never trigger it; autovacuum covers them. SQLite plans these queries from the
    index definitions alone.
    """

    def __init__(self, store: Store, table: str):
        self.store, self.table = store, table
        self.enabled = store.dialect == "postgresql"
        self.rows_at_last = 0
        self.added = 0
        self.checked = False

    def before_chunk(self) -> None:
        """At the run's first chunk: analyse what changed a lot since it was last analysed."""
        if not self.enabled or self.checked:
            return
        self.checked = True
        with self.store.engine.connect() as connection:
            stale = [name for name, rows, changed in connection.exec_driver_sql(
                "SELECT c.relname, c.reltuples, s.n_mod_since_analyze FROM pg_class c "
                "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname IN (%s, %s)",
                (self.table, _CONSENT)).all()
                if (changed or 0) >= max(10_000, rows or 0)]
            for name in stale:
                connection.exec_driver_sql(f"ANALYZE {name}")
            self.rows_at_last = self._rows(connection)
            connection.commit()

    def after_chunk(self, inserted: int) -> None:
        if not self.enabled:
            return
        self.added += inserted
        if self.added >= max(10_000, self.rows_at_last):
            # During the run only the columns the chunk's reads filter on: less to compute.
            self._analyze(f"{self.table} ({_CHECKED_COLUMNS})")

    def after_run(self) -> None:
        if self.enabled and self.added >= max(10_000, self.rows_at_last // 5):
            self._analyze(self.table)

    def _analyze(self, target: str) -> None:
        with self.store.engine.connect() as connection:
            connection.exec_driver_sql(f"ANALYZE {target}")
            self.rows_at_last = self._rows(connection)
            connection.commit()
        self.added = 0

    def _rows(self, connection: Any) -> int:
        rows = connection.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE relname = %s", (self.table,)).scalar()
        return max(int(rows or 0), 0)  # -1: never analysed


class _BulkSettings:
    """The embedded store's settings for a bulk run, put back as they were when the run ends:
    a 256 MB page cache, and WAL checkpoints in a background thread instead of in the commit.

    A chunk's inserts land on pages all over the random-key indexes. With SQLite's default
    2 MB cache those pages are evicted and re-read within one transaction, and a cache reset
    between chunks makes every chunk re-read them all (measured: half the insert rate at a
    million rows). The cache belongs to the pooled connection; a run uses one connection at a
    time, which the pool hands back to it for every chunk.

    A commit that takes the WAL past 1,000 pages (every chunk does) would also copy the WAL
    into the database and wait for two fsyncs before the next chunk could start. Instead the
    run's connection does not checkpoint, and after each commit a thread with its own
    connection checkpoints PASSIVE (never waiting for or blocking the writer) while the next
    chunk is prepared: the driver lets go of the GIL for the whole call. SQLite rewinds the WAL
    only when a write transaction begins after a complete checkpoint, so once the WAL holds
    more than ``_WAL_BYTES`` the next chunk waits for the running checkpoint first,
    which keeps the WAL file under that size plus one chunk's pages (measured: 484 MB at a
    million rows in 50,000-row chunks; SQLite removes the file when the last connection
    closes). Durability is not touched: a chunk is committed once its WAL frames are written,
    checkpointed or not, and each checkpoint still syncs the WAL first. When the run ends the
    connection checkpoints again as usual.
    """

    _CACHE_KIB = SQLITE_BULK_CACHE_KIB
    _WAL_BYTES = 256 << 20
    _PRAGMAS = (("cache_size", _CACHE_KIB), ("wal_autocheckpoint", 0))

    def __init__(self, store: Store):
        database = store.engine.url.database if store.dialect == "sqlite" else None
        self.enabled = store.dialect == "sqlite"
        self.store = store
        self.previous: dict[str, int] = {}
        self.path = database if database and database != ":memory:" else None
        self.wake, self.idle = threading.Event(), threading.Event()
        self.idle.set()
        self.wal_frames = 0
        self.page_bytes = 0  # the store's page size, read by the checkpoint thread
        self.stopping = False
        self.thread: threading.Thread | None = None

    def begin(self, session: Session) -> None:
        """Start a chunk's transaction with the bulk settings (waiting first, if the WAL has
        grown past its bound, for the checkpoint that lets it rewind)."""
        if not self.enabled:
            return
        # Before the transaction begins: only a transaction begun after the checkpoint rewinds.
        if self.wal_frames * self.page_bytes > self._WAL_BYTES:
            self.idle.wait(timeout=60)  # bounded: a stuck checkpoint only costs WAL size
        connection = session.connection()
        for name, value in self._PRAGMAS:
            if name == "wal_autocheckpoint" and self.path is None:
                continue
            current = int(connection.exec_driver_sql(f"PRAGMA {name}").scalar())
            if current != value:
                self.previous.setdefault(name, current)
                connection.exec_driver_sql(f"PRAGMA {name} = {value}")

    def committed(self) -> None:
        """A chunk is committed: checkpoint in the background (at most one at a time)."""
        if not self.enabled or self.path is None:
            return
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._checkpoints, daemon=True,
                                           name="veil-ingest-checkpoint")
            self.thread.start()
        self.idle.clear()
        self.wake.set()

    def _checkpoints(self) -> None:
        try:
            connection = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error:
            self.wal_frames = 0
            self.idle.set()
            return
        try:
            try:
                [(self.page_bytes,)] = connection.execute("PRAGMA page_size").fetchall()
            except sqlite3.Error:
                pass  # 0: the WAL is left unbounded, as if checkpoints kept up
            while True:
                self.wake.wait()
                self.wake.clear()
                if self.stopping:
                    return
                try:
                    [(_, self.wal_frames, _)] = connection.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    self.wal_frames = 0  # best effort: the connection checkpoints after the run
                if not self.wake.is_set():  # else a newer commit is waiting for a checkpoint
                    self.idle.set()
        finally:
            connection.close()
            self.idle.set()

    def restore(self) -> None:
        if not self.enabled:
            return
        if self.thread is not None:
            self.stopping = True
            self.wake.set()
            self.thread.join()
            self.thread, self.stopping = None, False
        if not self.previous:
            return
        try:
            with self.store.write() as session:
                connection = session.connection()
                for name, value in self.previous.items():
                    connection.exec_driver_sql(f"PRAGMA {name} = {value}")
                session.commit()
        except SQLAlchemyError:
            pass  # best effort: a larger cache costs memory, never correctness
        self.previous = {}
