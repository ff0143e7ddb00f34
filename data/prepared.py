"""Statements for hot paths, compiled once and sent on the driver's cursor.

A release runs about fifteen small statements. Through SQLAlchemy each costs 20–40 µs of
Python beyond the driver (cache key, execution context, result wrapping: measured 37 µs per
ORM execution against 2 µs on SQLite's own cursor), which was a third of the gate's own cost.
``Prepared`` keeps SQLAlchemy where it is good — building the statement and compiling it for
the dialect, its placeholders, literal values, expanded ``IN`` lists and type conversions — and
does that once per dialect and parameter shape; each execution then converts its parameters
with the compiled bind processors, runs on the DBAPI cursor of the caller's transaction and
converts the result columns with the dialect's result processors. The rows are plain tuples.

The engine's ``before_cursor_execute`` and ``after_cursor_execute`` listeners still see every
statement (without an execution context). Driver errors are raised as SQLAlchemy's (``IntegrityError``, ``OperationalError`` …), so a
caller's handling of store errors is the same whichever way a statement was sent. Transactions
stay SQLAlchemy's: the statement runs in the session's (or connection's) transaction, begun by
SQLAlchemy's own ``begin`` (SQLite's ``BEGIN IMMEDIATE`` for writers included).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

__all__ = ["Batch", "Prepared"]


class _Form:
    """One compiled form of a statement: for one dialect and one length of each expanding
    parameter."""

    __slots__ = ("sql", "order", "expansion", "defaults", "processors", "results", "_columns",
                 "_dialect")

    def __init__(self, statement: ClauseElement, dialect, lengths: dict[str, int]):
        compiled = statement.compile(dialect=dialect)
        sample = {bind.key: None for bind in compiled.binds.values() if bind.required}
        sample.update({name: [None] * n for name, n in lengths.items()})
        state = compiled.construct_expanded_state(sample)
        self.sql: str = state.statement
        #: parameter names in placeholder order for a positional driver (SQLite), else None
        self.order: tuple[str, ...] | None = (tuple(state.positiontup)
                                               if compiled.positional else None)
        self.expansion: dict[str, list[str]] = {
            name: list(names) for name, names in (state.parameter_expansion or {}).items()}
        #: values the statement itself carries (literals SQLAlchemy bound for it)
        self.defaults: dict[str, Any] = {
            name: bind.effective_value for name, bind in compiled.binds.items()
            if not bind.required and name not in lengths}
        self.processors = {
            name: process for name, bind in compiled.binds.items() if name not in lengths
            and (process := bind.type.dialect_impl(dialect).bind_processor(dialect))}
        self.processors.update(state.processors)  # the expanded ones
        self._columns = list(getattr(statement, "exported_columns", ()))
        self._dialect = dialect
        #: the result columns' processors, known at the first execution (PostgreSQL's pick
        #: theirs by the type the server describes)
        self.results: list | None = None

    def parameters(self, params: Mapping[str, Any]):
        values = dict(self.defaults)
        values.update(params)
        for name, names in self.expansion.items():
            values.update(zip(names, values.pop(name)))
        for name, process in self.processors.items():
            if name in values:
                values[name] = process(values[name])
        if self.order is None:
            return values
        return tuple(values[name] for name in self.order)

    def convert(self, rows: list[tuple], cursor) -> list[tuple]:
        if self.results is None:  # the first execution: the cursor describes the columns
            dialect = self._dialect
            found = [column.type.dialect_impl(dialect).result_processor(dialect, described[1])
                     for column, described in zip(self._columns, cursor.description or ())]
            self.results = found if any(found) else []
        if not self.results:
            return rows
        processors = self.results
        return [tuple(value if process is None else process(value)
                      for process, value in zip(processors, row)) for row in rows]


class Prepared:
    """A SQLAlchemy Core statement sent on the driver's cursor (see the module docstring).

    ``expanding`` names its ``bindparam(..., expanding=True)`` parameters (``IN`` lists): a
    form is compiled per length of each. Returns rows as tuples in the statement's column
    order, converted as SQLAlchemy would convert them.
    """

    def __init__(self, statement: ClauseElement, *, expanding: Sequence[str] = ()):
        self.statement = statement
        self._expanding = tuple(expanding)
        self._forms: dict[tuple, _Form] = {}

    def _form(self, dialect, params: Mapping[str, Any]) -> _Form:
        lengths = {name: len(params[name]) for name in self._expanding}
        key = (dialect.name, dialect.driver, *lengths.values())
        form = self._forms.get(key)
        if form is None:
            form = self._forms[key] = _Form(self.statement, dialect, lengths)
        return form

    def rows(self, on: Session | Connection, params: Mapping[str, Any] | None = None
             ) -> list[tuple]:
        """Run the statement with ``params`` in ``on``'s transaction; every row it returns."""
        connection = _connection(on)
        params = params or {}
        form = self._form(connection.dialect, params)
        driver_params = form.parameters(params)
        cursor = connection.connection.driver_connection.cursor()
        try:
            sql, driver_params = _before(connection, cursor, form.sql, driver_params, False)
            cursor.execute(sql, driver_params)
            rows = cursor.fetchall() if _returns_rows(cursor) else []
            _after(connection, cursor, sql, driver_params, False)
            return form.convert(rows, cursor)
        except connection.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(form.sql, driver_params, exc, connection) from exc
        finally:
            cursor.close()

    def first(self, on: Session | Connection, params: Mapping[str, Any] | None = None
              ) -> tuple | None:
        rows = self.rows(on, params)
        return rows[0] if rows else None

    def scalar(self, on: Session | Connection, params: Mapping[str, Any] | None = None):
        row = self.first(on, params)
        return None if row is None else row[0]

    def many(self, on: Session | Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement that returns nothing once per parameter set, as one driver
        ``executemany`` (one prepared statement on SQLite, one pipelined round trip on
        PostgreSQL)."""
        if not params:
            return
        connection = _connection(on)
        form = self._form(connection.dialect, params[0])
        driver_params = [form.parameters(p) for p in params]
        cursor = connection.connection.driver_connection.cursor()
        try:
            sql, driver_params = _before(connection, cursor, form.sql, driver_params, True)
            cursor.executemany(sql, driver_params)
            _after(connection, cursor, sql, driver_params, True)
        except connection.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(form.sql, driver_params, exc, connection) from exc
        finally:
            cursor.close()


class Batch:
    """Statements sent together in the caller's transaction: one round trip on PostgreSQL
    (psycopg's pipeline mode, which queues the transaction's BEGIN too), one after another on
    SQLite. Each may come with ``then``, the check of its rows; the checks run in order once
    every statement has run, so a statement's rows may only be looked at in its check. A
    check that raises leaves the transaction for the caller to roll back (the later
    statements ran, and roll back with it). A failing statement raises SQLAlchemy's error and
    runs no check."""

    def __init__(self):
        self._calls: list[tuple[Prepared, Any, bool, Callable[[list[tuple]], Any] | None]] = []

    def add(self, prepared: Prepared, params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
            *, many: bool = False, then: Callable[[list[tuple]], Any] | None = None) -> int:
        """Queue ``prepared`` with ``params`` (a list of parameter sets with ``many``); its
        position in what ``send`` returns."""
        self._calls.append((prepared, params, many, then))
        return len(self._calls) - 1

    def send(self, on: Session | Connection) -> list[Any]:
        """Run every statement, then every check; what each check returned (its rows when it
        has none)."""
        connection = _connection(on)
        # an executemany with no parameter sets sends nothing (its check sees no rows)
        calls = [call for call in self._calls if not (call[2] and not call[1])]
        if connection.dialect.name == "postgresql" and len(calls) > 1:
            found = iter(_pipelined(connection, calls))
        else:
            found = iter([p.many(connection, params) if many else p.rows(connection, params)
                          for p, params, many, _then in calls])
        out = []
        for _p, params, many, then in self._calls:
            rows = [] if many and not params else next(found)
            out.append(then(rows or []) if then is not None else rows)
        return out


def _pipelined(connection: Connection, calls) -> list[list[tuple] | None]:
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    sent = []
    cursors = []
    try:
        with driver.pipeline():
            for prepared, params, many, _then in calls:
                cursor = driver.cursor()
                cursors.append(cursor)
                if many:
                    form = prepared._form(dialect, params[0])
                    driver_params = [form.parameters(p) for p in params]
                else:
                    form = prepared._form(dialect, params)
                    driver_params = form.parameters(params)
                sql, driver_params = _before(connection, cursor, form.sql, driver_params, many)
                if many:
                    cursor.executemany(sql, driver_params)
                else:
                    cursor.execute(sql, driver_params)
                sent.append((form, sql, driver_params, many))
        out: list[list[tuple] | None] = []
        for cursor, (form, sql, driver_params, many) in zip(cursors, sent):
            _after(connection, cursor, sql, driver_params, many)
            if many:
                out.append(None)
                continue
            out.append(form.convert(cursor.fetchall() if _returns_rows(cursor) else [], cursor))
        return out
    except dialect.loaded_dbapi.Error as exc:
        sql, driver_params = (sent[-1][1], sent[-1][2]) if sent else ("", {})
        raise _wrapped(sql, driver_params, exc, connection) from exc
    finally:
        for cursor in cursors:
            cursor.close()


def _connection(on: Session | Connection) -> Connection:
    """The connection of ``on``'s transaction (beginning one as SQLAlchemy would).

    ``Session.connection()`` walks SQLAlchemy's transaction state machine on every call (a
    twentieth of a fresh release's Python over its fifteen statements), so a session's
    connection is kept in its ``info`` with the root transaction it belongs to: a session
    keeps one connection per transaction, and a new transaction (after a commit or rollback)
    is a new object, so it asks again."""
    if not isinstance(on, Session):
        return on
    transaction = on.get_transaction()
    known = on.info.get(_CONNECTION_OF) if transaction is not None else None
    if known is not None and known[0] is transaction:
        return known[1]
    connection = on.connection()
    on.info[_CONNECTION_OF] = (on.get_transaction(), connection)
    return connection


_CONNECTION_OF = "veil.prepared.connection"


def _returns_rows(cursor) -> bool:
    """Whether the cursor's statement returned a result set (perhaps empty). A psycopg
    cursor's ``description`` builds a ``Column`` per column on every access; its result says
    the same at once."""
    result = getattr(cursor, "pgresult", _NOT_PSYCOPG)
    if result is _NOT_PSYCOPG:
        return cursor.description is not None
    return result is not None and (result.nfields > 0 or result.status == _TUPLES_OK)


_NOT_PSYCOPG = object()
_TUPLES_OK = 2  # libpq's PGRES_TUPLES_OK (psycopg.pq.ExecStatus.TUPLES_OK)


def _before(connection: Connection, cursor, sql: str, params, many: bool):
    """The engine's ``before_cursor_execute`` listeners, as SQLAlchemy calls them (without an
    execution context): what watches statements — logging, tests — sees these too."""
    # SQLAlchemy's own test before it dispatches an event: usually none is listened for, and
    # building the joined listener collection costs more than the statement's own Python
    if connection._has_events or connection.engine._has_events:
        for listen in connection.dispatch.before_cursor_execute:
            sql, params = listen(connection, cursor, sql, params, None, many)
    return sql, params


def _after(connection: Connection, cursor, sql: str, params, many: bool) -> None:
    if connection._has_events or connection.engine._has_events:
        for listen in connection.dispatch.after_cursor_execute:
            listen(connection, cursor, sql, params, None, many)


def _wrapped(sql: str, params, exc: Exception, connection: Connection) -> DBAPIError:
    """The driver's error as SQLAlchemy raises it (IntegrityError for a unique violation …)."""
    dialect = connection.dialect
    return DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error,
                               hide_parameters=connection.engine.hide_parameters,
                               dialect=dialect, ismulti=isinstance(params, list))
