"""One prebuilt statement run straight on the database driver, in autocommit.

For the hottest statements only, on PostgreSQL: a payment's settlement and a wait's read
of its order. SQLAlchemy's Connection costs about a third of a millisecond of CPU per
statement on top of the driver: its compiled-cache lookup and parameter processing,
execution context and events, and on autocommit the isolation level set at checkout and
reset at checkin. Here the statement is compiled once, for the engine's dialect, and
executed on a pooled driver connection.

What SQLAlchemy would do around a failure is kept: the driver's error becomes SQLAlchemy's
(OperationalError and the rest, which the app's handlers answer), connecting included, and
a disconnect invalidates the connection and every pooled one opened before it, and marks
the error when the connection died while pooled (app/database.py).
"""

from __future__ import annotations

import functools
from collections import namedtuple
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from app.database import mark_if_died_while_pooled, note_statement_ran


class DriverStatement:
    """`statement` compiled for `engine`'s dialect; a row comes back as a named tuple.

    Only for types the driver takes and gives as they are: construction refuses a bound
    parameter whose type would need SQLAlchemy's processing. Python-side column defaults are
    not applied either: the statement names every value it writes.
    """

    def __init__(self, engine: Engine, statement: ClauseElement):
        dialect = engine.dialect
        if dialect.paramstyle != "pyformat":
            raise ValueError(f"driver statements take named parameters, not {dialect.paramstyle}")
        compiled = statement.compile(dialect=dialect)
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("driver statements take no parameters rendered at execution")
        for name, bind in compiled.binds.items():
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                raise ValueError(f"parameter {name} needs SQLAlchemy's processing")
        self.engine = engine
        self.sql = compiled.string
        # Literals of the statement (the 1 of version + 1) are parameters too.
        self.fixed = {name: b.value for name, b in compiled.binds.items() if not b.required}
        self._row = None  # a named tuple of the columns the first execution returned

    def one_or_none(self, params: dict[str, Any]):
        """Execute in autocommit: the first row returned, or None."""
        dialect = self.engine.dialect
        params = {**self.fixed, **params}
        try:
            pooled = self.engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:
            # A new connection that failed: the pool hands the driver's error out as it is.
            raise DBAPIError.instance(
                None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect
            ) from exc
        driver = pooled.driver_connection
        cursor = None
        try:
            driver.autocommit = True
            cursor = driver.cursor()
            cursor.execute(self.sql, params)
            found = cursor.fetchone()
            note_statement_ran(pooled.info)
            if self._row is None and cursor.description is not None:
                names = [column.name for column in cursor.description]
                self._row = namedtuple("Row", names, rename=True)
            cursor.close()
            driver.autocommit = False
        except dialect.loaded_dbapi.Error as exc:
            disconnected = dialect.is_disconnect(exc, driver, cursor)
            if not disconnected:
                try:
                    driver.autocommit = False  # back to the pool as it came
                except dialect.loaded_dbapi.Error:
                    disconnected = True
            error = DBAPIError.instance(
                self.sql,
                params,
                exc,
                dialect.loaded_dbapi.Error,
                hide_parameters=self.engine.hide_parameters,
                connection_invalidated=disconnected,
                dialect=dialect,
            )
            if disconnected:
                mark_if_died_while_pooled(error, pooled.info)  # before invalidation drops it
                invalidate_with_older(self.engine, pooled, exc)
            raise error from exc
        except BaseException as exc:
            # Killed or timed out mid-statement: the connection's state is unknown.
            pooled.invalidate(exc)
            raise
        finally:
            pooled.close()
        return None if found is None else self._row(*found)


# SQLAlchemy releases (major, minor) invalidate_with_older was verified on; requirements.txt
# pins one, and tests/unit/test_sqlalchemy_adapter.py fails on any other.
VERIFIED_SQLALCHEMY = {(2, 1)}


def invalidate_with_older(engine: Engine, pooled, exc: BaseException) -> None:
    """Invalidate `pooled` and every pooled connection opened before it.

    As SQLAlchemy does on a disconnect: the server went away, so every connection opened
    before this one is stale too; the pool replaces them at checkout. The project's one use
    of a private SQLAlchemy API, Pool._invalidate, verified on SQLAlchemy 2.1.9;
    tests/unit/test_sqlalchemy_adapter.py fails if it changes.
    """
    engine.pool._invalidate(pooled, exc)


@functools.lru_cache(maxsize=16)  # per engine and statement: a few in a worker, more in tests
def on_driver(engine: Engine, statement: ClauseElement) -> DriverStatement:
    """The DriverStatement of a module's prebuilt `statement`, compiled once per engine."""
    return DriverStatement(engine, statement)
