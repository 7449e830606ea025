"""The database engine's URL and options, decided here for each backend from the Database
settings, the engine events each backend needs once the engine exists, and the retry of a
unit of work whose connection died while pooled."""

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import Flask
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError

from app.config.sections import Database
from app.extensions import db
from app.logs import first_line

log = logging.getLogger(__name__)

# A dead PostgreSQL peer is noticed by TCP keepalives within a minute, not the OS's hours.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def configure_database_url(app: Flask) -> None:
    """Default to the embedded SQLite file instance/orders.db; fit engine options to the kind."""
    database: Database = app.extensions["settings"].database
    uri = database.url
    if not uri:
        os.makedirs(app.instance_path, exist_ok=True)
        uri = f"sqlite:///{os.path.join(app.instance_path, 'orders.db')}"
    app.config["SQLALCHEMY_DATABASE_URI"] = uri
    # SQLALCHEMY_ENGINE_OPTIONS given to create_app (a test's) stand in for the pool settings.
    given = app.config.get("SQLALCHEMY_ENGINE_OPTIONS")
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        # A database error, and so the log of the request it failed, does not list its
        # statement's parameters: an order's are its customer's name, email and phone.
        "hide_parameters": True,
        **engine_options(uri, database, given),
    }


def engine_options(uri: str, database: Database, given: dict | None = None) -> dict:
    if given is None:
        given = {"pool_size": database.pool_size, "max_overflow": database.max_overflow}
    if uri.startswith("sqlite"):
        # Writers wait for SQLite's single write lock instead of failing at once. Pool sizing
        # is a server-database setting: SQLite keeps SQLAlchemy's own pool.
        return {"pool_pre_ping": True, "connect_args": {"timeout": 15}}
    if uri.startswith("postgresql"):
        return {
            **given,
            # Pinged only after being idle a while (_ping_when_idle), not on every checkout:
            # under load that ping was a round trip and 5% of a worker per webhook and wait.
            "pool_pre_ping": False,
            # An unreachable server fails in seconds instead of the OS's TCP timeout.
            "connect_args": {
                "connect_timeout": database.connect_timeout,
                **KEEPALIVES,
                **given.get("connect_args", {}),
            },
        }
    return {"pool_pre_ping": True, **given}


def add_engine_events(app: Flask) -> None:
    """Once the engine is bound: SQLite journals in WAL mode; PostgreSQL connections that
    sat idle are pinged before use, and one found dead by its first statement is told apart
    (see retry_if_died_while_pooled)."""
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_wal)
    elif uri.startswith("postgresql"):
        with app.app_context():
            _ping_when_idle(db.engine, app.extensions["settings"].database.ping_after_idle)
            _mark_deaths_while_pooled(db.engine)


def end_sessions_on_dead_connections(app: Flask) -> None:
    """End each request's session even when its connection died meanwhile.

    Ending a session rolls its transaction back; on a connection the database closed after
    the request's statements ran, that raises, and the request's answer became a 500.
    Registered after flask-sqlalchemy's own teardown, so it runs first (Flask runs them in
    reverse) and leaves it nothing to do."""

    @app.teardown_appcontext
    def _end_session(_exc) -> None:
        try:
            db.session.remove()
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("session ended on a connection the database closed: %s", first_line(exc))
            db.session().invalidate()  # no rollback: the connection is gone
            db.session.remove()


def _ping_when_idle(engine, idle_seconds: float) -> None:
    """Ping a pooled connection at checkout when it sat idle longer than `idle_seconds`;
    one that fails is replaced. A connection in steady use has just proved itself, and a
    failure while in use invalidates the whole pool anyway (SQLAlchemy's disconnect
    handling), so the next checkouts reconnect."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError("idle connection failed its ping") from exc


# In a connection's record.info: whether a statement succeeded on it since its checkout.
_STATEMENT_RAN = "statement_ran"
# Set on the error of a connection that died while pooled.
_DIED_WHILE_POOLED = "died_while_pooled"


def _mark_deaths_while_pooled(engine) -> None:
    """Mark the error of a connection that turns out dead at the first statement of its
    checkout: it died while pooled (the server restarted, or ended its backends), so nothing
    was done on it and nothing can have committed. A statement after the first, and a
    COMMIT, fail after work was done: their errors stay unmarked."""

    @event.listens_for(engine, "checkout")
    def _unused(_dbapi_connection, record, _proxy) -> None:
        record.info[_STATEMENT_RAN] = False

    @event.listens_for(engine, "after_cursor_execute")
    def _used(connection, *_statement) -> None:
        note_statement_ran(connection.info)

    @event.listens_for(engine, "handle_error")
    def _failed(ctx) -> None:
        connection, error = ctx.connection, ctx.sqlalchemy_exception
        if ctx.is_disconnect and connection is not None and error is not None:
            if not connection.invalidated:  # an invalidated one has no pooled connection
                mark_if_died_while_pooled(error, connection.info)


# The statements run straight on the driver (app/driver_statement.py) bypass the engine's
# events: they call these two themselves.


def note_statement_ran(connection_info: dict) -> None:
    connection_info[_STATEMENT_RAN] = True


def mark_if_died_while_pooled(error: DBAPIError, connection_info: dict) -> None:
    """Mark `error`, raised by a connection that is gone, when no statement had succeeded
    on that connection since its checkout."""
    if connection_info.get(_STATEMENT_RAN) is False:
        setattr(error, _DIED_WHILE_POOLED, True)


def died_while_pooled(error: BaseException) -> bool:
    return getattr(error, _DIED_WHILE_POOLED, False)


P = ParamSpec("P")
T = TypeVar("T")


def retry_if_died_while_pooled(unit: Callable[P, T]) -> Callable[P, T]:
    """Run the unit of work `unit` once more when a statement of it failed on a connection
    that died while pooled: that statement was the first of its checkout, so nothing was
    done on that connection. For units that can run again from the start: reads, and writes
    whose earlier checkouts left nothing a second run does not expect.

    The disconnect also invalidated every connection pooled before the dead one
    (SQLAlchemy's disconnect handling, and driver_statement.invalidate_with_older), so the
    second run checks out a fresh one. Its failure is raised."""

    @functools.wraps(unit)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return unit(*args, **kwargs)
        except DBAPIError as error:
            if not died_while_pooled(error):
                raise
            log.warning(
                "database connection died while pooled; %s runs again on a fresh one: %s",
                unit.__qualname__,
                first_line(error),
            )
        db.session.rollback()  # the session's failed transaction, before it is used again
        return unit(*args, **kwargs)

    return run


def _sqlite_wal(dbapi_connection, _record) -> None:
    # WAL lets readers (held waits, the fallback poll) run while a webhook writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
