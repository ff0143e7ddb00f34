"""The pipeline's driver SQL, per dialect: a chunk's set-based reads and its inserts.

Owns every statement the hot path sends — the reads a chunk's decisions depend on (stored event
ids, granted consent, stored events per subject-day and subject-month), the inserts of its
events (with the savepoint that proves no id is stored twice), subjects and marks, and the
advisory lock on PostgreSQL — written for SQLite and PostgreSQL as plain driver SQL: a whole
chunk's keys go in as ONE parameter, so a chunk costs one statement per check, never one per
row. It never decides what is stored (``_admission``) and never commits (the pipeline's chunk
transaction does).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy.orm import Session

from data.bulk import bulk_insert as _bulk_insert
from data.errors import StoreError
from data.ingest._rules import EVENT_COLUMNS
from data.models import Subject, SubjectConsent

_SUBJECTS = Subject.__tablename__
_CONSENT = SubjectConsent.__tablename__
_SAVEPOINT = "veil_chunk_events"


class _Sql:
    """The hot path's few statements as driver SQL: a whole chunk's keys go in as ONE
    parameter (a JSON array, read by ``json_each`` on SQLite and ``json_array_elements_text``
    on PostgreSQL), so a chunk costs one statement per check instead of a compiled IN list of
    thousands of bound parameters."""

    def __init__(self, dialect: str):
        if dialect not in {"sqlite", "postgresql"}:
            raise StoreError(f"ingestion supports sqlite and postgresql stores, not {dialect}")
        self.postgres = dialect == "postgresql"
        self.p = "%s" if self.postgres else "?"

    def in_list(self, column: str) -> str:
        if self.postgres:  # the array built once on the server (an InitPlan), then index seeks
            return f"{column} = ANY(ARRAY(SELECT json_array_elements_text({self.p}::json)))"
        return f"{column} IN (SELECT value FROM json_each({self.p}))"

    def values(self, values: Sequence[str]) -> str:
        # One JSON text on both stores: psycopg dumps a Python list as an array in Python,
        # element by element, which was a third of the storing process's time on PostgreSQL.
        return json.dumps(list(values))

    def run(self, session: Session, statement: str, params: tuple, *,
            fetch: bool = True) -> list[tuple]:
        # The driver's cursor, like the inserts: plain tuples, no result objects per row (a
        # consent read returns a row per subject in the chunk).
        raw: Any = session.connection().connection.dbapi_connection
        cursor = raw.cursor()
        try:
            cursor.execute(statement, params)
            return cursor.fetchall() if fetch else []
        finally:
            cursor.close()

    def insert(self, session: Session, table: str, columns: Sequence[str], rows: list[tuple],
               *, on_conflict_do_nothing: bool = False) -> None:
        if not rows:
            return
        statement = (f"INSERT INTO {table} ({', '.join(columns)}) "
                     f"VALUES ({', '.join([self.p] * len(columns))})")
        if on_conflict_do_nothing:
            statement += " ON CONFLICT DO NOTHING"
        raw: Any = session.connection().connection.dbapi_connection
        cursor = raw.cursor()
        try:
            cursor.executemany(statement, rows)
        finally:
            cursor.close()

    # --- the chunk's transaction (PostgreSQL) ------------------------------------------------

    def lock_product(self, session: Session, key: tuple[int, int]) -> None:
        """Take the chunk's advisory lock on (tenant, product) (see the pipeline's
        ``data.locks``) and, for this transaction only, turn off sequential scans (see
        ``_tuning._Statistics``) and JIT compilation (a chunk's reads look costly, and
        compiling them took longer than running them), and give its sorts room: the counts
        per subject-day sort a chunk's worth of groups, which spilled to disk at the 4 MB
        default."""
        self.run(session, "SELECT pg_advisory_xact_lock(%s, %s), "
                 "set_config('enable_seqscan', 'off', true), "
                 "set_config('jit', 'off', true), "
                 "set_config('work_mem', '32MB', true)", key)

    # --- set-based reads (one statement per chunk) -------------------------------------------

    def existing_events(self, session: Session, table: str, keys: list[str]) -> set[str]:
        """The ``keys`` (sorted, so the index is walked in order) already stored."""
        if not keys:
            return set()
        if self.postgres:
            statement = f"SELECT event_id FROM {table} WHERE {self.in_list('event_id')}"
        else:  # the key list as the outer loop: one ordered index seek per key, no temp index
            statement = (f"SELECT e.event_id FROM json_each(?) AS k CROSS JOIN {table} AS e "
                         f"ON e.event_id = k.value")
        return {key for (key,) in self.run(session, statement, (self.values(keys),))}

    def granted_consent(self, session: Session, *, tenant: str, vertical: str,
                        pseudonyms: list[str]) -> dict[str, float]:
        """pseudonym → epoch seconds since which consent for ``vertical`` is granted, for those
        of ``pseudonyms`` that have it."""
        p = self.p
        if self.postgres:
            rows = self.run(session, (
                f"SELECT pseudonym, changed_at FROM {_CONSENT} WHERE tenant_id = {p} "
                f"AND vertical = {p} AND status = 'granted' AND {self.in_list('pseudonym')}"),
                (tenant, vertical, self.values(pseudonyms)))
        else:
            # The list as the outer loop: one primary-key seek per subject. Left to itself,
            # SQLite reads every granted consent of the tenant through the withdrawals index
            # and filters it, which grows with the number of subjects, not with the chunk.
            rows = self.run(session, (
                f"SELECT c.pseudonym, c.changed_at FROM json_each(?) AS k CROSS JOIN {_CONSENT} "
                f"AS c ON c.tenant_id = ? AND c.pseudonym = k.value AND c.vertical = ? "
                f"WHERE c.status = 'granted'"), (self.values(pseudonyms), tenant, vertical))
        epochs: dict[Any, float] = {}  # grants recorded in bulk share their times
        granted = {}
        for pseudonym, changed_at in rows:
            epoch = epochs.get(changed_at)
            if epoch is None:
                epoch = epochs[changed_at] = _epoch(changed_at)
            granted[pseudonym] = epoch
        return granted

    def daily_counts(self, session: Session, table: str, *, tenant: str, product: str,
                     subject_days: str) -> dict[tuple[str, str, str], int]:
        """Stored events per (pseudonym, day, event type) for exactly the chunk's subject-days
        ("pseudonym|day", sorted, as one JSON array): one index seek per subject-day on
        (tenant, pseudonym, day), never a subject's history. Groups without stored events are
        absent."""
        if subject_days == "[]":
            return {}
        p = self.p
        if self.postgres:
            statement = (
                f"SELECT e.pseudonym, e.day, e.event_type, count(*) "
                f"FROM {_pairs(p, 'day')} "
                f"JOIN {table} AS e ON e.tenant_id = {p} AND e.pseudonym = k.pseudonym "
                f"AND e.day = k.day WHERE e.product_id = {p} "
                f"GROUP BY e.pseudonym, e.day, e.event_type")
        else:
            # CROSS JOIN keeps the key list as the outer loop (SQLite's way to fix join order).
            statement = (
                f"SELECT e.pseudonym, e.day, e.event_type, count(*) "
                f"FROM json_each({p}) AS k CROSS JOIN {table} AS e "
                f"ON e.tenant_id = {p} AND e.pseudonym = substr(k.value, 1, 32) "
                f"AND e.day = substr(k.value, 34) WHERE e.product_id = {p} "
                f"GROUP BY e.pseudonym, e.day, e.event_type")
        return _group_counts(self.run(session, statement, (subject_days, tenant, product)))

    def span_counts(self, session: Session, table: str, *, tenant: str, product: str,
                    pseudonyms: str, first: str, end: str) -> dict[tuple[str, str, str], int]:
        """Stored events per (pseudonym, day, event type) of the ``pseudonyms`` (sorted, as one
        JSON array) on the days from ``first`` up to, not including, ``end`` (ISO dates): one
        range seek per subject on the (tenant, pseudonym, day) index. Groups without stored
        events are absent."""
        if pseudonyms == "[]":
            return {}
        p = self.p
        if self.postgres:
            statement = (
                f"SELECT e.pseudonym, e.day, e.event_type, count(*) "
                f"FROM json_array_elements_text({p}::json) AS k(pseudonym) "
                f"JOIN {table} AS e ON e.tenant_id = {p} AND e.pseudonym = k.pseudonym "
                f"AND e.day >= {p}::date AND e.day < {p}::date WHERE e.product_id = {p} "
                f"GROUP BY e.pseudonym, e.day, e.event_type")
        else:
            statement = (
                f"SELECT e.pseudonym, e.day, e.event_type, count(*) "
                f"FROM json_each({p}) AS k CROSS JOIN {table} AS e "
                f"ON e.tenant_id = {p} AND e.pseudonym = k.value "
                f"AND e.day >= {p} AND e.day < {p} WHERE e.product_id = {p} "
                f"GROUP BY e.pseudonym, e.day, e.event_type")
        return _group_counts(self.run(session, statement,
                                      (pseudonyms, tenant, first, end, product)))

    def day_and_month_counts(self, session: Session, table: str, *, tenant: str,
                             product: str, subject_months: str
                             ) -> tuple[dict[tuple[str, str, str], int],
                                        dict[tuple[str, str, str], int]]:
        """Stored events per (pseudonym, day, event type) and per (pseudonym, month, event
        type) for every day of the chunk's subject-months ("pseudonym|YYYY-MM-01", sorted, as
        one JSON array): one range seek per subject-month on the (tenant, pseudonym, day) index,
        never a subject's history. For a product with a monthly bound this replaces the daily
        counts' seek per subject-day: every subject-day of the chunk lies in one of its
        subject-months, so the days hold every group the daily bound needs (and days of those
        months the chunk has no event on, which no decision looks up). Groups without stored
        events are absent."""
        if subject_months == "[]":
            return {}, {}
        p = self.p
        if self.postgres:
            statement = (
                f"SELECT e.pseudonym, e.day, e.event_type, count(*) "
                f"FROM {_pairs(p, 'month')} "
                f"JOIN {table} AS e ON e.tenant_id = {p} AND e.pseudonym = k.pseudonym "
                f"AND e.day >= k.month AND e.day < (k.month + interval '1 month')::date "
                f"WHERE e.product_id = {p} GROUP BY e.pseudonym, e.day, e.event_type")
        else:
            statement = (
                f"SELECT e.pseudonym, e.day, e.event_type, count(*) "
                f"FROM json_each({p}) AS k CROSS JOIN {table} AS e "
                f"ON e.tenant_id = {p} AND e.pseudonym = substr(k.value, 1, 32) "
                f"AND e.day >= substr(k.value, 34) "
                f"AND e.day < date(substr(k.value, 34), '+1 month') WHERE e.product_id = {p} "
                f"GROUP BY e.pseudonym, e.day, e.event_type")
        days = _group_counts(self.run(session, statement, (subject_months, tenant, product)))
        months: dict[tuple[str, str, str], int] = {}
        for (pseudonym, day, event_type), n in days.items():
            key = (pseudonym, day[:8] + "01", event_type)
            months[key] = months.get(key, 0) + n
        return days, months

    # --- inserts -------------------------------------------------------------------------------

    def insert_new_events(self, session: Session, table: str, rows: list[tuple]) -> bool:
        """Insert event rows none of whose ids should be stored yet. True when every row went
        in; False, with nothing inserted, when the store already held one of the ids."""
        if self.postgres:
            return _copy_new_events(session, table, rows)
        return _insert_new_events(session, table, rows)

    def insert_events(self, session: Session, table: str, rows: list[tuple]) -> None:
        """Insert event rows whose ids are known not to be stored."""
        _bulk_insert(session, table, EVENT_COLUMNS, rows)

    def insert_subjects(self, session: Session, tenant: str,
                        new: list[tuple[str, tuple]]) -> None:
        """Subjects (pseudonym, first accepted event) unless already stored, with the district
        and time of that event."""
        if self.postgres and new:  # one statement for all, not one per subject
            # (pseudonym, district, time) triples as one JSON text, like the reads' keys.
            self.run(session, (
                f"INSERT INTO {_SUBJECTS} (tenant_id, pseudonym, district, created_at) "
                f"SELECT %s, r->>0, r->>1, (r->>2)::timestamp "
                f"FROM json_array_elements(%s::json) AS r ON CONFLICT DO NOTHING"), (
                tenant, json.dumps([(pseudonym, row[9], row[5]) for pseudonym, row in new])),
                fetch=False)
        else:
            self.insert(session, _SUBJECTS, ("tenant_id", "pseudonym", "district",
                                             "created_at"),
                        [(tenant, pseudonym, row[9], row[5]) for pseudonym, row in new],
                        on_conflict_do_nothing=True)


def _pairs(p: str, when: str) -> str:
    """PostgreSQL: a chunk's "pseudonym|date" keys (one JSON array, the same text SQLite reads)
    as rows k(pseudonym, <when>), split on the server (a pseudonym is 32 hex digits)."""
    return (f"(SELECT split_part(v, '|', 1) AS pseudonym, split_part(v, '|', 2)::date AS {when} "
            f"FROM json_array_elements_text({p}::json) AS v) AS k")


def _group_counts(rows: list[tuple]) -> dict[tuple[str, str, str], int]:
    """(pseudonym, day or month, event type, count) rows as a dict keyed by the group, the date
    as ISO text (SQLite hands back text, PostgreSQL a date)."""
    return {(pseudonym, when if isinstance(when, str) else when.isoformat(), event_type): n
            for pseudonym, when, event_type, n in rows}


def _epoch(moment: datetime | str) -> float:
    if isinstance(moment, str):  # SQLite hands back the stored text
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC).timestamp()


def _insert_new_events(session: Session, table: str, rows: list[tuple]) -> bool:
    """Insert event rows none of whose ids should be stored yet (SQLite). True when every row
    went in; False, with nothing inserted, when the store already held one of the ids."""
    if not rows:
        return True
    raw: Any = session.connection().connection.dbapi_connection
    cursor = raw.cursor()
    try:
        cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
        cursor.executemany(
            f"INSERT OR IGNORE INTO {table} ({', '.join(EVENT_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})", rows)
        complete = cursor.rowcount == len(rows)
        if not complete:
            cursor.execute(f"ROLLBACK TO {_SAVEPOINT}")
        cursor.execute(f"RELEASE {_SAVEPOINT}")
        return complete
    finally:
        cursor.close()


def _copy_new_events(session: Session, table: str, rows: list[tuple]) -> bool:
    """COPY event rows none of whose ids should be stored yet (PostgreSQL). True when every row
    went in; False, with nothing inserted, when the store already held one of the ids (the
    primary key refuses the COPY whole; the savepoint takes the transaction back to before
    it)."""
    if not rows:
        return True
    raw: Any = session.connection().connection.dbapi_connection
    with raw.cursor() as cursor:
        cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        _bulk_insert(session, table, EVENT_COLUMNS, rows)
    except psycopg.errors.UniqueViolation:
        with raw.cursor() as cursor:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return False
    with raw.cursor() as cursor:
        cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return True

