"""Statements on the driver's cursor (``data.prepared``, issue 18): they read and write what
SQLAlchemy would, raise SQLAlchemy's errors, are seen by the engine's cursor events, and a
batch runs its checks in order once all its statements ran — on both stores."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import bindparam, event, func, insert, select
from sqlalchemy.exc import IntegrityError

from data.models import Release as ReleaseRow
from data.models import ReleasePeriod
from data.prepared import Batch, Prepared

_releases = ReleaseRow.__table__
_INSERT_RELEASE = Prepared(insert(_releases).values(
    {c.key: bindparam(c.key, type_=c.type) for c in _releases.columns}))
_PERIODS = Prepared(
    select(ReleasePeriod.period_key, ReleasePeriod.period, ReleasePeriod.cells,
           ReleasePeriod.measurement, ReleasePeriod.derived)
    .where(ReleasePeriod.period_key.in_(bindparam("keys", expanding=True)))
    .order_by(ReleasePeriod.period_key), expanding=("keys",))
_COUNT = Prepared(select(func.count()).select_from(_releases))
_RELEASE = Prepared(select(_releases).where(_releases.c.id == bindparam("id")))


def _release(id_: str, **overrides) -> dict:
    values = dict(id=id_, query_key=f"key-{id_}", tenant_id="kigali-east", principal="pm@x",
                  role="policy_maker", product_id="health.vaccinations",
                  query={"metric": "doses", "filters": [["district", "KGL-GAS"]]},
                  policy_version="p", data_version=3, mechanism="discrete laplace",
                  epsilon=0.5, delta=1e-7, cells=[{"key": ["2026-06"], "value": 12.0}],
                  digest=f"d-{id_}", published=False,
                  created_at=datetime(2026, 11, 1, 9, 30))  # no microseconds: stored alike
    values.update(overrides)
    return values


def test_rows_are_what_sqlalchemy_reads_and_writes(store):
    """Dates, times, JSON, booleans and floats round-trip as through SQLAlchemy, whichever
    way a row was written; an IN list of any length gets its own compiled form."""
    with store.write.begin() as session:
        _INSERT_RELEASE.rows(session, _release("r-1"))
        session.execute(insert(_releases), [_release("r-2", created_at=datetime(
            2026, 11, 2, 10, 0, 0, 123456), published=True)])
        session.execute(insert(ReleasePeriod.__table__), [
            {"period_key": f"p-{i}", "release_id": "r-1", "tenant_id": "kigali-east",
             "product_id": "health.vaccinations", "period": date(2026, 1 + i, 1),
             "cells": [{"n": i}], "measurement": {"counts": [[i]]} if i else None,
             "derived": i % 2 == 1} for i in range(4)])
    with store.read() as session:
        for id_ in ("r-1", "r-2"):
            expected = tuple(session.execute(select(_releases).where(_releases.c.id == id_))
                             .one())
            assert _RELEASE.first(session, {"id": id_}) == expected
        for keys in (["p-2"], ["p-0", "p-1", "p-3"], ["p-0", "nothing"]):
            expected = [tuple(row) for row in session.execute(
                _PERIODS.statement, {"keys": keys}).all()]
            assert _PERIODS.rows(session, {"keys": keys}) == expected
    assert expected == [("p-0", date(2026, 1, 1), [{"n": 0}], None, False)]
    with store.read() as session:
        written = session.get(ReleaseRow, "r-1")
    assert (written.created_at, written.query, written.published, written.delta) == (
        datetime(2026, 11, 1, 9, 30), _release("r-1")["query"], False, 1e-7)


def test_a_unique_violation_is_sqlalchemys_integrity_error(store):
    with store.write.begin() as session:
        _INSERT_RELEASE.rows(session, _release("r-1"))
    with pytest.raises(IntegrityError), store.write.begin() as session:
        _INSERT_RELEASE.rows(session, _release("r-1", query_key="another"))
    with store.read() as session:
        assert _COUNT.scalar(session) == 1


def test_the_engines_cursor_events_see_every_statement(store):
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if not statement.startswith("BEGIN"):  # SQLite's, which Veil's engine sends itself
            seen.append(" ".join(statement.split()[:3]))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        with store.write.begin() as session:
            _INSERT_RELEASE.rows(session, _release("r-1"))
            batch = Batch()
            batch.add(_COUNT, {})
            batch.add(_INSERT_RELEASE, _release("r-2"))
            batch.send(session)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert seen == ["INSERT INTO releases", "SELECT count(*) AS", "INSERT INTO releases"]


def test_a_batch_checks_every_statements_rows_in_order_after_all_ran(store):
    order: list[str] = []

    def count(label):
        def check(rows):
            order.append(label)
            return rows[0][0]
        return check

    with store.write.begin() as session:
        batch = Batch()
        before = batch.add(_COUNT, {}, then=count("before"))
        batch.add(_INSERT_RELEASE, _release("r-1"))
        batch.add(_INSERT_RELEASE, [], many=True)  # nothing to send: no statement
        after = batch.add(_COUNT, {}, then=count("after"))
        sent = batch.send(session)
    assert (sent[before], sent[after], order) == (0, 1, ["before", "after"])


def test_a_failing_check_leaves_the_transaction_to_roll_back(store):
    def refuse(rows):
        raise LookupError("refused")

    with pytest.raises(LookupError), store.write.begin() as session:
        batch = Batch()
        batch.add(_INSERT_RELEASE, _release("r-1"))
        batch.add(_COUNT, {}, then=refuse)
        batch.send(session)
    with store.read() as session:
        assert _COUNT.scalar(session) == 0


def test_a_failing_statement_raises_and_runs_no_check(store):
    with store.write.begin() as session:
        _INSERT_RELEASE.rows(session, _release("r-1"))
    checked: list = []
    with pytest.raises(IntegrityError), store.write.begin() as session:
        batch = Batch()
        batch.add(_COUNT, {}, then=checked.append)
        batch.add(_INSERT_RELEASE, _release("r-1", query_key="another"))
        batch.add(_COUNT, {}, then=checked.append)
        batch.send(session)
    assert checked == []
    with store.read() as session:
        assert _COUNT.scalar(session) == 1


def test_a_sessions_statements_run_in_its_current_transaction(store):
    """A session that commits or rolls back and goes on runs its next statements in its new
    transaction (which may hold another connection), never on the one it had before."""
    session = store.write()
    try:
        _INSERT_RELEASE.rows(session, _release("r-1"))  # begins the session's transaction
        session.commit()
        # SQLAlchemy begins the next transaction (on another connection from the pool)
        assert session.scalar(select(func.count()).select_from(_releases)) == 1
        _INSERT_RELEASE.rows(session, _release("r-2"))
        assert _COUNT.scalar(session) == 2  # its own uncommitted row: the same transaction
        session.rollback()
        assert session.scalar(select(func.count()).select_from(_releases)) == 1
        assert _COUNT.scalar(session) == 1
        session.rollback()
    finally:
        session.close()
    with store.read() as session:
        assert _COUNT.scalar(session) == 1


def test_a_statement_without_a_result_set_returns_no_rows(store):
    """An UPDATE returns no result set, a SELECT that matches nothing an empty one: both
    are no rows, and the SELECT's later rows still convert by its columns' types."""
    update_nothing = Prepared(_releases.update().where(_releases.c.id == bindparam("id"))
                              .values(published=True))
    with store.write.begin() as session:
        assert update_nothing.rows(session, {"id": "nobody"}) == []
        assert _RELEASE.rows(session, {"id": "r-1"}) == []
        _INSERT_RELEASE.rows(session, _release("r-1"))
        (row,) = _RELEASE.rows(session, {"id": "r-1"})
    assert row[_releases.c.keys().index("created_at")] == datetime(2026, 11, 1, 9, 30)
    assert row[_releases.c.keys().index("cells")] == [{"key": ["2026-06"], "value": 12.0}]
